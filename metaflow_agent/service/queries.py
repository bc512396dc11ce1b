"""Bounded query plans against the metadata service, for both generations.

Where the service filters and paginates (detected), filters are pushed down
and cursors followed only as far as the limit needs. Where it does not, the
cheapest correct plan runs with an explicit budget: one unfiltered listing,
`filtered_tasks` on `attempt_ok` per step, and per-run status checks that
stop at the budget and say so. A response is never trusted as filtered
unless the service proved it filters (rows are re-checked client-side).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .._cost import current_meter
from .._errors import BackendError, NotFound, ServiceProtocolError
from ..backends.base import (
    HEARTBEAT_TIMEOUT_S,
    RunQuery,
    RunRecord,
    RunScan,
    StepOutcomes,
    TaskDetail,
    run_sort_key,
    scan_records,
)
from ..backends.local import detail_from_rows
from .capabilities import ServiceCaps, detect
from .transport import Reply, ServiceTransport, encode_query

StatusFn = Callable[[RunRecord], tuple[str, "int | None"]]
MAX_PAGE = 500  # master's cap on _limit
MAX_PAGES = 200  # safety bound on cursor following
FALLBACK_TASKS = 200  # per-task metadata scans allowed without filtered_tasks


def _ids(body: Any, key: str) -> list[str]:
    return [str(row[key]) for row in body or [] if isinstance(row, dict) and key in row]


def rows_of(reply: Reply, what: str) -> list[Any]:
    """A list body, or ServiceProtocolError when the service sent something else."""
    if reply.body is None:
        return []
    if not isinstance(reply.body, list):
        raise ServiceProtocolError(f"metadata service sent {type(reply.body).__name__} for {what}, expected a list", hint="the service or a proxy in front of it is misbehaving")
    return reply.body


def object_of(reply: Reply, what: str) -> dict[str, Any]:
    if not isinstance(reply.body, dict):
        raise ServiceProtocolError(f"metadata service sent {type(reply.body).__name__} for {what}, expected an object", hint="the service or a proxy in front of it is misbehaving")
    return reply.body


class ServiceQueries:
    """The provider's query methods, bound to one service URL."""

    def __init__(self, transport: ServiceTransport) -> None:
        self.t = transport

    @property
    def caps(self) -> ServiceCaps:
        return detect(self.t)

    # --- plumbing --------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any] | None = None, *, ok404: bool = False) -> Reply:
        """GET with a per-query memo: the same request twice in one query is sent once."""
        memo = current_meter().memo
        key = (path, encode_query(params), ok404)
        if key not in memo:
            memo[key] = self.t.get(path, params, ok404=ok404)
        return memo[key]

    def _pages(self, path: str, params: dict[str, Any], *, want: int) -> tuple[list[Any], bool]:
        """Follow X-Next-Cursor until `want` rows or the end; (rows, more_on_server)."""
        rows: list[Any] = []
        params = dict(params)
        for _ in range(MAX_PAGES):
            reply = self._get(path, params)
            page = rows_of(reply, path)
            rows += page
            headers = {k.lower(): v for k, v in reply.headers.items()}
            nxt = headers.get("x-next-cursor")
            if not nxt:
                return rows, False
            if len(rows) >= want:
                return rows, True
            params["_cursor"] = nxt
        return rows, True

    # --- flows and runs ----------------------------------------------------------
    def check_flow(self, flow: str) -> None:
        reply = self._get(f"/flows/{flow}", ok404=True)
        if reply.status == 404:
            raise NotFound(f"flow {flow!r} not found on the metadata service", hint="check the flow name's capitalisation; list_runs needs a flow that has run")

    @staticmethod
    def _record(flow: str, row: dict[str, Any]) -> RunRecord:
        system_tags = row.get("system_tags") or []
        user = row.get("user") or row.get("user_name") or next((t[5:] for t in system_tags if t.startswith("user:")), None)
        rec = RunRecord(
            flow,
            str(row.get("run_number")),
            int(row.get("ts_epoch") or 0),
            user,
            list(row.get("tags") or []),
            list(system_tags),
            float(row["last_heartbeat_ts"]) if row.get("last_heartbeat_ts") is not None else None,
        )
        status = row.get("status")
        if status in ("running", "completed", "failed"):
            rec.status = status
        return rec

    def get_run(self, flow: str, run_id: str) -> RunRecord:
        reply = self._get(f"/flows/{flow}/runs/{run_id}", ok404=True)
        if reply.status == 404:
            self.check_flow(flow)
            raise NotFound(f"run {flow}/{run_id} not found", hint=f"list_runs(flow='{flow}') shows recent runs")
        return self._record(flow, object_of(reply, f"run {flow}/{run_id}"))

    def scan_runs(self, flow: str, query: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, status_fn: StatusFn | None = None) -> RunScan:
        """`status_fn(run)` decides a run's (status, finished_ms) where the service did not."""
        status_fn = status_fn or self.quick_or_heartbeat
        if self.caps.filters:
            scan = self._scan_runs_server(flow, query, limit, after, server_cursor, status_fn, budget)
        else:
            scan = self._scan_runs_client(flow, query, limit, after, budget, status_fn)
        if not scan.runs and scan.scanned == 0:
            self.check_flow(flow)
        return scan

    def _scan_runs_server(self, flow: str, q: RunQuery, limit: int, after: tuple[int, str] | None, server_cursor: str | None,
                          status_fn: StatusFn, budget: int) -> RunScan:
        # A status filter makes master attach its derived status to every row (all
        # three values select every run). Master calls a run "running" until its
        # heartbeat goes stale; a fresh run may already have failed for good, so
        # "failed" also asks for running rows, and fresh rows are re-derived here.
        wanted = {None: "running,completed,failed", "failed": "running,failed"}.get(q.status, q.status)
        params: dict[str, Any] = {
            "status:eq": wanted,
            "_limit": min(limit, MAX_PAGE),
        }
        if server_cursor:
            after = None  # the service's cursor already says where to resume
        until = q.until_ms if after is None else min(q.until_ms or after[0], after[0])
        if q.since_ms is not None:
            params["ts_epoch:ge"] = q.since_ms
        if until is not None:
            params["ts_epoch:le"] = until
        if q.user:
            params["user:eq"] = q.user
        if q.tags_any:
            params["_tags:any"] = list(q.tags_any)
        if q.tags_all:
            params["_tags:all"] = list(q.tags_all)
        scan = RunScan(runs=[], more=False, notes=["service filters: status/time/user/tags pushed down, cursors followed"])
        checks = 0
        path = f"/flows/{flow}/runs"
        if server_cursor:
            params["_cursor"] = server_cursor
        for _ in range(MAX_PAGES):
            reply = self._get(path, params)
            rows = rows_of(reply, path)
            nxt = {k.lower(): v for k, v in reply.headers.items()}.get("x-next-cursor")
            for i, row in enumerate(rows):
                rec = self._record(flow, row)
                scan.scanned += 1
                if after is not None and run_sort_key(rec.ts_ms, rec.run_id) >= run_sort_key(*after):
                    continue
                if not q.matches_static(rec):  # never trust a filter blindly
                    continue
                if rec.status is None or self._fresh(rec.last_heartbeat_s):
                    if checks >= budget:
                        scan.more, scan.complete = True, False
                        scan.notes.append(f"status budget of {budget} runs reached; continue with next_cursor")
                        return scan
                    checks += 1
                    rec.status, rec.finished_ms = status_fn(rec)
                else:
                    rec.finished_ms = int(rec.last_heartbeat_s * 1000) if rec.last_heartbeat_s else None
                scan.resume_after = (rec.ts_ms, rec.run_id)
                if q.status is not None and rec.status != q.status:
                    continue
                if len(scan.runs) == limit:
                    scan.more = True
                    return scan
                scan.runs.append(rec)
                if len(scan.runs) == limit and i == len(rows) - 1:
                    # The page ended on the service's own boundary: resume from its cursor.
                    scan.more, scan.server_cursor = bool(nxt), nxt
                    return scan
            if not nxt:
                return scan
            params = {**params, "_cursor": nxt}
        scan.more, scan.complete = True, False
        return scan

    def _scan_runs_client(self, flow: str, q: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                          status_fn: StatusFn) -> RunScan:
        rows = rows_of(self._get(f"/flows/{flow}/runs"), f"runs of {flow}")
        note = f"service does not filter: listed all {len(rows)} runs once, filtered client-side"
        return scan_records([self._record(flow, r) for r in rows], q, limit, after, budget, status_fn, note)

    # --- status --------------------------------------------------------------------
    @staticmethod
    def _fresh(heartbeat_s: float | None) -> bool:
        return heartbeat_s is not None and time.time() - heartbeat_s < HEARTBEAT_TIMEOUT_S

    def quick_status(self, run: RunRecord) -> tuple[str, int | None] | None:
        """Completed when the end step succeeded; failed when the heartbeat is stale
        (master's own rule); None while the run is fresh and not done (assess it)."""
        finished = int(run.last_heartbeat_s * 1000) if run.last_heartbeat_s else None
        if self.filtered_tasks(run.flow, run.run_id, "end", "attempt_ok", "True"):
            return "completed", finished
        if not self._fresh(run.last_heartbeat_s):
            return "failed", finished
        return None

    def quick_or_heartbeat(self, run: RunRecord) -> tuple[str, int | None]:
        return self.quick_status(run) or ("running", None)

    def task_heartbeat(self, flow: str, run_id: str, step: str, task: str) -> float | None:
        reply = self._get(f"/flows/{flow}/runs/{run_id}/steps/{step}/tasks/{task}", ok404=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        value = body.get("last_heartbeat_ts")
        return float(value) if value is not None else None

    # --- steps and tasks -------------------------------------------------------------
    def list_steps(self, flow: str, run_id: str) -> list[str]:
        rows = rows_of(self._get(f"/flows/{flow}/runs/{run_id}/steps"), f"steps of {flow}/{run_id}")
        if not rows:
            self.get_run(flow, run_id)
        rows = sorted((r for r in rows if r.get("step_name") != "_parameters"), key=lambda r: (r.get("ts_epoch") or 0, r.get("step_name")))
        return [r["step_name"] for r in rows]

    def list_tasks(self, flow: str, run_id: str, step: str) -> list[str]:
        return _ids(rows_of(self._get(f"/flows/{flow}/runs/{run_id}/steps/{step}/tasks"), f"tasks of {step}"), "task_id")

    def filtered_tasks(self, flow: str, run_id: str, step: str, field: str, pattern: str) -> set[str]:
        """Task ids of a step whose metadata `field` matches `pattern` (one request)."""
        path = f"/flows/{flow}/runs/{run_id}/steps/{step}/filtered_tasks"
        if self.caps.filtered_tasks is not False:
            reply = self._get(path, {"metadata_field_name": field, "pattern": pattern}, ok404=True)
            if reply.status != 404 or isinstance(reply.body, dict):
                self.caps.filtered_tasks = True
                return {str(p).rsplit("/", 1)[-1] for p in rows_of(reply, path)} if reply.status != 404 else set()
            self.caps.filtered_tasks = False
            self.caps.notes.append("filtered_tasks route missing (service < 2.5.0): per-task metadata fallback")
        import re

        rx = re.compile(pattern)
        tasks = self.list_tasks(flow, run_id, step)
        if len(tasks) > FALLBACK_TASKS:
            raise BackendError(
                f"this metadata service has no filtered_tasks route (< 2.5.0) and step {step} has {len(tasks)} tasks",
                hint=f"upgrade the service to 2.5.0 or later; without it, steps over {FALLBACK_TASKS} tasks are not scanned task by task",
            )
        hits = set()
        for task in tasks:
            rows = rows_of(self._get(f"/flows/{flow}/runs/{run_id}/steps/{step}/tasks/{task}/metadata"), "task metadata")
            if any(r.get("field_name") == field and rx.search(str(r.get("value"))) for r in rows):
                hits.add(task)
        return hits

    def step_outcomes(self, flow: str, run_id: str, steps: list[str], *, started: bool = True) -> list[StepOutcomes]:
        """Per step: tasks with attempt_ok True, with attempt_ok False, and (optionally) started.
        Three filtered_tasks requests per step, whatever the number of tasks."""
        out = []
        for step in steps:
            ok = self.filtered_tasks(flow, run_id, step, "attempt_ok", "True")
            failed = self.filtered_tasks(flow, run_id, step, "attempt_ok", "False")
            begun = self.filtered_tasks(flow, run_id, step, "attempt", ".") if started else set()
            out.append(StepOutcomes(step, begun | ok | failed, ok, failed))
        return out

    def check_task(self, flow: str, run_id: str, step: str, task: str) -> None:
        reply = self._get(f"/flows/{flow}/runs/{run_id}/steps/{step}/tasks/{task}", ok404=True)
        if reply.status == 404:
            self.get_run(flow, run_id)
            step_reply = self._get(f"/flows/{flow}/runs/{run_id}/steps/{step}", ok404=True)
            if step_reply.status == 404:
                raise NotFound(f"step {flow}/{run_id}/{step} not found", hint=f"run_summary(run='{flow}/{run_id}') lists the steps")
            raise NotFound(f"task {flow}/{run_id}/{step}/{task} not found", hint=f"failed_tasks(run='{flow}/{run_id}') or run_summary list its tasks")

    def task_detail(self, flow: str, run_id: str, step: str, task: str) -> TaskDetail:
        path = f"/flows/{flow}/runs/{run_id}/steps/{step}/tasks/{task}/metadata"
        reply = self._get(path, ok404=True)
        if reply.status == 404:
            self.check_task(flow, run_id, step, task)
        rows = reply.body if isinstance(reply.body, list) else []
        if not rows:
            self.check_task(flow, run_id, step, task)
        detail = detail_from_rows(rows)
        if isinstance(detail.foreach_index, str):
            detail.foreach_index = detail.foreach_index.strip("{}[]'\"") or None
        return detail

    def artifacts(self, flow: str, run_id: str, step: str | None = None, task: str | None = None,
                  *, limit: int = 5000) -> tuple[list[dict[str, Any]], bool]:
        """Artifact records of a task, a step or a whole run: (at most `limit` rows, complete).

        Master pages with cursors as far as the limit needs; 2.5.1 sends the whole
        list in one response, which is then cut to the limit."""
        path = f"/flows/{flow}/runs/{run_id}"
        if step:
            path += f"/steps/{step}"
        if task:
            path += f"/tasks/{task}"
        return self._bounded(path + "/artifacts", limit)

    def run_metadata(self, flow: str, run_id: str, *, limit: int = 20000) -> tuple[list[dict[str, Any]], bool]:
        """Metadata rows of every task of a run, from the run-level route: (rows, complete)."""
        return self._bounded(f"/flows/{flow}/runs/{run_id}/metadata", limit)

    def _bounded(self, path: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        if self.caps.cursors:
            rows, more = self._pages(path, {"_limit": min(limit, MAX_PAGE)}, want=limit)
        else:
            rows, more = rows_of(self._get(path), path), False
        return rows[:limit], not more and len(rows) <= limit
