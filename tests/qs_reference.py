"""The state rule in Python (`metaflow_agent._states`) on raw rows.

The reference the query service's SQL is checked against."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from metaflow_agent._states import heartbeat_liveness, run_state, task_state

OK_TEXT = {"True": True, "true": True, "TRUE": True, "False": False, "false": False, "FALSE": False}


def python_states(dsn: str, now_s: int) -> tuple[dict[tuple[str, int], str], dict[int, str], dict[int, bool]]:
    """Run states, task states and retried_ok, decided in Python."""

    async def fetch():
        conn = await asyncpg.connect(dsn)
        try:
            runs = await conn.fetch("SELECT flow_id, run_number, last_heartbeat_ts FROM runs_v3")
            tasks = await conn.fetch("SELECT flow_id, run_number, step_name, task_id, last_heartbeat_ts FROM tasks_v3 WHERE step_name NOT LIKE '\\_%'")
            marks = await conn.fetch("SELECT task_id, field_name, value, tags::text AS tags, ts_epoch, id FROM metadata_v3 "
                                     "WHERE field_name IN ('attempt', 'attempt_ok', 'attempt-done') ORDER BY ts_epoch, id")
            return runs, tasks, marks
        finally:
            await conn.close()

    runs, tasks, marks = asyncio.run(fetch())
    per_task: dict[int, dict[int, bool | None]] = defaultdict(dict)
    for m in marks:
        attempt = int(m["tags"].split("attempt_id:")[1].split('"')[0]) if "attempt_id:" in m["tags"] else 0
        seen = per_task[m["task_id"]]
        seen.setdefault(attempt, None)
        if m["field_name"] == "attempt_ok":
            seen[attempt] = OK_TEXT.get(m["value"])  # rows in time order: the last one wins
    run_hb = {(r["flow_id"], r["run_number"]): r["last_heartbeat_ts"] for r in runs}

    def live(hb):
        return heartbeat_liveness(None if hb is None else now_s - hb)

    t_state, t_retried = {}, {}
    end_ok: dict[tuple[str, int], bool | None] = {}
    any_failed: dict[tuple[str, int], bool] = defaultdict(bool)
    for t in tasks:
        key = (t["flow_id"], t["run_number"])
        attempts = per_task.get(t["task_id"], {})
        latest_ok = attempts[max(attempts)] if attempts else None
        state = task_state(latest_ok=latest_ok, run_alive=live(run_hb[key]), alive=live(t["last_heartbeat_ts"]))
        t_state[t["task_id"]] = state
        t_retried[t["task_id"]] = state == "completed" and any(ok is not True for a, ok in attempts.items() if a != max(attempts))
        any_failed[key] |= state == "failed"
        if t["step_name"] == "end":
            end_ok[key] = latest_ok
    r_state = {k: run_state(end_ok=end_ok.get(k), any_failed=any_failed[k], alive=live(hb)) for k, hb in run_hb.items()}
    return r_state, t_state, t_retried


def artifact_walk(dsn: str, flow: str, runs: int, match) -> tuple[list[int], list[tuple[int, str, int, bool]], list[tuple[int, str, int, int, str]]]:
    """The library's artifact walk on raw rows: (window run numbers, tasks in walk order as
    (run, step, task, has_artifacts), hits in walk order as (task index, step, task, attempt, name)).

    Runs newest first (ts_epoch, run_number), steps by (ts_epoch, name), tasks by id; a task's
    latest attempt with artifact rows; its names in Python's order, kept where `match(name)`."""

    async def fetch():
        conn = await asyncpg.connect(dsn)
        try:
            window = await conn.fetch("SELECT run_number FROM runs_v3 WHERE flow_id = $1 ORDER BY ts_epoch DESC, run_number DESC LIMIT $2", flow, runs)
            numbers = [r["run_number"] for r in window]
            steps = await conn.fetch("SELECT run_number, step_name, ts_epoch FROM steps_v3 WHERE flow_id = $1 AND run_number = ANY($2::bigint[])",
                                     flow, numbers)
            tasks = await conn.fetch("SELECT run_number, step_name, task_id FROM tasks_v3 WHERE flow_id = $1 AND run_number = ANY($2::bigint[])",
                                     flow, numbers)
            arts = await conn.fetch("SELECT run_number, step_name, task_id, attempt_id, name FROM artifact_v3 "
                                    "WHERE flow_id = $1 AND run_number = ANY($2::bigint[])", flow, numbers)
            return numbers, steps, tasks, arts
        finally:
            await conn.close()

    numbers, steps, tasks, arts = asyncio.run(fetch())
    by_task: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for a in arts:
        by_task[a["task_id"]][a["attempt_id"]].append(a["name"])
    walk: list[tuple[int, str, int, bool]] = []
    hits: list[tuple[int, str, int, int, str]] = []
    for run in numbers:
        run_steps = sorted(((s["ts_epoch"], s["step_name"]) for s in steps if s["run_number"] == run and not s["step_name"].startswith("_")))
        for _, step in run_steps:
            for task in sorted(t["task_id"] for t in tasks if t["run_number"] == run and t["step_name"] == step):
                attempts = by_task.get(task, {})
                walk.append((run, step, task, bool(attempts)))
                if attempts:
                    latest = max(attempts)
                    hits += [(len(walk) - 1, step, task, latest, n) for n in sorted(attempts[latest]) if match(n)]
    return numbers, walk, hits
