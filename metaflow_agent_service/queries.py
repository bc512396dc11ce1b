"""One async function per question: SQL in, JSON-ready dicts out.

Every list is keyset-paged (`_limit` + an opaque `_cursor`) with a default and a hard cap; a
state filter examines at most `scan_budget` runs per request and says so (`budget_hit`).
States and facts come from `.sql`, which renders `metaflow_agent._states`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from metaflow_agent._states import RUN_STATES, TASK_STATES

from . import sql as S
from .config import Settings
from .params import (
    BadParam,
    Limits,
    NotFoundError,
    Query,
    check_name,
    decode_cursor,
    encode_cursor,
    glob_has_class,
    glob_to_like,
    glob_to_regex,
    parse_glob,
)

RUN_LIMITS = Limits(50, 500)
TASK_LIMITS = Limits(100, 1000)
FLOW_LIMITS = Limits(50, 500)
ARTIFACT_LIMITS = Limits(100, 1000)
MAX_STEPS = 500  # steps listed in a run summary
MAX_FLOWS_PER_STATS = 20
MAX_ATTEMPTS_LISTED = 20
TASK_FILTER_STATES: tuple[str, ...] = (*TASK_STATES, "retried_ok")


@dataclass
class Ctx:
    """A query's connection (read-only snapshot), settings and clock."""

    conn: asyncpg.Connection
    settings: Settings
    now_s: int | None = None  # the test-only clock override


@dataclass
class Answer:
    """A JSON body plus paging facts for the response headers."""

    body: dict[str, Any]
    limit: int | None = None
    next_cursor: str | None = None
    notes: list[str] = field(default_factory=list)


def _page(limit: int, next_cursor: str | None, *, scanned: int | None = None, budget_hit: bool = False) -> dict[str, Any]:
    return {"limit": limit, "next_cursor": next_cursor, "truncated": next_cursor is not None, "scanned": scanned, "budget_hit": budget_hit}


def _run_id(row: asyncpg.Record) -> str:
    return str(row["run_id"] if row["run_id"] is not None else row["run_number"])


RUN_COLUMNS = (
    "r.flow_id, r.run_number, r.run_id, r.user_name, {user} AS verified_user, r.ts_epoch, "
    "r.tags, r.system_tags, r.last_heartbeat_ts"
).format(user=S.verified_user("r"))


def run_json(row: asyncpg.Record) -> dict[str, Any]:
    finished = row["finished_ms"]
    return {
        "flow_id": row["flow_id"],
        "run_number": row["run_number"],
        "run_id": row["run_id"],
        "pathspec": f"{row['flow_id']}/{_run_id(row)}",
        "state": row["state"],
        "created_ms": row["ts_epoch"],
        "finished_ms": finished,
        "duration_ms": None if finished is None else finished - row["ts_epoch"],
        "user": row["verified_user"],
        "tags": row["tags"] if isinstance(row["tags"], list) else [],
        "system_tags": row["system_tags"] if isinstance(row["system_tags"], list) else [],
        "heartbeat_s": row["last_heartbeat_ts"],
    }


def _runs_sql(p: S.Params, now: str, where: list[str], *, scan: int, states: list[str], limit: int) -> str:
    """Runs matching `where`, newest first, with state and finish time.

    The state filter applies to the first `scan` runs only: that bounds its cost."""
    state_filter = f"WHERE s.state = ANY({p(states, 'text[]')})" if states else ""
    return f"""
      SELECT s.*, {S.finished_ms_of('s')} AS finished_ms
      FROM (SELECT r.*, e.end_done_ms, {S.run_state_of('r', 'e.end_ok', now)} AS state
            FROM (SELECT {RUN_COLUMNS} FROM runs_v3 r WHERE {' AND '.join(where)}
                  ORDER BY r.ts_epoch DESC, r.run_number DESC LIMIT {int(scan)}) r
            {S.end_facts_lateral('r')}) s
      {state_filter}
      ORDER BY s.ts_epoch DESC, s.run_number DESC LIMIT {int(limit)}"""


async def _flow_exists(ctx: Ctx, flow: str) -> bool:
    return bool(await ctx.conn.fetchval("SELECT 1 FROM flows_v3 WHERE flow_id = $1", flow))


async def resolve_run(ctx: Ctx, flow: str, run: str) -> asyncpg.Record:
    """The run row, with state and finish, by number or run_id."""
    check_name("flow_id", flow)
    check_name("run", run)
    p = S.Params()
    now = S.now_sql(p, ctx.now_s)
    key = f"r.run_number = {p(int(run), 'int')}" if run.isdigit() and int(run) < 2**31 else f"r.run_id = {p(run)}"
    row = await ctx.conn.fetchrow(_runs_sql(p, now, [f"r.flow_id = {p(flow)}", key], scan=1, states=[], limit=1), *p.values)
    if row is None:
        if not await _flow_exists(ctx, flow):
            raise NotFoundError(f"flow {flow!r} not found", "flow names are case-sensitive; GET /agent/v1/flows lists them")
        raise NotFoundError(f"run {flow}/{run} not found", f"GET /agent/v1/flows/{flow}/runs lists its runs")
    return row


# --- runs ------------------------------------------------------------------------------
RUNS_PARAMS = ("state", "since", "until", "tags_any", "tags_all", "user", "_limit", "_cursor")


