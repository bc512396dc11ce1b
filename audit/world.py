"""The audit's data set, on the metadata service double and (optionally) in PostgreSQL for the query service.

The runs are written with Metaflow's own metadata provider and `TaskDataStore`
(benchmarks/synth.py) to the service double (tests/service_double) and a local datastore.
For the query service (`metaflow_agent_service`), the double's six tables are then copied
row for row into a PostgreSQL database with the real service's schema (the dump in
shared/service-db, emptied), and the real service process is started on it: both services
answer from the same rows, so every function can be traced with and without it on the
same data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent

# dimension -> sizes; kept small: the whole trace runs in seconds (the consistency test re-runs it)
SIZES: dict[str, list[int]] = {
    "runs": [20, 80],
    "tasks": [5, 20, 80],
    "steps": [2, 4, 8],
    "attempts": [1, 2, 3],
    "log_lines": [100, 10_000],
    "artifact_bytes": [100_000, 4_000_000],
    "run_seconds": [5, 120],  # how long each of a flow's 20 runs lasted (its heartbeat dates its end past 30 s)
    "flows": [11, 17],  # the data set's 11 flows, then 6 one-run flows more (added after the first size is traced)
    "once": [1],  # a call that depends on nothing in the data set
}


@dataclass
class QueryServiceProcess:
    """The real `metaflow-agent-service` on a PostgreSQL copy of the double's rows."""

    cluster: Any  # tests.pg.PgCluster
    dsn: str
    server: Any  # tests.qs_server.ServiceProcess

    @property
    def url(self) -> str:
        return self.server.url + "/agent/v1"

    def requests_seen(self) -> list[tuple[str, int]]:
        """(path with query, status) of every request the service logged (its access log)."""
        return [(m.group(1), int(m.group(2))) for m in re.finditer(r'"GET (\S+) HTTP/[\d.]+" (\d{3})', self.server.log_text())]

    def sync(self, store: Any) -> dict[str, int]:
        """Replace the database's rows with the double's (same tables, same columns)."""
        return copy_store(store, self.dsn)


@dataclass
class World:
    double: Any  # tests.service_double.ServiceDouble
    data: dict[str, Any]
    root: str
    ds_root: str
    qs: QueryServiceProcess | None = None
    notes: list[str] = field(default_factory=list)

    def grow_flows(self) -> None:
        """Add the one-run flows of the flows dimension's second size; the query service's copy follows."""
        n = SIZES["flows"][1] - len(self.data["flows"]["names"])
        add_tiny_flows(self.double.url, self.ds_root, self.data["flows"]["names"], n, lambda c: setattr(self.double.store, "clock", c))
        if self.qs is not None:
            self.qs.sync(self.double.store)


