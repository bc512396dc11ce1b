"""Client-side plans over the metadata service's own routes (master).

Each plan sends, in order, the requests `metaflow_agent` (or the cheapest correct client code)
would send for the question, and runs the SQL master runs for each of them (`master_sql`) on the
same database, timing every statement. The sum is the plan's server time: a lower bound on what
the metadata service spends, since its HTTP and JSON work per request is not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import master_sql as M

MAX_PAGE = 500  # master's cap on _limit
ALL_STATUSES = ["running", "completed", "failed"]


@dataclass
class Timed:
    """Runs statements on one connection and keeps each one's wall time (seconds)."""

    conn: asyncpg.Connection
    times: list[float] = field(default_factory=list)
    routes: dict[str, int] = field(default_factory=dict)

    async def __call__(self, route: str, stmt: M.Statement) -> list[asyncpg.Record]:
        sql, args = stmt
        started = time.perf_counter()
        rows = await self.conn.fetch(sql, *args)
        self.times.append(time.perf_counter() - started)
        self.routes[route] = self.routes.get(route, 0) + 1
        return rows


async def _pages(t: Timed, route: str, make: Any, key: Any, *, limit: int, max_rows: int | None = None) -> list[asyncpg.Record]:
    """Follow master's cursor to the end or `max_rows`."""
    out: list[asyncpg.Record] = []
    cursor = None
    while True:
        rows = await t(route, make(limit, cursor))
        more = len(rows) > limit
        out += rows[:limit]
        if not more or (max_rows is not None and len(out) >= max_rows):
            return out
        cursor = key(rows[limit - 1])


async def outcome_sets(t: Timed, flow: str, run: int) -> dict[str, Any]:
    """`failed_tasks` / `run_summary` today: the run, its steps, three `filtered_tasks` per step,
    and the metadata of each task that failed an attempt and then succeeded."""
    await t("GET run", M.get_run(flow, run))
    steps = [r["step_name"] for r in await t("GET steps", M.get_steps(flow, run)) if r["step_name"] != "_parameters"]
    failed: list[tuple[str, int]] = []
    retried: list[tuple[str, int]] = []
    for step in steps:
        ok = {r["task_id"] for r in await t("GET filtered_tasks", M.filtered_tasks(flow, run, step, "attempt_ok", "True"))}
        bad = {r["task_id"] for r in await t("GET filtered_tasks", M.filtered_tasks(flow, run, step, "attempt_ok", "False"))}
        await t("GET filtered_tasks", M.filtered_tasks(flow, run, step, "attempt", "."))
        failed += [(step, x) for x in sorted(bad - ok)]
        retried += [(step, x) for x in sorted(bad & ok)]
    for step, task in retried:
        await t("GET task metadata", M.task_metadata(flow, run, step, task))
    return {"failed": len(failed), "steps": len(steps)}


async def runs_with_finish(t: Timed, flow: str, *, limit: int, statuses: list[str] | None = None,
                           since_ms: int | None = None, until_ms: int | None = None) -> dict[str, Any]:
    """Runs with status, and each finished run's finish time.

    Master derives the status when a status filter is sent; per finished run, its last
    metadata row (`runs/{r}/metadata?_limit=1`, newest first) gives the finish time."""
    rows = await _pages(
        t, "GET runs (status filter)",
        lambda lim, cur: M.runs_page(flow, limit=lim, statuses=statuses or ALL_STATUSES, since_ms=since_ms, until_ms=until_ms, cursor=cur),
        lambda r: (r["ts_epoch"], r["run_number"]), limit=min(limit, MAX_PAGE), max_rows=limit)
    rows = rows[:limit]
    for r in rows:
        if r["status"] != "running":
            await t("GET run metadata ?_limit=1", M.run_metadata_page(flow, r["run_number"], limit=1))
    return {"runs": len(rows)}


async def run_stats(t: Timed, flows: list[str], *, since_ms: int | None = None, durations: bool = True) -> dict[str, Any]:
    """Counts by status over every run, optionally with durations.

    A status-filtered listing, 500 a page; with `durations`, the finish time of each completed
    run (one request each)."""
    counts: dict[str, int] = {}
    examined = 0
    for flow in flows:
        rows = await _pages(
            t, "GET runs (status filter)",
            lambda lim, cur, f=flow: M.runs_page(f, limit=lim, statuses=ALL_STATUSES, since_ms=since_ms, cursor=cur),
            lambda r: (r["ts_epoch"], r["run_number"]), limit=MAX_PAGE)
        examined += len(rows)
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
            if durations and r["status"] == "completed":
                await t("GET run metadata ?_limit=1", M.run_metadata_page(flow, r["run_number"], limit=1))
    return {"runs_examined": examined, "counts": counts}


async def flows_latest(t: Timed) -> dict[str, Any]:
    """Flows, and per flow its newest run with status and finish."""
    flows = await _pages(t, "GET flows", lambda lim, cur: M.flows_page(limit=lim, cursor=cur),
                         lambda r: (r["ts_epoch"], r["flow_id"]), limit=50)
    for f in flows:
        rows = await t("GET runs (status filter)", M.runs_page(f["flow_id"], limit=1, statuses=ALL_STATUSES))
        if rows and rows[0]["status"] != "running":
            await t("GET run metadata ?_limit=1", M.run_metadata_page(f["flow_id"], rows[0]["run_number"], limit=1))
    return {"flows": len(flows)}


async def artifact_search(t: Timed, flow: str, *, match: Any, runs: int, want: int) -> dict[str, Any]:
    """Artifact records of the newest runs, matched client-side.

    Each run's list, 500 a page, run by run until `want` hits."""
    listing = await t("GET runs", M.runs_page(flow, limit=runs))
    hits = 0
    for r in listing[:runs]:
        rows = await _pages(t, "GET run artifacts", lambda lim, cur, n=r["run_number"]: M.run_artifacts_page(flow, n, limit=lim, cursor=cur),
                            lambda a: (a["ts_epoch"], a["task_id"], a["name"]), limit=MAX_PAGE)
        hits += sum(1 for a in rows if match(a["name"]))
        if hits >= want:
            break
    return {"hits": hits}
