"""The SQL the metadata service (Netflix/metaflow-service master 91e44f0) runs for each route.

Re-typed from its `services/data/postgres_async_db.py` (read for this purpose; no code copied):
what `find_records` / `get_records_paginated` / `get_filtered_task_pathspecs` /
`get_artifacts_in_runs_paginated` build for the routes the client-side plans call, with psycopg's
`%s` as asyncpg's `$n`. The clock master reads with `now()` is the benchmark's fixed clock, so
both sides judge the same rows the same way. Each function returns (sql, args).
"""

from __future__ import annotations

from typing import Any

from .generate import NOW_S

Statement = tuple[str, list[Any]]
CUTOFF_S = 360  # RUN_INACTIVE_CUTOFF_TIME: master's "running" window

_RUN_KEYS = ("flow_id", "run_number", "run_id", "user_name", "ts_epoch", "last_heartbeat_ts", "tags", "system_tags")
_RUN_SELECT = ",".join(f"runs_v3.{k} AS {k}" for k in _RUN_KEYS) + (
    ", (CASE WHEN system_tags ? ('user:' || user_name) THEN user_name ELSE NULL END) AS user")
_STATUS_JOINS = """
    LEFT JOIN LATERAL (
        SELECT ts_epoch, (CASE WHEN pg_typeof(value)='jsonb'::regtype THEN value::jsonb->>0 ELSE value::text END)::boolean as value
        FROM metadata_v3 as attempt_ok
        WHERE runs_v3.flow_id = attempt_ok.flow_id AND runs_v3.run_number = attempt_ok.run_number
          AND attempt_ok.step_name = 'end' AND attempt_ok.field_name = 'attempt_ok'
        ORDER BY ts_epoch DESC LIMIT 1
    ) as end_attempt_ok ON true
    LEFT JOIN LATERAL (
        SELECT ts_epoch FROM metadata_v3 as attempt
        WHERE runs_v3.flow_id = attempt.flow_id AND runs_v3.run_number = attempt.run_number
          AND attempt.step_name = 'end' AND attempt.field_name = 'attempt' AND end_attempt_ok.value IS FALSE
        ORDER BY ts_epoch DESC LIMIT 1
    ) as end_attempt ON true"""
_STATUS_COL = f"""
    (CASE WHEN end_attempt IS NOT NULL AND end_attempt_ok.ts_epoch < end_attempt.ts_epoch THEN 'running'
          WHEN end_attempt_ok IS NOT NULL AND end_attempt_ok.value IS TRUE THEN 'completed'
          WHEN end_attempt_ok IS NOT NULL AND end_attempt_ok.value IS FALSE THEN 'failed'
          WHEN runs_v3.last_heartbeat_ts IS NOT NULL AND @({NOW_S} - runs_v3.last_heartbeat_ts) <= {CUTOFF_S} THEN 'running'
          ELSE 'failed' END) AS status"""


def runs_page(flow: str, *, limit: int, statuses: list[str] | None = None, since_ms: int | None = None,
              until_ms: int | None = None, cursor: tuple[int, int] | None = None) -> Statement:
    """`GET /flows/{flow}/runs?status:eq=..&ts_epoch:ge=..&_limit=..&_cursor=..` (filtered, paginated)."""
    args: list[Any] = [flow]
    conds = ['"flow_id" = $1']
    if since_ms is not None:
        args.append(since_ms)
        conds.append(f'("ts_epoch" >= ${len(args)})')
    if until_ms is not None:
        args.append(until_ms)
        conds.append(f'("ts_epoch" <= ${len(args)})')
    if statuses:
        ors = []
        for s in statuses:
            args.append(s)
            ors.append(f'"status" = ${len(args)}')
        conds.append("(" + " OR ".join(ors) + ")")
    if cursor:
        args += list(cursor)
        conds.append(f"(ts_epoch, run_number) < (${len(args) - 1},${len(args)})")
    joins = _STATUS_JOINS if statuses else ""
    cols = _RUN_SELECT + ("," + _STATUS_COL if statuses else "")
    sql = (f"SELECT * FROM ( SELECT {cols} FROM runs_v3 {joins} ) T WHERE {' AND '.join(conds)} "
           f"ORDER BY ts_epoch DESC, run_number DESC LIMIT {limit + 1}")
    return sql, args


