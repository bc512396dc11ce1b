"""`python -m benchmarks.query_service`: the query service against the client-side plans, at scale.

    python -m benchmarks.query_service                 # scales 1k, 10k, 100k runs (10k / 100k / 1M tasks)
    python -m benchmarks.query_service --quick         # one small scale: a smoke test (~1 min)
    python -m benchmarks.query_service --scales 1k,10k --reps 5 --out DIR

Per scale: a throwaway PostgreSQL (tests/pg.py), the dump's schema, synthetic rows shaped like the
dump's (`generate`), then three phases: the 2.5.1 schema (without master's five indexes), master's
schema, and master's schema plus this package's optional migrations. In each phase the real
service process answers every question over HTTP (`--reps` times: latency p50 / p95) and the SQL
behind each answer is captured and EXPLAINed (ANALYZE, BUFFERS). On master's schema the
client-side plans (`plans`) run too, timed statement by statement. Results: results.json,
REPORT.md and explain/ under --out (default benchmarks/query_service/results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the PostgreSQL harness and the service process helper

from pg import PgCluster, service_db_dump  # noqa: E402
from qs_server import ServiceProcess  # noqa: E402

from metaflow_agent_service import queries as Q  # noqa: E402
from metaflow_agent_service.app import optional_indexes  # noqa: E402
from metaflow_agent_service.config import Settings  # noqa: E402
from metaflow_agent_service.db import KNOWN_INDEXES, init_connection  # noqa: E402
from metaflow_agent_service.params import Query  # noqa: E402

from . import plans as P  # noqa: E402
from .generate import NOW_S, QUICK, SCALES, Scale, load  # noqa: E402
from .report import write_report  # noqa: E402

__test__ = False  # a benchmark, not a test module
MASTER_ONLY = tuple(n for n, origin in KNOWN_INDEXES.items() if origin == "master")
MIGRATIONS = REPO / "metaflow_agent_service" / "migrations"
API = "/agent/v1"
PG_SETTINGS = {"shared_buffers": "1GB", "work_mem": "32MB", "effective_cache_size": "8GB", "max_parallel_workers_per_gather": "0",
               "jit": "off"}


@dataclass
class Question:
    name: str
    path: str
    params: dict[str, Any]
    handler: Callable[..., Awaitable[Q.Answer]]
    handler_args: tuple[str, ...]
    client: Callable[[P.Timed], Awaitable[dict[str, Any]]] | None = None
    client_label: str = ""


async def _facts(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        wide = await conn.fetchval("SELECT run_number FROM runs_v3 WHERE flow_id = 'WideFlow'")
        wide_tasks = await conn.fetchval("SELECT count(*) FROM tasks_v3 WHERE flow_id = 'WideFlow'")
        mid = await conn.fetchval("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ts_epoch) FROM runs_v3 WHERE flow_id = 'TrainFlow'")
        runs = await conn.fetchval("SELECT count(*) FROM runs_v3")
        sizes = {r["relname"]: r["bytes"] for r in await conn.fetch(
            "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class WHERE relname = ANY($1)",
            ["runs_v3", "tasks_v3", "metadata_v3", "artifact_v3", "steps_v3"])}
        return {"wide_run": wide, "wide_tasks": wide_tasks, "window": (mid, mid + 86_400_000), "runs": runs, "table_bytes": sizes}
    finally:
        await conn.close()


def questions(f: dict[str, Any]) -> list[Question]:
    wide, (since, until) = f["wide_run"], f["window"]
    all_flows = ["TrainFlow", "ShardFlow", "WideFlow"]
    return [
        Question("failed tasks of the wide run", f"/flows/WideFlow/runs/{wide}/tasks", {"state": "failed"},
                 Q.list_tasks, ("WideFlow", str(wide)), lambda t: P.outcome_sets(t, "WideFlow", wide),
                 "run + steps + 3 filtered_tasks per step + metadata of each retried task"),
        Question("summary of the wide run", f"/flows/WideFlow/runs/{wide}/summary", {},
                 Q.run_summary, ("WideFlow", str(wide)), lambda t: P.outcome_sets(t, "WideFlow", wide),
                 "the same outcome sets (no step timings from the service)"),
        Question("newest 50 runs with state and duration", "/flows/TrainFlow/runs", {"_limit": 50},
                 Q.list_runs, ("TrainFlow",), lambda t: P.runs_with_finish(t, "TrainFlow", limit=50),
                 "status-filtered listing + last metadata row per finished run"),
        Question("10 newest failed runs", "/flows/TrainFlow/runs", {"state": "failed", "_limit": 10},
                 Q.list_runs, ("TrainFlow",), lambda t: P.runs_with_finish(t, "TrainFlow", limit=10, statuses=["failed"]),
                 "status:eq=failed listing + last metadata row per run"),
        Question("runs of one day with state and duration", "/flows/TrainFlow/runs", {"since": since, "until": until, "_limit": 500},
                 Q.list_runs, ("TrainFlow",), lambda t: P.runs_with_finish(t, "TrainFlow", limit=500, since_ms=since, until_ms=until),
                 "ts_epoch-filtered listing + last metadata row per finished run"),
        Question("run statistics over every run", "/stats/runs", {"flows": ",".join(all_flows), "since": 0},
                 Q.run_stats, (), lambda t: P.run_stats(t, all_flows, since_ms=0, durations=True),
                 "status-filtered listings (500/page) + last metadata row per completed run"),
        Question("run counts by state over every run", "/stats/runs", {"flows": ",".join(all_flows), "since": 0},
                 Q.run_stats, (), lambda t: P.run_stats(t, all_flows, since_ms=0, durations=False),
                 "status-filtered listings only (counts, no durations)"),
        Question("run statistics per step, last 1,000 runs", "/stats/runs", {"flows": "TrainFlow", "last": 1000, "per_step": "true"},
                 Q.run_stats, (), None),
        Question("flows with their latest run", "/flows", {}, Q.list_flows, (), P.flows_latest,
                 "flows + newest run (status filter) + its last metadata row"),
        Question("artifact 'model' in the newest runs", "/flows/TrainFlow/artifacts", {"name": "model", "_limit": 100},
                 Q.search_artifacts, ("TrainFlow",), lambda t: P.artifact_search(t, "TrainFlow", match=lambda n: n == "model", runs=50, want=100),
                 "newest 50 runs + each run's artifact list (500/page), matched client-side"),
        Question("artifacts by prefix 'acc' in the wide flow", "/flows/WideFlow/artifacts", {"name_prefix": "acc", "_limit": 100},
                 Q.search_artifacts, ("WideFlow",), None),
    ]


class Recording:
    """A connection stand-in that records every statement the service's queries run."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.statements = conn, []  # type: ignore[var-annotated]

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.statements.append((sql, args))
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.statements.append((sql, args))
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.statements.append((sql, args))
        return await self.conn.fetchval(sql, *args)