async def list_runs(ctx: Ctx, flow: str, q: Query) -> Answer:
    """Runs of a flow, newest first, with state, finish and duration."""
    check_name("flow_id", flow)
    route = f"runs:{flow}"
    limit = q.limit(RUN_LIMITS)
    states = q.choices("state", RUN_STATES)
    cursor = decode_cursor(route, q, (int, int))

    p = S.Params()
    where = _run_filters(p, flow, q)
    base_where = list(where)
    base_values = list(p.values)  # the helpers below reuse the filters, which are bound first
    now = S.now_sql(p, ctx.now_s)
    if cursor:
        where.append(f"(r.ts_epoch, r.run_number) < ({p(cursor[0], 'bigint')}, {p(cursor[1], 'int')})")
    scan = ctx.settings.scan_budget if states else limit + 1
    rows = await ctx.conn.fetch(_runs_sql(p, now, where, scan=scan, states=states, limit=limit + 1), *p.values)

    next_key: tuple[int, int] | None = None
    budget_hit = False
    scanned: int | None = None
    if len(rows) > limit:
        next_key = (rows[limit - 1]["ts_epoch"], rows[limit - 1]["run_number"])
        if states:
            scanned = await _count_runs(ctx, base_where, base_values, cursor, upto=(rows[limit]["ts_epoch"], rows[limit]["run_number"]))
        else:
            scanned = limit + 1
    elif states:
        # Short page: either the runs ran out or the scan budget did (then resume after it).
        boundary = await _nth_run(ctx, base_where, base_values, cursor, scan)
        if boundary is not None:  # the budget ran out with more runs to go: resume after the last one examined
            next_key, budget_hit, scanned = boundary, True, scan
        else:
            scanned = await _count_runs(ctx, base_where, base_values, cursor, upto=None)
    else:
        scanned = len(rows)
    if not rows and not cursor and not await _flow_exists(ctx, flow):
        raise NotFoundError(f"flow {flow!r} not found", "flow names are case-sensitive; GET /agent/v1/flows lists them")
    page_rows = rows[:limit]
    nxt = encode_cursor(route, q, list(next_key)) if next_key else None
    body = {"flow_id": flow, "as_of_s": await _as_of(ctx), "data": [run_json(r) for r in page_rows],
            "page": _page(limit, nxt, scanned=scanned, budget_hit=budget_hit)}
    return Answer(body, limit, nxt)


def _run_filters(p: S.Params, flow: str, q: Query) -> list[str]:
    """WHERE terms (alias r) of the run filters a list takes: since/until, tags, user."""
    since, until = q.epoch_ms("since"), q.epoch_ms("until")
    if since is not None and until is not None and since > until:
        raise BadParam("since", "since is after until", "swap them")
    tags_any, tags_all = q.tags("tags_any"), q.tags("tags_all")
    users = q.names("user", max_items=20)
    where = [f"r.flow_id = {p(flow)}"]
    if since is not None:
        where.append(f"r.ts_epoch >= {p(since, 'bigint')}")
    if until is not None:
        where.append(f"r.ts_epoch <= {p(until, 'bigint')}")
    if tags_any:
        where.append(f"(r.tags || r.system_tags) ?| {p(tags_any, 'text[]')}")
    if tags_all:
        where.append(f"(r.tags || r.system_tags) ?& {p(tags_all, 'text[]')}")
    if users:
        where.append(f"{S.verified_user('r')} = ANY({p(users, 'text[]')})")
    return where


async def _count_runs(ctx: Ctx, where: list[str], values: list[Any], cursor: list[Any] | None, *, upto: tuple[int, int] | None) -> int:
    """How many runs a page examined (cursor to `upto`, inclusive)."""
    p = S.Params()
    p.values = list(values)
    w = list(where)
    if cursor:
        w.append(f"(r.ts_epoch, r.run_number) < ({p(cursor[0], 'bigint')}, {p(cursor[1], 'int')})")
    if upto:
        w.append(f"(r.ts_epoch, r.run_number) >= ({p(upto[0], 'bigint')}, {p(upto[1], 'int')})")
    sql = f"SELECT count(*) FROM (SELECT 1 FROM runs_v3 r WHERE {' AND '.join(w)} LIMIT {ctx.settings.scan_budget}) x"
    return int(await ctx.conn.fetchval(sql, *p.values))


async def _nth_run(ctx: Ctx, where: list[str], values: list[Any], cursor: list[Any] | None, n: int) -> tuple[int, int] | None:
    """The n-th run's key after the cursor, if more runs follow it."""
    p = S.Params()
    p.values = list(values)
    w = list(where)
    if cursor:
        w.append(f"(r.ts_epoch, r.run_number) < ({p(cursor[0], 'bigint')}, {p(cursor[1], 'int')})")
    rows = await ctx.conn.fetch(
        f"SELECT r.ts_epoch, r.run_number FROM runs_v3 r WHERE {' AND '.join(w)} "
        f"ORDER BY r.ts_epoch DESC, r.run_number DESC OFFSET {int(n) - 1} LIMIT 2", *p.values)
    return (rows[0]["ts_epoch"], rows[0]["run_number"]) if len(rows) == 2 else None


async def _as_of(ctx: Ctx) -> int:
    """The clock the answer was computed at (epoch seconds)."""
    if ctx.now_s is not None:
        return ctx.now_s
    return int(await ctx.conn.fetchval("SELECT EXTRACT(EPOCH FROM now())::bigint"))


async def get_run(ctx: Ctx, flow: str, run: str, q: Query) -> Answer:
    """One run with state, finish time and duration."""
    row = await resolve_run(ctx, flow, run)
    return Answer({"as_of_s": await _as_of(ctx), "data": run_json(row)})


# --- tasks -------------------------------------------------------------------------------
TASKS_PARAMS = ("state", "step", "_limit", "_cursor")