def build(url: str, ds_root: str, set_clock: Callable[[Callable[[], float]], None]) -> dict[str, Any]:
    """Register the audit's runs; {dimension: {size: case arguments}}."""
    from benchmarks.synth import (RunWriter, SynthClock, artifact_run, chain_run, clock_patched, log_run, run_outcome, run_tags,
                                  simple_run, wide_run)

    spacing = 3600.0
    clock = SynthClock(time.time() - 30 * 86400)
    set_clock(clock.time)
    out: dict[str, Any] = {}
    flows: list[str] = []
    try:
        with clock_patched(clock):
            for n in SIZES["runs"]:
                flow = f"AuditRuns{n}Flow"
                clock.now = time.time() - (n + 2) * spacing
                starts, runs = [], []
                with RunWriter(flow, ds_root, service_url=url) as w:
                    for i in range(n):
                        starts.append(int(clock.now * 1000))
                        runs.append((simple_run(w, run_outcome(i), run_tags(i)), run_outcome(i)))
                        clock.advance(spacing)
                k = n // 2
                ok = [r for r, outcome in runs if outcome == "ok"]
                out.setdefault("runs", {})[str(n)] = {"flow": flow, "since_ms": starts[k], "until_ms": starts[k + 5] - 1, "name": "model",
                                                      "value": "score", "run_a": f"{flow}/{ok[-2]}", "run_b": f"{flow}/{ok[-1]}"}
                flows.append(flow)
            for seconds in SIZES["run_seconds"]:
                flow = f"AuditLength{seconds}Flow"
                clock.now = time.time() - 40 * spacing
                with RunWriter(flow, ds_root, service_url=url) as w:
                    for i in range(20):
                        timed_run(w, url, clock, run_outcome(i), run_tags(i), seconds)
                        clock.advance(spacing)
                out.setdefault("run_seconds", {})[str(seconds)] = {"flow": flow}
                flows.append(flow)
            with RunWriter("AuditWideFlow", ds_root, service_url=url) as w:
                for width in SIZES["tasks"]:
                    run = wide_run(w, width, failed={width - 1}, retried_ok={1})
                    out.setdefault("tasks", {})[str(width)] = {"run": f"AuditWideFlow/{run}", "flow": f"AuditTasks{width}Flow", "name": "value"}
                for attempts in SIZES["attempts"]:
                    run = wide_run(w, 5, failed={4}, retried_ok=set(), fail_attempts=attempts)
                    out.setdefault("attempts", {})[str(attempts)] = {"run": f"AuditWideFlow/{run}"}
            flows.append("AuditWideFlow")
            for width in SIZES["tasks"]:  # one flow per width, for the search across its runs and the comparison of two runs
                with RunWriter(f"AuditTasks{width}Flow", ds_root, service_url=url) as w:
                    run = wide_run(w, width, failed={width - 1}, retried_ok={1})
                out["tasks"][str(width)]["run_b"] = f"AuditTasks{width}Flow/{run}"
                flows.append(f"AuditTasks{width}Flow")
            with RunWriter("AuditChainFlow", ds_root, service_url=url) as w:
                for steps in SIZES["steps"]:
                    out.setdefault("steps", {})[str(steps)] = {"run": f"AuditChainFlow/{chain_run(w, steps, tasks_per_step=2)}"}
            flows.append("AuditChainFlow")
            with RunWriter("AuditLogFlow", ds_root, service_url=url) as w:
                for lines in SIZES["log_lines"]:
                    run = log_run(w, lines)
                    out.setdefault("log_lines", {})[str(lines)] = {"task": f"AuditLogFlow/{run}/start/{_first_task(url, 'AuditLogFlow', run, 'start')}"}
            flows.append("AuditLogFlow")
            with RunWriter("AuditArtifactFlow", ds_root, service_url=url) as w:
                for nbytes in SIZES["artifact_bytes"]:
                    run = artifact_run(w, nbytes)
                    out.setdefault("artifact_bytes", {})[str(nbytes)] = {
                        "task": f"AuditArtifactFlow/{run}/start/{_first_task(url, 'AuditArtifactFlow', run, 'start')}", "name": "config"}
            flows.append("AuditArtifactFlow")
    finally:
        set_clock(time.time)
    assert len(flows) == SIZES["flows"][0], flows
    out["flows"] = {"names": flows, **{str(n): {} for n in SIZES["flows"]}}
    out["once"] = {"1": {}}
    return out


def timed_run(w: Any, url: str, clock: Any, outcome: str, tags: list[str], seconds: float) -> str:
    """A start → end run lasting `seconds`: start, then the end task `seconds` later (none when killed), and the
    runtime's run heartbeat at that moment (the double, like the service, refuses one within 10 s of the last)."""
    import requests

    from benchmarks.synth import Attempt, TaskSpec

    run = w.new_run(tags=tags)
    w.task(run, TaskSpec("start", [Attempt(True)], {"greeting": "hello"}))
    clock.advance(seconds)
    if outcome != "killed":
        w.task(run, TaskSpec("end", [Attempt(outcome == "ok")], {"score": 0.5} if outcome == "ok" else {}))
    requests.post(f"{url}/flows/{w.flow}/runs/{run}/heartbeat", json={}, timeout=10)
    return run


def add_tiny_flows(url: str, ds_root: str, names: list[str], n: int, set_clock: Callable[[Callable[[], float]], None]) -> None:
    """`n` more flows of one successful start → end run each."""
    from benchmarks.synth import RunWriter, SynthClock, clock_patched, simple_run

    clock = SynthClock(time.time() - 5 * 86400)
    set_clock(clock.time)
    try:
        with clock_patched(clock):
            for i in range(n):
                flow = f"AuditExtra{i}Flow"
                with RunWriter(flow, ds_root, service_url=url) as w:
                    simple_run(w, "ok", [])
                names.append(flow)
                clock.advance(3600)
    finally:
        set_clock(time.time)


def _first_task(url: str, flow: str, run: str, step: str) -> str:
    import requests

    rows = requests.get(f"{url}/flows/{flow}/runs/{run}/steps/{step}/tasks", timeout=10).json()
    return str(rows[0]["task_id"])