INDEX_RE = re.compile(r"(?:Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)")
SEQ_RE = re.compile(r"Seq Scan on (\w+)")


async def explain_question(dsn: str, q: Question, settings: Settings) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement the service runs for `q`."""
    conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
    await init_connection(conn)
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            rec = Recording(conn)
            query = Query(((k, str(v)) for k, v in q.params.items()), allowed=tuple(q.params) + ("_now",))
            await q.handler(Q.Ctx(rec, settings, NOW_S), *q.handler_args, query)  # type: ignore[arg-type]
            plans = []
            for sql, args in rec.statements:
                rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
                text = "\n".join(r[0] for r in rows)
                plans.append({"sql": " ".join(sql.split()), "plan": text})
        indexes = sorted({m for p in plans for m in INDEX_RE.findall(p["plan"])})
        seq = sorted({m for p in plans for m in SEQ_RE.findall(p["plan"])})
        return {"statements": plans, "indexes": indexes, "seq_scans": seq}
    finally:
        await conn.close()


async def explain_client(dsn: str, f: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN of the client plans' dominant statements (master's SQL)."""
    from . import master_sql as M

    wide = f["wide_run"]
    conn = await asyncpg.connect(dsn)
    try:
        run = await conn.fetchval("SELECT run_number FROM runs_v3 WHERE flow_id = 'TrainFlow' ORDER BY ts_epoch DESC LIMIT 1")
        out = {}
        for name, (sql, args) in {
            "filtered_tasks attempt_ok=False on the wide step": M.filtered_tasks("WideFlow", wide, "work", "attempt_ok", "False"),
            "runs page with status (500)": M.runs_page("TrainFlow", limit=500, statuses=P.ALL_STATUSES),
            "run metadata ?_limit=1": M.run_metadata_page("TrainFlow", run, limit=1),
        }.items():
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
            text = "\n".join(r[0] for r in rows)
            out[name] = {"plan": text, "indexes": sorted(set(INDEX_RE.findall(text))), "seq_scans": sorted(set(SEQ_RE.findall(text)))}
        return out
    finally:
        await conn.close()


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure_service(server: ServiceProcess, q: Question, reps: int) -> dict[str, Any]:
    params = {**q.params, "_now": NOW_S}
    first = server.get(API + q.path, params, timeout=900)  # warm-up (plans cached, pages in memory)
    if first.status != 200:
        return {"error": f"{first.status}: {first.body}"}
    walls, dbs = [], []
    for _ in range(reps):
        started = time.perf_counter()
        reply = server.get(API + q.path, params, timeout=900)
        walls.append((time.perf_counter() - started) * 1000)
        dbs.append(float(reply.headers.get("server-timing", "db;dur=nan").split("dur=")[1]))
        assert reply.status == 200, reply.body
    body = first.body
    size = len(body.get("data") or body.get("steps") or body.get("flows") or [])
    return {"requests": 1, "reps": reps, "p50_ms": _pct(walls, 50), "p95_ms": _pct(walls, 95), "server_p50_ms": _pct(dbs, 50),
            "rows": size, "runs_examined": body.get("runs_examined"), "bytes": len(json.dumps(body))}