def _tasks_cte(p: S.Params, now: str, flow: str, run_number: int, *, steps: list[str], narrow: str | None,
               after: int | None) -> str:
    """CTEs `p` (per-task facts) and `t` (every task with its state).

    `p` reads the attempt marks. `narrow`: a query of the only (step_name, task_id) that can
    match, computed once, first."""
    f, r = p(flow), p(run_number, "bigint")
    m_where = [f"m.flow_id = {f}", f"m.run_number = {r}", f"m.step_name NOT LIKE '{S.HIDDEN_STEP}'"]
    t_where = [f"t.flow_id = {f}", f"t.run_number = {r}", f"t.step_name NOT LIKE '{S.HIDDEN_STEP}'"]
    if steps:
        s = p(steps, "text[]")
        m_where.append(f"m.step_name = ANY({s})")
        t_where.append(f"t.step_name = ANY({s})")
    if narrow:
        m_where.append("(m.step_name, m.task_id) IN (SELECT c.step_name, c.task_id FROM cand c)")
        t_where.append("t.task_id IN (SELECT c.task_id FROM cand c)")
    if after is not None:
        a = p(after, "bigint")
        m_where.append(f"m.task_id > {a}")
        t_where.append(f"t.task_id > {a}")
    run_hb = f"(SELECT rr.last_heartbeat_ts FROM runs_v3 rr WHERE rr.flow_id = {f} AND rr.run_number = {r})"
    latest_ok = S.decode_ok("p.top[2]")
    state = S.task_state(latest_ok=latest_ok, run_alive=S.liveness(now, run_hb), alive=S.liveness(now, "t.last_heartbeat_ts"))
    cand = f"cand AS MATERIALIZED ({narrow})," if narrow else ""
    return f"""
      {cand}
      a AS ({S.attempts_sql(' AND '.join(m_where))}),
      p AS (
        SELECT a.task_id, count(*) AS n_attempts, {S.LATEST_ATTEMPT_AGG} AS top, {S.EARLIER_FAILED_AGG} AS earlier_failed,
               min(a.started_ms) AS started_ms
        FROM a GROUP BY a.task_id),
      t AS (
        SELECT t.flow_id, t.run_number, t.step_name, t.task_id, t.task_name, t.ts_epoch, t.last_heartbeat_ts, p.n_attempts,
               {latest_ok} AS latest_ok, COALESCE(p.earlier_failed, FALSE) AS earlier_failed, p.started_ms,
               NULLIF(p.top[3], -1) AS finished_ms, {state} AS state
        FROM tasks_v3 t LEFT JOIN p ON p.task_id = t.task_id
        WHERE {' AND '.join(t_where)})"""


def _attempts_json(t: str) -> str:
    """The latest attempts of task row `t`, oldest first, as JSON."""
    rows = S.attempts_sql(f"m.flow_id = {t}.flow_id AND m.run_number = {t}.run_number AND m.step_name = {t}.step_name "
                          f"AND m.task_id = {t}.task_id")
    return f"""(SELECT jsonb_agg(jsonb_build_object('attempt', y.att, 'ok', {S.decode_ok('y.ok_code')}, 'started_ms', y.started_ms,
                                                   'finished_ms', y.finished_ms) ORDER BY y.att)
               FROM ({rows} ORDER BY 3 DESC LIMIT {MAX_ATTEMPTS_LISTED}) y)"""


def _narrowing(p: S.Params, flow: str, run_number: int, states: list[str]) -> str | None:
    """The only tasks that can hold `states`, where the rule proves it."""
    if not states or any(s not in ("retried_ok", "failed") or (s == "failed" and not S.FAILED_NEEDS_A_FALSE_OK) for s in states):
        return None
    f, r = p(flow), p(run_number, "bigint")
    parts = []
    if "retried_ok" in states:  # completed after an earlier attempt: the task has a mark of an attempt N > 0
        parts.append(f"SELECT g.step_name, g.task_id FROM metadata_v3 g WHERE g.flow_id = {f} AND g.run_number = {r} "
                     f"AND g.field_name IN {S.MARKS_IN} AND {S.attempt_no('g')} > 0")
    if "failed" in states:
        parts.append(S.false_ok_tasks(f, r))
    return " UNION ".join(parts)


