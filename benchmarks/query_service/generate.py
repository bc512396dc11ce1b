"""Synthetic metadata-service rows shaped exactly like the real dump's, loaded with COPY.

The schema is the dump's own (shared/service-db: the service's 13 migrations): the dump is
restored, its six tables emptied, and their indexes and constraints dropped for the load and
recreated after it, as they were. Rows copy the dump's shapes (see its README): the same columns
and NULLs, `tags` / `system_tags` (system tags in varying order, metadata `system_tags` JSON null),
per attempt the six system-info rows (twice for attempt 0), `attempt`, `origin-run-id`, `ds-type`,
`ds-root`, foreach rows, `attempt_ok`, `attempt-done` (tag `attempt_id:N`), the `_parameters` task's
rows with the two `graph_structure` rows, heartbeats in seconds (a run shorter than 10 s keeps its
creation second), and per finished attempt the artifact rows the dump's flows wrote (none for a
killed attempt).

The mix, per scale (runs R, tasks T, one wide run of W foreach tasks):
- WideFlow: one run, W `work` tasks, 3 failing twice (retry 1) and 2 retried-then-ok; stopped
  before `join` (failed), like the captured ShardFlow 14;
- TrainFlow (start → train → evaluate → end, 5 tasks): 86 % completed, 8 % failed in `train`,
  3 % failed in `evaluate`, 2 % killed in `train` (crashed), the newest 1 % still running;
- ShardFlow (start → work × K → join → end, K sized so the scale holds T tasks): 88 % completed
  (1 in 20 with a retried-then-ok shard), 8 % failed (a shard fails twice, no join/end), 4 % killed.
Runs are spread over the 60 days before the clock `NOW_S`, newest last.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from typing import Any, Iterator

import asyncpg

NOW_S = 1796061093  # the same clock as the dump: the service is queried with `_now`
DAY_MS = 86_400_000
TABLES = ("flows_v3", "runs_v3", "steps_v3", "tasks_v3", "metadata_v3", "artifact_v3")
COLUMNS = {
    "flows_v3": ("flow_id", "user_name", "ts_epoch", "tags", "system_tags"),
    "runs_v3": ("flow_id", "run_number", "user_name", "ts_epoch", "tags", "system_tags", "run_id", "last_heartbeat_ts"),
    "steps_v3": ("flow_id", "run_number", "step_name", "user_name", "ts_epoch", "tags", "system_tags", "run_id"),
    "tasks_v3": ("flow_id", "run_number", "step_name", "task_id", "user_name", "ts_epoch", "tags", "system_tags", "run_id",
                 "task_name", "last_heartbeat_ts"),
    "metadata_v3": ("flow_id", "run_number", "step_name", "task_id", "id", "field_name", "value", "type", "user_name", "ts_epoch",
                    "tags", "system_tags", "run_id", "task_name"),
    "artifact_v3": ("flow_id", "run_number", "step_name", "task_id", "name", "location", "ds_type", "sha", "type", "content_type",
                    "user_name", "attempt_id", "ts_epoch", "tags", "system_tags", "run_id", "task_name"),
}
SEQUENCES = {"runs_v3_run_number_seq": "runs_v3", "tasks_v3_task_id_seq": "tasks_v3", "metadata_v3_id_seq": "metadata_v3"}

# Artifact names per (flow shape, step), from the dump (attempts that ended; a failed attempt
# lacks the step's own outputs).
_BASE = ["_configs_processed", "_current_step", "_exception", "_foreach_num_splits", "_foreach_stack", "_foreach_var",
         "_graph_info", "_iteration_stack", "_success", "_task_ok", "_transition"]
_PARAMS = ["_configs_processed", "_foreach_stack", "_graph_info", "_success", "_task_ok", "_transition"]
TRAIN_P = ["epochs", "fail_in", "lr", "model_mb", "name", "seed"]
SHARD_P = ["bad", "flaky", "n", "name"]
ARTIFACTS: dict[tuple[str, str, bool], list[str]] = {
    ("train", "_parameters", True): _PARAMS + TRAIN_P,
    ("train", "start", True): _BASE + TRAIN_P + ["rows"],
    ("train", "train", True): _BASE + TRAIN_P + ["rows", "loss", "model"],
    ("train", "train", False): _BASE + TRAIN_P + ["rows"],
    ("train", "evaluate", True): _BASE + TRAIN_P + ["rows", "loss", "model", "accuracy"],
    ("train", "evaluate", False): _BASE + TRAIN_P + ["rows", "loss", "model", "accuracy"],
    ("train", "end", True): _BASE + TRAIN_P + ["rows", "loss", "model", "accuracy"],
    ("shard", "_parameters", True): _PARAMS + SHARD_P,
    ("shard", "start", True): _BASE + SHARD_P + ["_foreach_values", "shards"],
    ("shard", "work", True): _BASE + SHARD_P + ["_foreach_values", "shards", "shard", "rows"],
    ("shard", "work", False): _BASE + SHARD_P + ["_foreach_values", "shards", "shard"],
    ("shard", "join", True): _BASE + SHARD_P + ["total_rows"],
    ("shard", "end", True): _BASE + SHARD_P + ["total_rows"],
}
SYSINFO = ("runtime", "python_version", "user", "metaflow_version", "script-name", "git-info")
GIT_INFO = json.dumps({"branch_name": "main", "commit_sha": "0" * 40, "has_uncommitted_changes": True}, separators=(", ", ": "))
USERS = ("capture", "alice", "bob", "carol", "dave", "erin", "frank", "grace")
DS_ROOT = "/data/metaflow/.metaflow"
LOCATION = ":root:/data/metaflow/.metaflow"


@dataclass(frozen=True)
class Scale:
    name: str
    runs: int
    tasks: int
    wide: int  # width of the one WideFlow run


SCALES = {
    "1k": Scale("1k", 1_000, 10_000, 1_000),
    "10k": Scale("10k", 10_000, 100_000, 10_000),
    "100k": Scale("100k", 100_000, 1_000_000, 100_000),
}
QUICK = Scale("quick", 300, 3_000, 500)


def _system_tags(user: str, i: int) -> str:
    tags = [f"user:{user}", "runtime:dev", "python_version:3.11.7", "metaflow_version:2.19.39"]
    perm = list(itertools.permutations(tags))[i % 24]  # the service stores them in varying order
    return json.dumps(list(perm))


_SYSTEM_TAGS = {u: [_system_tags(u, i) for i in range(24)] for u in USERS}
_TAG_JSON = {(): "[]", ("team:a",): '["team:a"]', ("team:b",): '["team:b"]'}
_ATTEMPT_TAG = {n: json.dumps([f"attempt_id:{n}"]) for n in range(8)}


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


@dataclass
class TaskPlan:
    step: str
    attempts: list[bool | None]  # per attempt: attempt_ok value, None = killed (no outcome)
    start_ms: int
    dur_ms: int
    foreach: int | None = None
    heartbeat_s: int | None = None  # override (live tasks)


@dataclass
class RunPlan:
    flow: str
    shape: str  # "train" | "shard"
    created_ms: int
    user: str
    tags: tuple[str, ...]
    tasks: list[TaskPlan]
    heartbeat_s: int


class Ids:
    def __init__(self) -> None:
        self.run = 0
        self.task = 0
        self.meta = 0


def _train_run(rng: random.Random, created: int, user: str, team: str, outcome: str) -> RunPlan:
    t = created + 50
    tasks = [TaskPlan("_parameters", [True], t, 60)]
    steps = ["start", "train", "evaluate", "end"]
    t += 300
    for step in steps:
        dur = rng.randint(250, 1600)
        fails = (outcome == "fail_train" and step == "train") or (outcome == "fail_evaluate" and step == "evaluate")
        killed = outcome == "crash" and step == "train"
        live = outcome == "running" and step == "evaluate"
        ok: bool | None = None if (killed or live) else not fails
        tasks.append(TaskPlan(step, [ok], t, dur, heartbeat_s=(NOW_S - 8) if live else None))
        if ok is not True:
            break
        t += dur + rng.randint(300, 600)
    end = tasks[-1].start_ms + tasks[-1].dur_ms
    heartbeat = NOW_S - 5 if outcome == "running" else (created // 1000 if end - created < 10_000 else (end - rng.randint(0, 9000)) // 1000)
    return RunPlan("TrainFlow", "train", created, user, (team,), tasks, heartbeat)


def _shard_run(rng: random.Random, flow: str, created: int, user: str, width: int, outcome: str, *,
               failing: int = 1, retried: int = 0) -> RunPlan:
    t = created + 50
    tasks = [TaskPlan("_parameters", [True], t, 60), TaskPlan("start", [True], t + 400, rng.randint(30, 300))]
    t0 = t + 1500
    per_wave = 8
    fail_at = set(range(width - failing, width)) if outcome == "fail" else set()
    kill_at = {width - 1} if outcome == "crash" else set()
    retry_at = set(rng.sample(range(max(width - failing - 1, 1)), min(retried, max(width - failing - 1, 1))))
    last = t0
    for i in range(width):
        start = t0 + (i // per_wave) * 700 + rng.randint(0, 200)
        dur = rng.randint(60, 400)
        if i in fail_at:
            attempts: list[bool | None] = [False, False]
        elif i in kill_at:
            attempts = [None]
        elif i in retry_at:
            attempts = [False, True]
        else:
            attempts = [True]
        tasks.append(TaskPlan("work", attempts, start, dur * len(attempts) + 1500 * (len(attempts) - 1), foreach=i))
        last = max(last, start + tasks[-1].dur_ms)
    if outcome == "ok":
        tasks.append(TaskPlan("join", [True], last + 500, rng.randint(60, 200)))
        tasks.append(TaskPlan("end", [True], last + 1200, rng.randint(20, 80)))
        last += 1400
    heartbeat = (last - rng.randint(0, 9000)) // 1000 if last - created >= 10_000 else created // 1000
    return RunPlan(flow, "shard", created, user, (), tasks, heartbeat)


def plan_runs(scale: Scale, seed: int = 7) -> Iterator[RunPlan]:
    """Every run of the scale, in creation order (the newest last)."""
    rng = random.Random(seed)
    others = scale.runs - 1
    avg = (scale.tasks - scale.wide - 4) / max(others, 1)
    # 75 % TrainFlow runs of 5 tasks; ShardFlow width K makes the average come out right.
    width = max(2, round((avg - 0.75 * 5) / 0.25 - 4))
    span = 60 * DAY_MS
    start = NOW_S * 1000 - span
    wide_at = others // 2
    for i in range(scale.runs):
        created = start + (span - 600_000) * i // max(scale.runs - 1, 1)
        user = USERS[i % len(USERS)]
        if i == wide_at:
            yield _shard_run(rng, "WideFlow", created, user, scale.wide, "fail", failing=3, retried=2)
            continue
        if i % 4 == 3:
            r = rng.random()
            outcome = "ok" if r < 0.88 else "fail" if r < 0.96 else "crash"
            plan = _shard_run(rng, "ShardFlow", created, user, width, outcome, retried=1 if outcome == "ok" and rng.random() < 0.05 else 0)
        else:
            newest = i >= scale.runs - max(scale.runs // 100, 1)
            r = rng.random()
            outcome = ("running" if newest and r < 0.5 else "ok" if r < 0.86 else "fail_train" if r < 0.94
                       else "fail_evaluate" if r < 0.97 else "crash" if r < 0.99 else "ok")
            if newest and outcome == "running":
                created = NOW_S * 1000 - rng.randint(20_000, 50_000)
            plan = _train_run(rng, created, user, "team:a" if i % 2 else "team:b", outcome)
        yield plan


def rows_of_run(run: RunPlan, ids: Ids, *, chunk: int = 2000) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """The rows the service writes for one run, per table, in chunks.

    About `chunk` tasks a chunk, so a 100,000-task run is not held whole."""
    ids.run += 1
    number = ids.run
    flow, user = run.flow, run.user
    tags = _TAG_JSON[run.tags]
    st = _SYSTEM_TAGS[user]
    out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
    out["runs_v3"].append((flow, number, user, run.created_ms, tags, st[number % 24], None, run.heartbeat_s))
    step_seen: dict[str, int] = {}
    script = "trainflow.py" if run.shape == "train" else "shardflow.py"
    sysvals = {"runtime": "dev", "python_version": "3.11.7", "user": user, "metaflow_version": "2.19.39",
               "script-name": script, "git-info": GIT_INFO}
    meta, arts = out["metadata_v3"], out["artifact_v3"]
    for n_task, tp in enumerate(run.tasks, 1):
        if n_task % chunk == 0:
            yield out
            out = {t: [] for t in TABLES}
            meta, arts = out["metadata_v3"], out["artifact_v3"]
        if tp.step not in step_seen:
            step_seen[tp.step] = tp.start_ms - 40
            out["steps_v3"].append((flow, number, tp.step, user, tp.start_ms - 40, tags, st[(number + len(step_seen)) % 24], str(number)))
        ids.task += 1
        task = ids.task
        reg = tp.start_ms - 20
        live = tp.heartbeat_s is not None
        last_beat = tp.heartbeat_s if live else (reg // 1000 if tp.dur_ms < 10_000 else (reg + tp.dur_ms - 5000) // 1000)
        out["tasks_v3"].append((flow, number, tp.step, task, user, reg, tags, st[task % 24], None, None, last_beat))

        def m(field: str, value: str, kind: str, ts: int, attempt: int | None) -> None:
            ids.meta += 1
            meta.append((flow, number, tp.step, task, ids.meta, field, value, kind, user, ts,
                         _ATTEMPT_TAG[attempt] if attempt is not None else "[]", "null", None, None))

        if tp.step == "_parameters":
            for k, f in enumerate(SYSINFO):
                m(f, sysvals[f], f, reg + k, 0)
            m("attempt-done", "0", "attempt-done", tp.start_ms + tp.dur_ms, 0)
            m("start_step", "start", "graph_structure", tp.start_ms + tp.dur_ms + 20, None)
            m("end_step", "end", "graph_structure", tp.start_ms + tp.dur_ms + 21, None)
            for k, name in enumerate(ARTIFACTS[(run.shape, "_parameters", True)]):
                arts.append((flow, number, tp.step, task, name, LOCATION, "local", _sha(flow, name, number % 97), "metaflow.artifact",
                             "pickle-v4", user, 0, tp.start_ms + tp.dur_ms + 30 + k, tags, st[task % 24], None, None))
            continue
        per = max(tp.dur_ms // len(tp.attempts), 40)
        for a, ok in enumerate(tp.attempts):
            t = tp.start_ms + a * (per + 1500 if len(tp.attempts) > 1 else per)
            for rep in range(2 if a == 0 else 1):  # registration, then the task process (a retry: once)
                for k, f in enumerate(SYSINFO):
                    m(f, sysvals[f], f, (reg if rep == 0 and a == 0 else t - 30) + k, a)
            m("attempt", str(a), "attempt", t, a)
            m("origin-run-id", "None", "origin-run-id", t + 1, a)
            m("ds-type", "local", "ds-type", t + 2, a)
            m("ds-root", DS_ROOT, "ds-root", t + 3, a)
            if tp.foreach is not None:
                m("foreach-stack", f"{{shards={tp.foreach}}}", "foreach-stack", t + 4, a)
                m("foreach-execution-path", f"{tp.step}:{tp.foreach}", "foreach-execution-path", t + 5, a)
            if ok is None:
                continue  # killed: no outcome, no attempt-done, no artifacts
            end = t + per
            m("attempt_ok", "True" if ok else "False", "internal_attempt_status", end, a)
            m("attempt-done", str(a), "attempt-done", end + 20, a)
            for k, name in enumerate(ARTIFACTS[(run.shape, tp.step, ok)]):
                arts.append((flow, number, tp.step, task, name, LOCATION, "local", _sha(flow, tp.step, name, task, a), "metaflow.artifact",
                             "pickle-v4", user, a, end + 40 + k, tags, st[task % 24], None, None))
    yield out


async def _schema_objects(conn: asyncpg.Connection) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The six tables' constraints and indexes, with their definitions."""
    cons = await conn.fetch(
        "SELECT c.conrelid::regclass::text AS tbl, c.conname, pg_get_constraintdef(c.oid) AS def, c.contype "
        "FROM pg_constraint c WHERE c.conrelid::regclass::text = ANY($1) ORDER BY c.contype = 'f', c.conname", list(TABLES))
    idx = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY($1) "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)", list(TABLES))
    return [(r["tbl"], r["conname"], r["def"]) for r in cons], [(r["indexname"], r["indexdef"]) for r in idx]