async def measure_client(dsn: str, q: Question, reps: int) -> dict[str, Any]:
    assert q.client is not None
    totals, per_request, requests, routes, answer = [], [], 0, {}, {}
    conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
    try:
        for _ in range(reps):
            t = P.Timed(conn)
            answer = await q.client(t)
            totals.append(sum(t.times) * 1000)
            per_request += [x * 1000 for x in t.times]
            requests, routes = len(t.times), t.routes
    finally:
        await conn.close()
    return {"requests": requests, "reps": reps, "server_total_p50_ms": _pct(totals, 50), "server_total_min_ms": min(totals),
            "request_p50_ms": _pct(per_request, 50), "request_p95_ms": _pct(per_request, 95), "routes": routes, "answer": answer,
            "label": q.client_label}


def apply_migrations(cluster: PgCluster, db: str) -> list[str]:
    applied = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        cluster.psql(db, stdin=path.read_text(), timeout=3600)
        applied.append(path.name)
    cluster.psql(db, "ANALYZE")
    return applied


def run_scale(cluster: PgCluster, scale: Scale, reps: int, client_reps: int, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    db = f"bench_{scale.name}"
    cluster.psql("postgres", f'DROP DATABASE IF EXISTS "{db}"')
    dsn = cluster.create_db(db, dump=service_db_dump())
    started = time.perf_counter()
    counts, master_defs = asyncio.run(load(dsn, scale, skip_indexes=MASTER_ONLY, progress=log))
    result: dict[str, Any] = {"scale": scale.__dict__, "rows": counts, "load_s": round(time.perf_counter() - started, 1), "phases": {}}
    facts = asyncio.run(_facts(dsn))
    result["facts"] = {k: v for k, v in facts.items() if k != "window"} | {"window_ms": list(facts["window"])}
    log(f"  loaded {counts} in {result['load_s']} s; wide run {facts['wide_run']} ({facts['wide_tasks']} tasks)")
    qs = questions(facts)
    settings = Settings(dsn=dsn, statement_timeout_ms=900_000, scan_budget=10_000, stats_max_runs=200_000)
    for phase in ("2.5.1", "master", "master+optional"):
        if phase == "master":
            for name, definition in master_defs.items():
                cluster.psql(db, definition, timeout=3600)
            cluster.psql(db, "ANALYZE")
        if phase == "master+optional":
            result["migrations"] = apply_migrations(cluster, db)
        log(f"  phase {phase}")
        server = ServiceProcess(dsn, ["--test-allow-now", "--statement-timeout-ms", "900000", "--stats-max-runs", "200000",
                                      "--pool-max", "2", "--log-level", "warning"]).start()
        ph: dict[str, Any] = {"service": {}, "explain": {}, "client": {}}
        try:
            for q in qs:
                ph["service"][q.name] = measure_service(server, q, reps)
                log(f"    service  {q.name}: {ph['service'][q.name].get('p50_ms', ph['service'][q.name].get('error'))}")
        finally:
            server.stop()
        for q in qs:
            ex = asyncio.run(explain_question(dsn, q, settings))
            ph["explain"][q.name] = {"indexes": ex["indexes"], "seq_scans": ex["seq_scans"]}
            _write_explain(out / "explain" / scale.name / phase, q.name, ex["statements"])
        if phase == "master":
            for q in qs:
                if q.client is not None:
                    big = "every run" in q.name and scale.runs >= 100_000
                    ph["client"][q.name] = asyncio.run(measure_client(dsn, q, 1 if big else client_reps))
                    log(f"    client   {q.name}: {ph['client'][q.name]['requests']} requests, "
                        f"{ph['client'][q.name]['server_total_p50_ms']:.0f} ms")
            client_ex = asyncio.run(explain_client(dsn, facts))
            ph["client_explain"] = {k: {"indexes": v["indexes"], "seq_scans": v["seq_scans"]} for k, v in client_ex.items()}
            for name, v in client_ex.items():
                _write_explain(out / "explain" / scale.name / "client-master", name, [{"sql": name, "plan": v["plan"]}])
        result["phases"][phase] = ph
    result["optional_indexes"] = list(optional_indexes())
    return result


def _write_explain(folder: Path, name: str, statements: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    text = "\n\n".join(f"-- statement {i + 1}\n-- {s['sql'][:2000]}\n{s['plan']}" for i, s in enumerate(statements))
    (folder / f"{slug}.txt").write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.query_service", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small scale, 3 repetitions: a smoke test")
    ap.add_argument("--scales", default="1k,10k,100k", help="comma-separated: 1k, 10k, 100k")
    ap.add_argument("--reps", type=int, default=7, help="service requests per question (latency p50/p95)")
    ap.add_argument("--client-reps", type=int, default=3, help="repetitions of each client-side plan (1 for the 100k-run plans)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / ("results-quick" if "--quick" in (argv or sys.argv) else "results"))
    ap.add_argument("--work", type=Path, default=None, help="where the PostgreSQL cluster lives (default: the temp folder)")
    args = ap.parse_args(argv)
    scales = [QUICK] if args.quick else [SCALES[s] for s in args.scales.split(",")]
    reps = 3 if args.quick else args.reps
    args.out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    cluster = PgCluster.start(base=args.work, settings=PG_SETTINGS)
    results: dict[str, Any] = {
        "meta": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "load_avg_start": os.getloadavg(), "postgres": cluster.psql("postgres", "SHOW server_version").strip(),
                 "pg_settings": PG_SETTINGS, "clock_s": NOW_S, "reps": reps, "client_reps": args.client_reps,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())},
        "scales": {},
    }
    try:
        for scale in scales:
            log(f"scale {scale.name}: {scale.runs:,} runs, {scale.tasks:,} tasks, wide run {scale.wide:,}")
            results["scales"][scale.name] = run_scale(cluster, scale, reps, args.client_reps, args.out, log)
            cluster.psql("postgres", f'DROP DATABASE IF EXISTS "bench_{scale.name}"')
            (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        results["meta"]["load_avg_end"] = os.getloadavg()
        cluster.stop()
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results, args.out / "REPORT.md")
    log(f"wrote {args.out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