def task_json(flow: str, run_id: str, row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    started, finished = row["started_ms"], row["finished_ms"]
    tid = row["task_name"] if row["task_name"] is not None else row["task_id"]
    return {
        "pathspec": f"{flow}/{run_id}/{row['step_name']}/{tid}",
        "step": row["step_name"],
        "task_id": row["task_id"],
        "state": row["state"],
        "retried_ok": bool(row["state"] == "completed" and row["earlier_failed"]),
        "attempt_count": row["n_attempts"] or 0,
        "attempts": row["attempts"] or [],
        "created_ms": row["ts_epoch"],
        "started_ms": started,
        "finished_ms": finished,
        "duration_ms": None if started is None or finished is None else finished - started,
        "heartbeat_s": row["last_heartbeat_ts"],
    }


async def list_tasks(ctx: Ctx, flow: str, run: str, q: Query) -> Answer:
    """Tasks of a run by state, in task-id order (`_parameters` left out)."""
    run_row = await resolve_run(ctx, flow, run)
    run_id = _run_id(run_row)
    route = f"tasks:{flow}/{run_row['run_number']}"
    limit = q.limit(TASK_LIMITS)
    states = q.choices("state", TASK_FILTER_STATES)
    steps = q.names("step", max_items=50)
    cursor = decode_cursor(route, q, (int,))
    p = S.Params()
    now = S.now_sql(p, ctx.now_s)
    narrow = _narrowing(p, flow, run_row["run_number"], states)
    cte = _tasks_cte(p, now, flow, run_row["run_number"], steps=steps, narrow=narrow, after=cursor[0] if cursor else None)
    filt = ""
    if states:
        plain = [s for s in states if s != "retried_ok"]
        conds = [f"t.state = ANY({p(plain, 'text[]')})"] if plain else []
        if "retried_ok" in states:
            conds.append("(t.state = 'completed' AND t.earlier_failed)")
        filt = "WHERE " + " OR ".join(conds)
    rows = await ctx.conn.fetch(
        f"WITH {cte} SELECT t.*, {_attempts_json('t')} AS attempts "
        f"FROM (SELECT * FROM t {filt} ORDER BY t.task_id LIMIT {limit + 1}) t ORDER BY t.task_id", *p.values)
    nxt = encode_cursor(route, q, [rows[limit - 1]["task_id"]]) if len(rows) > limit else None
    body = {
        "run": run_json(run_row),
        "as_of_s": await _as_of(ctx),
        "data": [task_json(flow, run_id, r) for r in rows[:limit]],
        "page": _page(limit, nxt),
    }
    return Answer(body, limit, nxt)


# --- run summary ---------------------------------------------------------------------------
SUMMARY_PARAMS = ("slowest",)
COUNT_STATES: tuple[str, ...] = (*TASK_STATES, "retried_ok")


def _counts_sql(alias: str = "t") -> str:
    parts = [f"'{s}', count(*) FILTER (WHERE {alias}.state = '{s}')" for s in TASK_STATES]
    parts.append(f"'retried_ok', count(*) FILTER (WHERE {alias}.state = 'completed' AND {alias}.earlier_failed)")
    return "jsonb_build_object(" + ", ".join(parts) + ")"


async def run_summary(ctx: Ctx, flow: str, run: str, q: Query) -> Answer:
    """Per-step counts, timings and slowest tasks of a run, with totals."""
    run_row = await resolve_run(ctx, flow, run)
    slowest = q.integer("slowest", lo=0, hi=20, default=3)
    p = S.Params()
    now = S.now_sql(p, ctx.now_s)
    rn = run_row["run_number"]
    cte = _tasks_cte(p, now, flow, rn, steps=[], narrow=None, after=None)
    fin = ", ".join(f"'{s}'" for s in S.FINISHED_STATES)
    sql = f"""
      WITH {cte},
      d AS (SELECT t.*, t.finished_ms - t.started_ms AS duration_ms FROM t),
      per_step AS (
        SELECT d.step_name, count(*) AS tasks, {_counts_sql('d')} AS counts,
               min(COALESCE(d.started_ms, d.ts_epoch)) AS started_ms,
               CASE WHEN bool_and(d.state IN ({fin})) THEN max(d.finished_ms) END AS finished_ms
        FROM d GROUP BY d.step_name),
      ranked AS (
        SELECT d.step_name, d.task_id, d.state, d.duration_ms,
               row_number() OVER (PARTITION BY d.step_name ORDER BY d.duration_ms DESC, d.task_id) AS rank
        FROM d WHERE d.duration_ms IS NOT NULL),
      ff AS (  -- the first failure: failed before crashed, then in step order, then by task id
        SELECT d.* FROM d JOIN steps_v3 s2 ON s2.flow_id = d.flow_id AND s2.run_number = d.run_number AND s2.step_name = d.step_name
        WHERE d.state IN ('failed', 'crashed') ORDER BY (d.state <> 'failed'), s2.ts_epoch, s2.step_name, d.task_id LIMIT 1)
      SELECT s.step_name, s.ts_epoch, ps.tasks, ps.counts, ps.started_ms, ps.finished_ms,
             (SELECT to_jsonb(ff) || jsonb_build_object('attempts', {_attempts_json('ff')}) FROM ff) AS first_failure,
             (SELECT jsonb_agg(jsonb_build_object('task_id', k.task_id, 'state', k.state, 'duration_ms', k.duration_ms) ORDER BY k.rank)
              FROM ranked k WHERE k.step_name = s.step_name AND k.rank <= {int(slowest or 0)}) AS slowest,
             (SELECT jsonb_build_object('tasks', count(*), 'counts', {_counts_sql('d')}) FROM d) AS totals,
             (SELECT jsonb_build_object('ds_type', a.ds_type, 'location', a.location) FROM artifact_v3 a  -- where the run's data is
              WHERE a.flow_id = {p(flow)} AND a.run_number = {p(rn, 'bigint')} AND a.step_name = '_parameters'
              ORDER BY a.ts_epoch DESC LIMIT 1) AS datastore
      FROM steps_v3 s LEFT JOIN per_step ps ON ps.step_name = s.step_name
      WHERE s.flow_id = {p(flow)} AND s.run_number = {p(rn, 'bigint')} AND s.step_name NOT LIKE '{S.HIDDEN_STEP}'
      ORDER BY s.ts_epoch, s.step_name LIMIT {MAX_STEPS + 1}"""
    rows = await ctx.conn.fetch(sql, *p.values)
    empty_counts = {s: 0 for s in COUNT_STATES}
    steps = []
    for r in rows[:MAX_STEPS]:
        started, finished = r["started_ms"], r["finished_ms"]
        steps.append({
            "step": r["step_name"],
            "created_ms": r["ts_epoch"],
            "tasks": r["tasks"] or 0,
            "counts": r["counts"] or dict(empty_counts),
            "started_ms": started,
            "finished_ms": finished,
            "duration_ms": None if started is None or finished is None else finished - started,
            "slowest": r["slowest"] or [],
        })
    totals = rows[0]["totals"] if rows else {"tasks": 0, "counts": dict(empty_counts)}
    first = rows[0]["first_failure"] if rows else None
    body = {"run": run_json(run_row), "as_of_s": await _as_of(ctx), "steps": steps, "totals": totals,
            "first_failure": None if first is None else task_json(flow, _run_id(run_row), first),
            "datastore": rows[0]["datastore"] if rows else None,  # its _parameters artifacts' ds_type and location
            "steps_truncated": len(rows) > MAX_STEPS}
    return Answer(body)


# --- run statistics ---------------------------------------------------------------------------
STATS_PARAMS = ("flows", "since", "until", "last", "per_step", "tags_any", "tags_all")


async def run_stats(ctx: Ctx, q: Query) -> Answer:
    """Counts by state, success rates and duration percentiles over runs."""
    flows = q.names("flows", max_items=MAX_FLOWS_PER_STATS)
    if not flows:
        raise BadParam("flows", "flows is required", "e.g. flows=TrainFlow or flows=TrainFlow,ShardFlow")
    since, until = q.epoch_ms("since"), q.epoch_ms("until")
    cap = ctx.settings.stats_max_runs
    last = q.integer("last", lo=1, hi=cap)
    if since is None and until is None and last is None:
        raise BadParam("last", "give a time window (since/until) or last=N", f"e.g. last=100 (at most {cap}), or since=<epoch ms | ISO-8601>")
    per_step = q.boolean("per_step")
    tags_any, tags_all = q.tags("tags_any"), q.tags("tags_all")
    per_flow_cap = min(last or cap, cap)
    known = {r["flow_id"] for r in await ctx.conn.fetch("SELECT flow_id FROM flows_v3 WHERE flow_id = ANY($1::text[])", flows)}
    if set(flows) - known:  # a misspelt flow would otherwise look like one without runs
        missing = ", ".join(repr(f) for f in flows if f not in known)
        raise NotFoundError(f"flow(s) {missing} not found", "flow names are case-sensitive; GET /agent/v1/flows lists them")

    p = S.Params()
    w = ["r.flow_id = f.flow_id", f"f.flow_id = ANY({p(flows, 'text[]')})"]
    if since is not None:
        w.append(f"r.ts_epoch >= {p(since, 'bigint')}")
    if until is not None:
        w.append(f"r.ts_epoch <= {p(until, 'bigint')}")
    if tags_any:  # a namespace is a tag (user:<name>)
        w.append(f"(r.tags || r.system_tags) ?| {p(tags_any, 'text[]')}")
    if tags_all:
        w.append(f"(r.tags || r.system_tags) ?& {p(tags_all, 'text[]')}")
    window_values = list(p.values)  # bound first: the follow-up queries reuse them
    now = S.now_sql(p, ctx.now_s)
    fin = ", ".join(f"'{s}'" for s in S.FINISHED_STATES)
    state_counts = "jsonb_build_object(" + ", ".join(f"'{s}', count(*) FILTER (WHERE e.state = '{s}')" for s in RUN_STATES) + ")"
    pct = "percentile_cont({q}) WITHIN GROUP (ORDER BY e.duration_ms) FILTER (WHERE e.state = 'completed')"
    sql = f"""
      WITH x AS MATERIALIZED (
        SELECT r.flow_id, r.run_number, r.ts_epoch, r.last_heartbeat_ts
        FROM unnest($1::text[]) AS f(flow_id)
        CROSS JOIN LATERAL (
          SELECT r.flow_id, r.run_number, r.ts_epoch, r.last_heartbeat_ts FROM runs_v3 r WHERE {' AND '.join(w)}
          ORDER BY r.ts_epoch DESC, r.run_number DESC LIMIT {per_flow_cap}) r),
      ends AS ({S.end_facts_of_runs('x')}),
      judged AS MATERIALIZED (
        SELECT x.*, ends.end_done_ms, {S.run_state_of('x', 'ends.end_ok', now)} AS state
        FROM x LEFT JOIN ends ON ends.flow_id = x.flow_id AND ends.run_number = x.run_number),
      e AS (SELECT j.*, CASE WHEN j.state = 'completed' THEN j.end_done_ms - j.ts_epoch END AS duration_ms FROM judged j)
      SELECT e.flow_id, count(*) AS examined, {state_counts} AS counts,
             min(e.duration_ms) FILTER (WHERE e.state = 'completed') AS d_min,
             {pct.format(q='0.5')} AS d_p50, {pct.format(q='0.9')} AS d_p90,
             max(e.duration_ms) FILTER (WHERE e.state = 'completed') AS d_max,
             min(e.ts_epoch) AS first_ms, max(e.ts_epoch) AS last_ms,
             count(*) FILTER (WHERE e.state IN ({fin})) AS finished
      FROM e GROUP BY GROUPING SETS ((e.flow_id), ())"""
    rows = await ctx.conn.fetch(sql, *p.values)
    more = await ctx.conn.fetch(f"SELECT f.flow_id, EXISTS (SELECT 1 FROM runs_v3 r WHERE {' AND '.join(w)} "
                                f"ORDER BY r.ts_epoch DESC OFFSET {per_flow_cap} LIMIT 1) AS more "
                                f"FROM unnest($1::text[]) AS f(flow_id)", *window_values)
    truncated = {r["flow_id"]: (r["more"] and last is None) for r in more}

    def shape(r: asyncpg.Record) -> dict[str, Any]:
        counts = r["counts"]
        examined, finished = r["examined"], r["finished"]
        return {
            "runs_examined": examined,
            "counts": counts,
            "success_rate": counts["completed"] / examined if examined else None,
            "success_rate_finished": counts["completed"] / finished if finished else None,
            "duration_ms": {"min": r["d_min"], "p50": r["d_p50"], "p90": r["d_p90"], "max": r["d_max"], "of": counts["completed"]},
            "first_created_ms": r["first_ms"],
            "last_created_ms": r["last_ms"],
        }

    by_flow = {r["flow_id"]: shape(r) for r in rows if r["flow_id"] is not None}
    total = next((shape(r) for r in rows if r["flow_id"] is None), None)
    empty = {"runs_examined": 0, "counts": {s: 0 for s in RUN_STATES}, "success_rate": None, "success_rate_finished": None,
             "duration_ms": {"min": None, "p50": None, "p90": None, "max": None, "of": 0}, "first_created_ms": None, "last_created_ms": None}
    flows_out = []
    for f in flows:
        item = {"flow_id": f, **by_flow.get(f, empty), "truncated": bool(truncated.get(f))}
        flows_out.append(item)
    body: dict[str, Any] = {
        "as_of_s": await _as_of(ctx),
        "window": {"since_ms": since, "until_ms": until, "last": last},
        "max_runs_per_flow": per_flow_cap,
        "flows": flows_out,
        "total": total or empty,
        "runs_examined": (total or empty)["runs_examined"],
    }
    if per_step:
        body["steps"] = await _step_stats(ctx, w, window_values, per_flow_cap)
    return Answer(body)


async def _step_stats(ctx: Ctx, w: list[str], values: list[Any], per_flow_cap: int) -> list[dict[str, Any]]:
    """Per flow and step: runs, runs with a failed task, durations."""
    p = S.Params()
    p.values = list(values)  # $1 = the flows, then the window
    now = S.now_sql(p, ctx.now_s)
    run_alive = S.liveness(now, "x.last_heartbeat_ts")
    state = S.task_state(latest_ok="pt.latest_ok", run_alive=run_alive, alive=S.liveness(now, "t.last_heartbeat_ts"))
    marks = S.attempts_sql(f"m.flow_id = x.flow_id AND m.run_number = x.run_number AND m.step_name NOT LIKE '{S.HIDDEN_STEP}'")
    pct = "percentile_cont({q}) WITHIN GROUP (ORDER BY st.duration_ms) FILTER (WHERE st.run_state = 'completed')"
    sql = f"""
      WITH x AS MATERIALIZED (
        SELECT r.flow_id, r.run_number, r.ts_epoch, r.last_heartbeat_ts, {S.run_state_of('r', 'e.end_ok', now)} AS run_state
        FROM unnest($1::text[]) AS f(flow_id)
        CROSS JOIN LATERAL (SELECT r.* FROM runs_v3 r WHERE {' AND '.join(w)}
                            ORDER BY r.ts_epoch DESC, r.run_number DESC LIMIT {per_flow_cap}) r
        {S.end_facts_lateral('r')}),
      st AS (
        SELECT x.flow_id, x.run_number, x.run_state, t.step_name,
               count(*) AS tasks,
               bool_or({state} = 'failed') AS failed,
               max(pt.finished_ms) - min(pt.started_ms) AS duration_ms,
               min(pt.started_ms) - x.ts_epoch AS offset_ms
        FROM x
        CROSS JOIN LATERAL (
          SELECT a.task_id, {S.decode_ok(f"({S.LATEST_ATTEMPT_AGG})[2]")} AS latest_ok, min(a.started_ms) AS started_ms,
                 max(a.finished_ms) AS finished_ms
          FROM ({marks}) a GROUP BY a.task_id) pt
        JOIN tasks_v3 t ON t.task_id = pt.task_id
        GROUP BY x.flow_id, x.run_number, x.ts_epoch, x.run_state, t.step_name)
      SELECT st.flow_id, st.step_name, count(*) AS runs, count(*) FILTER (WHERE st.failed) AS runs_failed,
             sum(st.tasks) AS tasks,
             min(st.duration_ms) FILTER (WHERE st.run_state = 'completed') AS d_min,
             {pct.format(q='0.5')} AS d_p50, {pct.format(q='0.9')} AS d_p90,
             max(st.duration_ms) FILTER (WHERE st.run_state = 'completed') AS d_max,
             count(*) FILTER (WHERE st.run_state = 'completed') AS completed_runs
      FROM st GROUP BY st.flow_id, st.step_name
      ORDER BY st.flow_id, percentile_disc(0.5) WITHIN GROUP (ORDER BY st.offset_ms), st.step_name LIMIT {MAX_STEPS}"""
    rows = await ctx.conn.fetch(sql, *p.values)
    return [{
        "flow_id": r["flow_id"], "step": r["step_name"], "runs": r["runs"], "runs_with_failed_task": r["runs_failed"],
        "tasks": int(r["tasks"]),
        "duration_ms": {"min": r["d_min"], "p50": r["d_p50"], "p90": r["d_p90"], "max": r["d_max"], "of": r["completed_runs"]},
    } for r in rows]


# --- flows ---------------------------------------------------------------------------------
FLOWS_PARAMS = ("tags_any", "tags_all", "_limit", "_cursor")


async def list_flows(ctx: Ctx, q: Query) -> Answer:
    """Flows in name order, each with its latest run (id, state, times, step count) among the runs the tags select."""
    route = "flows"
    limit = q.limit(FLOW_LIMITS)
    cursor = decode_cursor(route, q, (str,))
    tags_any, tags_all = q.tags("tags_any"), q.tags("tags_all")
    p = S.Params()
    now = S.now_sql(p, ctx.now_s)
    after = f"WHERE f.flow_id > {p(cursor[0])}" if cursor else ""
    rw = ["r.flow_id = f.flow_id"]
    if tags_any:  # a namespace is a tag (user:<name>)
        rw.append(f"(r.tags || r.system_tags) ?| {p(tags_any, 'text[]')}")
    if tags_all:
        rw.append(f"(r.tags || r.system_tags) ?& {p(tags_all, 'text[]')}")
    sql = f"""
      SELECT lr.*, f.flow_id AS flow_name, f.ts_epoch AS flow_created_ms, {S.finished_ms_of('lr')} AS finished_ms,
             CASE WHEN lr.run_number IS NULL THEN NULL ELSE
               (SELECT count(*) FROM steps_v3 s WHERE s.flow_id = f.flow_id AND s.run_number = lr.run_number
                AND s.step_name <> '_parameters') END AS step_count
      FROM (SELECT * FROM flows_v3 f {after} ORDER BY f.flow_id LIMIT {limit + 1}) f
      LEFT JOIN LATERAL (
        SELECT r.*, e.end_done_ms, {S.run_state_of('r', 'e.end_ok', now)} AS state
        FROM (SELECT {RUN_COLUMNS} FROM runs_v3 r WHERE {' AND '.join(rw)}
              ORDER BY r.ts_epoch DESC, r.run_number DESC LIMIT 1) r
        {S.end_facts_lateral('r')}) lr ON TRUE
      ORDER BY f.flow_id"""
    rows = await ctx.conn.fetch(sql, *p.values)
    nxt = encode_cursor(route, q, [rows[limit - 1]["flow_name"]]) if len(rows) > limit else None
    data = []
    for r in rows[:limit]:  # lr.flow_id is null for a flow without a run the tags select: use f's
        latest = run_json(r) if r["run_number"] is not None else None
        data.append({"flow_id": r["flow_name"], "created_ms": r["flow_created_ms"], "latest_run": latest, "latest_run_steps": r["step_count"]})
    return Answer({"as_of_s": await _as_of(ctx), "data": data, "page": _page(limit, nxt)}, limit, nxt)


# --- artifact search -------------------------------------------------------------------------
ARTIFACTS_PARAMS = ("name", "name_prefix", "include_private", "attempts", "runs", "since", "until", "tags_any", "tags_all",
                    "user", "_limit", "_cursor")
ARTIFACT_WINDOW = Limits(50, 500)  # the newest runs one search covers (`runs`)
# Hits come in the order the library walks a flow: newest run first (ts_epoch, run_number), then the
# run's steps in creation order (ts_epoch, name), task id, attempt, artifact name (byte order, as
# Python sorts: COLLATE "C", whatever the database's collation).
C_ = 'COLLATE "C"'


async def search_artifacts(ctx: Ctx, flow: str, q: Query) -> Answer:
    """Artifacts by name glob or prefix in a flow's newest runs, in walk order.

    The window is the newest `runs` runs matching since/until/tags/user, fixed on the first page
    (the cursor carries it). Each page says which runs and how many tasks it covered, up to the
    first hit after it (or the window's end), and which of those tasks have no artifact rows."""
    check_name("flow_id", flow)
    route = f"artifacts:{flow}"
    limit = q.limit(ARTIFACT_LIMITS)
    window = q.limit(ARTIFACT_WINDOW, "runs")
    name, prefix = q.raw("name"), q.raw("name_prefix")
    if (name is None) == (prefix is None):
        raise BadParam("name", "give exactly one of name (a glob: * ? [abc] [!abc]) or name_prefix", "e.g. name=model* or name_prefix=model")
    raw = name if name is not None else prefix
    assert raw is not None
    if not 1 <= len(raw) <= 255:
        raise BadParam("name" if name is not None else "name_prefix", "the name pattern must be 1 to 255 characters")
    if "\x00" in raw:
        raise BadParam("name" if name is not None else "name_prefix", "the name pattern contains a NUL character")
    if prefix is not None and any(ch in prefix for ch in "*?["):
        raise BadParam("name_prefix", "name_prefix is a plain prefix", "use name=<glob> for wildcards")
    include_private = q.boolean("include_private")
    attempts = (q.choices("attempts", ("latest", "all")) or ["latest"])
    if len(attempts) != 1:
        raise BadParam("attempts", "attempts is one of latest, all")
    # Position: the last hit's (run ts, run, step ts, step, task, attempt, name), then the window's oldest run (ts, run).
    cursor = decode_cursor(route, q, (int, int, int, str, int, int, str, int, int))

    p = S.Params()
    rw = _run_filters(p, flow, q)
    if cursor:
        rw.append(f"(r.ts_epoch, r.run_number) <= ({p(cursor[0], 'bigint')}, {p(cursor[1], 'int')})")
        rw.append(f"(r.ts_epoch, r.run_number) >= ({p(cursor[7], 'bigint')}, {p(cursor[8], 'int')})")
    runs = await ctx.conn.fetch(f"SELECT r.run_number, r.run_id, r.ts_epoch FROM runs_v3 r WHERE {' AND '.join(rw)} "
                                f"ORDER BY r.ts_epoch DESC, r.run_number DESC LIMIT {window}", *p.values)
    if not runs and not cursor and not await _flow_exists(ctx, flow):
        raise NotFoundError(f"flow {flow!r} not found", "flow names are case-sensitive; GET /agent/v1/flows lists them")
    oldest = (cursor[7], cursor[8]) if cursor else ((runs[-1]["ts_epoch"], runs[-1]["run_number"]) if runs else (0, 0))

    # The hits: per step (in walk order) its matching rows in (task, attempt, name) order, at most
    # limit + 1 of them, so a page reads no further than the step holding its last hit.
    p = S.Params()
    f = p(flow)
    run_numbers = p([r["run_number"] for r in runs], "bigint[]")
    name_where = _name_terms(p, raw, exact_prefix=prefix is not None, include_private=include_private)
    after_step = after_hit = ""
    if cursor:
        c_run, c_sts, c_step = p(cursor[1], "bigint"), p(cursor[2], "bigint"), p(cursor[3])
        c_task, c_att, c_name = p(cursor[4], "bigint"), p(cursor[5], "int"), p(cursor[6])
        after_step = (f"AND (w.run_number <> {c_run} OR s.ts_epoch > {c_sts} "
                      f"OR (s.ts_epoch = {c_sts} AND s.step_name {C_} >= {c_step}))")
        after_hit = (f"AND (ws.run_number <> {c_run} OR ws.step_name <> {c_step} OR (a.task_id, a.attempt_id) > ({c_task}, {c_att}) "
                     f"OR ((a.task_id, a.attempt_id) = ({c_task}, {c_att}) AND a.name {C_} > {c_name}))")
    # A correlated max() (one index probe per row), not NOT EXISTS: without statistics (a fresh
    # restore) the planner turned that into an anti join scanning a whole run per row.
    latest = ("AND a.attempt_id = (SELECT max(b.attempt_id) FROM artifact_v3 b WHERE b.flow_id = a.flow_id "
              "AND b.run_number = a.run_number AND b.step_name = a.step_name AND b.task_id = a.task_id)") if attempts == ["latest"] else ""
    steps_cte = f"""
      w AS (SELECT * FROM unnest({run_numbers}) WITH ORDINALITY AS w(run_number, ri)),
      ws AS (SELECT w.ri, w.run_number, s.step_name, s.ts_epoch AS sts
             FROM w JOIN steps_v3 s ON s.flow_id = {f} AND s.run_number = w.run_number AND s.step_name NOT LIKE '{S.HIDDEN_STEP}'
             {after_step})"""
    sql = f"""
      WITH {steps_cte}
      SELECT ws.ri, ws.run_number, ws.step_name, ws.sts, a.task_id, a.task_name, a.attempt_id, a.name, a.sha, a.type,
             a.content_type, a.location, a.ds_type, a.ts_epoch
      FROM ws CROSS JOIN LATERAL (
        SELECT a.* FROM artifact_v3 a
        WHERE a.flow_id = {f} AND a.run_number = ws.run_number AND a.step_name = ws.step_name AND {name_where} {after_hit} {latest}
          AND EXISTS (SELECT 1 FROM tasks_v3 t WHERE t.task_id = a.task_id)
        ORDER BY a.task_id, a.attempt_id, a.name {C_} LIMIT {limit + 1}) a
      ORDER BY ws.ri, ws.sts, ws.step_name {C_}, a.task_id, a.attempt_id, a.name {C_} LIMIT {limit + 1}"""
    try:
        rows = await ctx.conn.fetch(sql, *p.values)
    except asyncpg.InvalidRegularExpressionError as exc:
        raise BadParam("name", f"the glob is not a valid pattern: {str(exc)[:120]}", "use *, ? and classes like [a-z] or [!_]") from None

    # What the page covered: its tasks from the cursor's task (or the window's first) through the
    # task of the first hit after the page (or the window's end), and which have no artifact rows.
    more = len(rows) > limit
    stop = rows[limit] if more else None
    p2 = S.Params()
    f2 = p2(flow)
    conds = [f"t.flow_id = {f2}", "t.run_number = ws.run_number", "t.step_name = ws.step_name"]
    step_conds = []
    if cursor:
        c_run, c_sts, c_step, c_task = p2(cursor[1], "bigint"), p2(cursor[2], "bigint"), p2(cursor[3]), p2(cursor[4], "bigint")
        step_conds.append(f"(w.run_number <> {c_run} OR s.ts_epoch > {c_sts} OR (s.ts_epoch = {c_sts} AND s.step_name {C_} >= {c_step}))")
        conds.append(f"(ws.run_number <> {c_run} OR ws.step_name <> {c_step} OR t.task_id >= {c_task})")
    if stop is not None:
        s_ri, s_sts, s_step, s_task = p2(stop["ri"], "bigint"), p2(stop["sts"], "bigint"), p2(stop["step_name"]), p2(stop["task_id"], "bigint")
        step_conds.append(f"(w.ri < {s_ri} OR (w.ri = {s_ri} AND (s.ts_epoch < {s_sts} OR (s.ts_epoch = {s_sts} AND s.step_name {C_} <= {s_step}))))")
        conds.append(f"(ws.ri <> {s_ri} OR ws.step_name <> {s_step} OR t.task_id <= {s_task})")
    hit_tasks = {(r["ri"], r["step_name"], r["task_id"]) for r in rows[:limit]}
    h_ri, h_step, h_task = (p2([h[i] for h in hit_tasks], kind) for i, kind in ((0, "bigint[]"), (1, "text[]"), (2, "bigint[]")))
    count_sql = f"""
      WITH w AS (SELECT * FROM unnest({p2([r["run_number"] for r in runs], "bigint[]")}) WITH ORDINALITY AS w(run_number, ri)),
      ws AS (SELECT w.ri, w.run_number, s.step_name, s.ts_epoch AS sts
             FROM w JOIN steps_v3 s ON s.flow_id = {f2} AND s.run_number = w.run_number AND s.step_name NOT LIKE '{S.HIDDEN_STEP}'
             {''.join(' AND ' + c for c in step_conds)}),
      t AS MATERIALIZED (
        SELECT ws.ri, ws.sts, ws.step_name, t.task_id,
               NOT EXISTS (SELECT 1 FROM artifact_v3 a WHERE a.flow_id = {f2} AND a.run_number = ws.run_number
                           AND a.step_name = ws.step_name AND a.task_id = t.task_id) AS empty
        FROM ws JOIN tasks_v3 t ON {' AND '.join(conds)}),
      o AS (
        SELECT t.ri, t.step_name, t.task_id, (row_number() OVER k) - 1 AS before, (sum(t.empty::int) OVER k) - t.empty::int AS empty_before
        FROM t WINDOW k AS (ORDER BY t.ri, t.sts, t.step_name {C_}, t.task_id))
      SELECT (SELECT count(*) FROM t) AS tasks, (SELECT count(*) FROM t WHERE t.empty) AS empty,
             (SELECT jsonb_agg(jsonb_build_array(o.ri, o.step_name, o.task_id, o.before, o.empty_before))
              FROM o JOIN unnest({h_ri}, {h_step}, {h_task}) AS h(ri, step_name, task_id)
                ON o.ri = h.ri AND o.step_name = h.step_name AND o.task_id = h.task_id) AS marks"""
    cover = await ctx.conn.fetchrow(count_sql, *p2.values)
    marks = {(m[0], m[1], m[2]): (m[3], m[4]) for m in cover["marks"] or []}
    last_ri = stop["ri"] if stop is not None else len(runs)
    nxt = None
    if more:
        last = rows[limit - 1]
        nxt = encode_cursor(route, q, [runs[last["ri"] - 1]["ts_epoch"], last["run_number"], last["sts"], last["step_name"],
                                       last["task_id"], last["attempt_id"], last["name"], *oldest])
    data = []
    for r in rows[:limit]:
        run_id = str(runs[r["ri"] - 1]["run_id"] if runs[r["ri"] - 1]["run_id"] is not None else r["run_number"])
        tid = r["task_name"] if r["task_name"] is not None else r["task_id"]
        before, empty_before = marks.get((r["ri"], r["step_name"], r["task_id"]), (None, None))
        data.append({
            "pathspec": f"{flow}/{run_id}/{r['step_name']}/{tid}/{r['name']}",
            "name": r["name"], "run_number": r["run_number"], "step": r["step_name"], "task_id": r["task_id"],
            "attempt": r["attempt_id"], "sha": r["sha"], "type": r["type"], "content_type": r["content_type"],
            "location": r["location"], "ds_type": r["ds_type"], "created_ms": r["ts_epoch"],
            "tasks_before": before, "empty_tasks_before": empty_before,
        })
    body = {
        "flow_id": flow, "data": data, "page": _page(limit, nxt, scanned=int(cover["tasks"])),
        "runs_searched": [r["run_number"] for r in runs[:last_ri]],
        "tasks_without_artifacts": int(cover["empty"]),
        "window": {"runs": window, "oldest_ms": oldest[0] if runs or cursor else None},
        "pattern": {"like": _like_of(raw, prefix is not None), "attempts": attempts[0], "include_private": include_private},
    }
    return Answer(body, limit, nxt)


def _like_of(raw: str, prefix: bool) -> str:
    return glob_to_like(raw) + "%" if prefix else glob_to_like(raw)


def _name_terms(p: S.Params, raw: str, *, exact_prefix: bool, include_private: bool) -> str:
    """WHERE terms (alias a) for the name: `=` for a plain name (an index seek), LIKE for `*` `?` and
    prefixes, plus an anchored regular expression where the glob has a class (LIKE cannot say [a-c])."""
    terms = []
    like = _like_of(raw, exact_prefix)
    if not exact_prefix and not any(kind != "lit" for kind, _ in parse_glob(raw)):
        terms.append(f"a.name = {p(raw)}")
    else:
        terms.append(f"a.name LIKE {p(like)}")
        if glob_has_class(raw):
            terms.append(f"a.name ~ {p(glob_to_regex(raw))}")
    if not include_private:
        terms.append(r"a.name NOT LIKE '\_%'")  # Metaflow's own artifacts
    return " AND ".join(terms)