def get_run(flow: str, run: int) -> Statement:
    """`GET /flows/{flow}/runs/{run}`."""
    return f"SELECT * FROM ( SELECT {_RUN_SELECT} FROM runs_v3 ) T WHERE flow_id = $1 AND run_number = $2", [flow, run]


def get_steps(flow: str, run: int) -> Statement:
    """`GET /flows/{flow}/runs/{run}/steps`."""
    keys = "flow_id,run_number,run_id,step_name,user_name,ts_epoch,tags,system_tags"
    return f"SELECT * FROM ( SELECT {keys} FROM steps_v3 ) T WHERE flow_id = $1 AND run_number = $2", [flow, run]


_META_KEYS = "flow_id,run_number,run_id,step_name,task_id,task_name,id,field_name,value,type,user_name,ts_epoch,tags,system_tags"


def filtered_tasks(flow: str, run: int, step: str, field: str, pattern: str) -> Statement:
    """`GET .../steps/{step}/filtered_tasks?metadata_field_name=..&pattern=..` (not paginated)."""
    sql = (f"SELECT DISTINCT flow_id, run_number, run_id, step_name, task_name, task_id FROM ( SELECT {_META_KEYS} "
           "FROM metadata_v3 ) T WHERE flow_id = $1 AND run_number = $2 AND step_name = $3 AND field_name = $4 "
           "AND regexp_match(value, $5) IS NOT NULL ORDER BY task_id")
    return sql, [flow, run, step, field, pattern]


def task_metadata(flow: str, run: int, step: str, task: int) -> Statement:
    """`GET .../tasks/{task}/metadata` (no _limit: the whole list)."""
    sql = (f"SELECT * FROM ( SELECT {_META_KEYS} FROM metadata_v3 ) T WHERE flow_id = $1 AND run_number = $2 "
           "AND step_name = $3 AND task_id = $4 ORDER BY ts_epoch DESC, id DESC")
    return sql, [flow, run, step, task]


def run_metadata_page(flow: str, run: int, *, limit: int, cursor: tuple[int, int] | None = None) -> Statement:
    """`GET /flows/{flow}/runs/{run}/metadata?_limit=..` (newest first: with _limit=1, the run's last row)."""
    args: list[Any] = [flow, run]
    cond = ""
    if cursor:
        args += list(cursor)
        cond = " AND (ts_epoch, id) < ($3,$4)"
    sql = (f"SELECT * FROM ( SELECT {_META_KEYS} FROM metadata_v3 ) T WHERE flow_id = $1 AND run_number = $2{cond} "
           f"ORDER BY ts_epoch DESC, id DESC LIMIT {limit + 1}")
    return sql, args


_ART_KEYS = ("flow_id, run_number, run_id, step_name, task_id, task_name, name, location, ds_type, sha, type, content_type, "
             "user_name, attempt_id, ts_epoch, tags, system_tags")


def run_artifacts_page(flow: str, run: int, *, limit: int, cursor: tuple[int, int, str] | None = None) -> Statement:
    """`GET /flows/{flow}/runs/{run}/artifacts?_limit=..` (latest attempt per task and name)."""
    args: list[Any] = [flow, run]
    cursor_where = ""
    if cursor:
        args += list(cursor)
        cursor_where = "WHERE (ts_epoch, task_id, name) < ($3, $4, $5)"
    sql = (f"SELECT * FROM ( SELECT DISTINCT ON (task_id, name) {_ART_KEYS} FROM artifact_v3 "
           f"WHERE flow_id = $1 AND run_number = $2 ORDER BY task_id, name, ts_epoch DESC ) T {cursor_where} "
           f"ORDER BY ts_epoch DESC, task_id DESC, name DESC LIMIT {limit + 1}")
    return sql, args


def flows_page(*, limit: int, cursor: tuple[int, str] | None = None) -> Statement:
    """`GET /flows?_limit=..` (newest flow first)."""
    args: list[Any] = []
    cond = ""
    if cursor:
        args = list(cursor)
        cond = "WHERE (ts_epoch, flow_id) < ($1,$2)"
    sql = (f"SELECT * FROM ( SELECT flow_id,user_name,ts_epoch,tags,system_tags FROM flows_v3 ) T {cond} "
           f"ORDER BY ts_epoch DESC, flow_id DESC LIMIT {limit + 1}")
    return sql, args