# --- the double's rows into PostgreSQL ------------------------------------------------------
def store_rows(store: Any) -> dict[str, list[tuple[Any, ...]]]:
    """The double's six tables as rows of the service's tables (jsonb columns as JSON text)."""
    from benchmarks.query_service.generate import COLUMNS

    def js(value: Any) -> str:
        return json.dumps(value)

    jsonb = {"tags", "system_tags"}
    tables = {
        "flows_v3": list(store.flows.values()),
        "runs_v3": list(store.runs.values()),
        "steps_v3": list(store.steps.values()),
        "tasks_v3": list(store.tasks.values()),
        "metadata_v3": [m for rows in store.metadata.values() for m in rows],
        "artifact_v3": [a for rows in store.artifacts.values() for a in rows.values()],
    }
    with store.lock:
        return {t: [tuple(js(r.get(c)) if c in jsonb else r.get(c) for c in COLUMNS[t]) for r in rows] for t, rows in tables.items()}


def copy_store(store: Any, dsn: str) -> dict[str, int]:
    """Empty the six tables and COPY the double's rows in; returns rows per table."""
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    from benchmarks.query_service.generate import COLUMNS, TABLES

    rows = store_rows(store)

    async def load() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute("TRUNCATE " + ", ".join(TABLES))
                for table in TABLES:
                    if rows[table]:
                        await conn.copy_records_to_table(table, records=rows[table], columns=COLUMNS[table])
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(load())
    return {t: len(r) for t, r in rows.items()}


@contextmanager
def query_service(store: Any) -> Iterator[QueryServiceProcess]:
    """PostgreSQL (tests/pg.py) with the service's schema and the double's rows, and the query service on it."""
    sys.path.insert(0, str(REPO / "tests"))
    from pg import PgCluster, service_db_dump  # type: ignore[import-not-found]  # tests/ is put on the path above
    from qs_server import ServiceProcess  # type: ignore[import-not-found]

    with ExitStack() as stack:
        cluster = PgCluster.start()
        stack.callback(cluster.stop)
        dsn = cluster.create_db("metaflow", dump=service_db_dump())
        copy_store(store, dsn)
        server = ServiceProcess(dsn, ["--log-level", "debug"]).start()
        stack.callback(server.stop)
        yield QueryServiceProcess(cluster, dsn, server)


# --- this process pointed at the data set ---------------------------------------------------
ENV_KEYS = ("METAFLOW_DEFAULT_METADATA", "METAFLOW_SERVICE_URL", "METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_DEFAULT_DATASTORE",
            "METAFLOW_AGENT_QUERY_SERVICE_URL")


@contextmanager
def service_world(tmp: str | None = None, *, with_query_service: bool = False,
                  progress: Callable[[str], None] = lambda msg: None) -> Iterator[World]:
    """A double on 127.0.0.1, the audit's runs registered on it (and copied into PostgreSQL for the
    query service when asked), and this process configured to read them: metaflow_agent through
    METAFLOW_* (read at call time), the Client through metaflow.metadata()."""
    sys.path.insert(0, str(REPO))
    import metaflow

    from tests.service_double import ServiceDouble

    root = Path(tmp or tempfile.mkdtemp(prefix="mfagent-audit-"))
    ds_root = str(root / ".metaflow")
    saved_env = {k: os.environ.get(k) for k in ENV_KEYS}
    with ExitStack() as stack:
        if tmp is None:  # ours: ≈40 MB of runs, removed after
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        double = stack.enter_context(ServiceDouble(mode="master"))
        started = time.perf_counter()
        data = build(double.url, ds_root, lambda c: setattr(double.store, "clock", c))
        progress(f"data set registered on the double in {time.perf_counter() - started:.0f} s")
        world = World(double, data, str(root), ds_root)
        if with_query_service:
            started = time.perf_counter()
            world.qs = stack.enter_context(query_service(double.store))
            progress(f"PostgreSQL loaded with the double's rows and the query service started in {time.perf_counter() - started:.0f} s")
        os.environ.update(METAFLOW_DEFAULT_METADATA="service", METAFLOW_SERVICE_URL=double.url,
                          METAFLOW_DATASTORE_SYSROOT_LOCAL=str(root), METAFLOW_DEFAULT_DATASTORE="local",
                          METAFLOW_AGENT_QUERY_SERVICE_URL="off")
        from metaflow.client import core

        previous = (core.current_metadata, getattr(core.current_metadata, "_INFO", None))
        metaflow.metadata(f"service@{double.url}")
        metaflow.namespace(None)
        try:
            yield world
        finally:
            from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

            ServiceMetadataProvider._INFO = None  # type: ignore[attr-defined]  # a metaclass property's store
            core.current_metadata = previous[0]
            if previous[0]:
                previous[0]._INFO = previous[1]  # type: ignore[attr-defined]
            metaflow.default_namespace()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            from metaflow_agent import reset_backends

            reset_backends()