async def load(dsn: str, scale: Scale, *, skip_indexes: tuple[str, ...] = (), progress: Any = print) -> tuple[dict[str, int], dict[str, str]]:
    """Empty a restored dump's six tables and load the scale's rows.

    Indexes named in `skip_indexes` are left out (e.g. master's five, for a 2.5.1 schema).
    Returns (row counts, the CREATE INDEX statements of the skipped indexes)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'; SET synchronous_commit = off")
        cons, idx = await _schema_objects(conn)
        for tbl, name, _ in reversed(cons):  # foreign keys first
            await conn.execute(f'ALTER TABLE {tbl} DROP CONSTRAINT "{name}"')
        for name, _ in idx:
            await conn.execute(f'DROP INDEX "{name}"')
        await conn.execute("TRUNCATE " + ", ".join(TABLES))
        ids = Ids()
        flows: dict[str, int] = {}
        counts = {t: 0 for t in TABLES}
        batch: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}

        async def flush() -> None:
            for table, rows in batch.items():
                if rows:
                    await conn.copy_records_to_table(table, records=rows, columns=COLUMNS[table])
                    counts[table] += len(rows)
                    rows.clear()

        for n, run in enumerate(plan_runs(scale), 1):
            flows.setdefault(run.flow, run.created_ms - 10)
            for chunk in rows_of_run(run, ids):
                for table, rows in chunk.items():
                    batch[table] += rows
                if len(batch["metadata_v3"]) >= 200_000:
                    await flush()
            if n % 10_000 == 0:
                progress(f"  {n:,} runs, {ids.task:,} tasks, {ids.meta:,} metadata rows")
        batch["flows_v3"] = [(f, None, ts, "null", "null") for f, ts in flows.items()]
        await flush()
        progress("  rebuilding constraints and indexes")
        for tbl, name, definition in cons:
            await conn.execute(f'ALTER TABLE {tbl} ADD CONSTRAINT "{name}" {definition}')
        for name, definition in idx:
            if name not in skip_indexes:
                await conn.execute(definition)
        for seq, table in SEQUENCES.items():
            col = {"runs_v3": "run_number", "tasks_v3": "task_id", "metadata_v3": "id"}[table]
            await conn.execute(f"SELECT setval('{seq}', (SELECT max({col}) FROM {table}))")
        await conn.execute("ANALYZE")
        return counts, {name: definition for name, definition in idx if name in skip_indexes}
    finally:
        await conn.close()
