"""The service engine: bounded query plans against the metadata service, both generations.

`ServiceQueries` is the metadata backend for a service deployment (the sibling of
`metaflow_agent.backends.local.LocalMetadata`), bound to one URL. Where the service filters
and paginates (detected), filters are pushed down and cursors followed only as far as the
limit needs. Where it does not, the cheapest correct plan runs with an explicit budget: one
unfiltered listing, `filtered_tasks` on `attempt_ok` per step, and per-run status checks that
stop at the budget and say so. A response is never trusted as filtered unless the service
proved it filters (rows are re-checked client-side).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterator

from metaflow_agent import _config
from metaflow_agent._cost import current_meter
from metaflow_agent._errors import BackendError, NotFound, ServiceProtocolError
from metaflow_agent._pathspec import Pathspec, not_found
from metaflow_agent._records import (
    DecidedFlow,
    DecidedStats,
    DecidedSummary,
    DecidedTasks,
    FailureLook,
    Listed,
    NameHitPage,
    RunQuery,
    RunRecord,
    RunScan,
    StepOutcomes,
    TaskDetail,
    attempt_of,
    detail_from_rows,
    run_sort_key,
    scan_runs,
    task_order,
)
from metaflow_agent._roots import DataRoot
from metaflow_agent._states import ALIVE_WITHIN_S, DEAD_AFTER_S, Fact, heartbeat_liveness
from metaflow_agent.backends.base import Decide, MetadataBackend

from .capabilities import ServiceCaps, detect
from .query_service import QueryService, discover
from .transport import Reply, ServiceTransport, encode_query

MAX_PAGE = 500  # master's cap on _limit
MAX_PAGES = 200  # safety bound on cursor following
FALLBACK_TASKS = 200  # per-task metadata scans allowed without filtered_tasks
SHORT_RUN_S = 30  # a heartbeat this close to a run's start cannot date its end
EXACT_TIMES_TASKS = 100  # runs up to this many tasks are timed from their own metadata rows
SMALL_STEP_TASKS = 3  # in larger runs, steps of at most this many tasks are dated from their tasks' rows
RECENT_ROWS = 50  # newest metadata rows of a run read to date its end and spot its failure
RECENT_LOOKUPS = 20  # runs per call whose newest metadata rows are read
RUN_ROOTS_KEPT = 4096  # runs whose recorded datastore root is remembered per process


def rows_of(reply: Reply, what: str, need: str | None = None, *, item: type = dict) -> list[Any]:
    """A list body whose items are all `item`s (with key `need`); ServiceProtocolError otherwise.

    The service answers every list route with a JSON list, `[]` when empty: a null or
    empty body, or rows of another shape, mean something between us and the database is
    wrong, and reading them as "no rows" would be a silent wrong answer.
    """
    body = reply.body
    if not isinstance(body, list):
        sent = "an empty body" if body is None else f"a {type(body).__name__}"
        raise ServiceProtocolError(f"metadata service sent {sent} for {what}, expected a list", hint=_MISBEHAVING)
    for row in body:
        if not isinstance(row, item) or (need is not None and not (isinstance(row, dict) and need in row)):
            shown = type(row).__name__ if not isinstance(row, dict) else f"a row without {need!r}"
            raise ServiceProtocolError(f"metadata service sent {shown} in {what}", hint=_MISBEHAVING)
    return body


_MISBEHAVING = "the service or a proxy in front of it is misbehaving; retry, then check the service logs"


def object_of(reply: Reply, what: str) -> dict[str, Any]:
    if not isinstance(reply.body, dict):
        raise ServiceProtocolError(f"metadata service sent {type(reply.body).__name__} for {what}, expected an object", hint=_MISBEHAVING)
    return reply.body


def _path(ps: Pathspec) -> str:
    """The service route of a flow, run, step or task."""
    out = f"/flows/{ps.flow}"
    if ps.run:
        out += f"/runs/{ps.run}"
    if ps.step:
        out += f"/steps/{ps.step}"
    if ps.task:
        out += f"/tasks/{ps.task}"
    return out


def _heartbeat_ms(run: RunRecord) -> int | None:
    return int(run.last_heartbeat_s * 1000) if run.last_heartbeat_s else None


class ServiceQueries(MetadataBackend):
    """The metadata backend of one metadata service URL: typed records in and out."""

    kind = "service"
    liveness_lags = True
    records_roots = True

    def __init__(self, transport: ServiceTransport) -> None:
        self.t = transport
        self.url = transport.url
        self._qs: QueryService | None = None
        self._qs_note: str | None = None  # None: not looked for yet
        # A run's `_parameters` artifacts are written once, when it starts: their root never
        # changes, so it is remembered across calls (runs with none are asked again).
        self._run_roots: OrderedDict[tuple[str, str], DataRoot] = OrderedDict()
        # The root a flow's runs recorded, learned from one of them: it stands in for the others'
        # until one of their tasks is missing there (a datastore root holds a pathspec once).
        self._flow_roots: OrderedDict[str, DataRoot] = OrderedDict()
        self._roots_lock = threading.Lock()

    @property
    def qs(self) -> QueryService | None:
        """The query service beside this metadata service, looked for once (see `query_service`)."""
        if self._qs_note is None:
            self._qs, self._qs_note = discover(self.url, self.t.headers)
        return self._qs

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
            rows += rows_of(reply, path)
            nxt = reply.header("x-next-cursor")
            if not nxt:
                return rows, False
            if len(rows) >= want:
                return rows, True
            params["_cursor"] = nxt
        return rows, True

    @staticmethod
    def _liveness(heartbeat_s: float | None) -> Fact:
        return heartbeat_liveness(None if heartbeat_s is None else _config.now_s() - heartbeat_s)

    # --- flows and runs ----------------------------------------------------------
    def list_flows(self) -> list[str]:
        if self.caps.cursors:
            rows, _ = self._pages("/flows", {"_limit": MAX_PAGE}, want=MAX_PAGE * MAX_PAGES)
        else:
            rows = rows_of(self._get("/flows"), "flows", "flow_id")
        return sorted({str(r["flow_id"]) for r in rows if isinstance(r, dict) and r.get("flow_id")})

    def check_flow(self, flow: str) -> None:
        if self._get(f"/flows/{flow}", ok404=True).status == 404:
            raise not_found(Pathspec(flow), "on the metadata service")

    def get_run(self, run: Pathspec) -> RunRecord:
        reply = self._get(_path(run), ok404=True)
        if reply.status == 404:
            self.check_flow(run.flow)
            raise not_found(run)
        return RunRecord.from_row(run.flow, object_of(reply, f"run {run}"))

    def scan_runs(self, flow: str, query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, decide: Decide | None = None) -> RunScan:
        if self.qs is not None:
            if after is not None and server_cursor is None:  # a cursor from before the service was found
                query = RunQuery(query.status, query.since_ms, min(query.until_ms or after[0], after[0]), query.tags_any, query.tags_all, query.user)
            scan = self.qs.runs(flow, query, limit=limit, cursor=server_cursor)
            if after is not None and server_cursor is None:
                scan.runs = [r for r in scan.runs if r.sort_key < run_sort_key(*after)]
            if not scan.runs and not scan.more:
                self.check_flow(flow)
            return scan
        if self.caps.filters:
            scan = self._scan_server(flow, query, limit, after, budget, server_cursor, decide)
        else:
            rows = rows_of(self._get(f"/flows/{flow}/runs"), f"runs of {flow}", "run_number")
            records = sorted((RunRecord.from_row(flow, r) for r in rows if isinstance(r, dict)),
                             key=lambda r: run_sort_key(r.ts_ms, r.run_id), reverse=True)

            def settle(rec: RunRecord) -> None:
                if decide is not None:
                    decide(rec)

            note = f"service does not filter: listed all {len(rows)} runs once, filtered client-side"
            scan = scan_runs((Listed(r) for r in records), query, limit=limit, after=after, budget=budget,
                             needs_check=lambda r: decide is not None, settle=settle, note=note)
        if not scan.runs and scan.scanned == 0:
            self.check_flow(flow)
        return scan

    def _scan_server(self, flow: str, q: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                     server_cursor: str | None, decide: Decide | None) -> RunScan:
        # A status filter makes master attach its derived status to every row (all
        # three values select every run). Master calls a run "running" until its
        # heartbeat goes stale; a fresh run may already have failed for good, so
        # "failed" also asks for running rows, and fresh rows are re-derived here,
        # at most `fresh_run_checks` of them per listing.
        # Master's derived status: completed (end ok), running (heartbeat within 360 s), else
        # failed. Ours splits its running (alive, or late: unknown/failed) and its failed
        # (failed, crashed, unknown without heartbeat), so ask for every row ours could be.
        wanted = {None: "running,completed,failed", "running": "running", "completed": "completed"}.get(q.status, "running,failed")
        params: dict[str, Any] = {"status:eq": wanted, "_limit": min(limit, MAX_PAGE)}
        if server_cursor:
            after = None  # the service's cursor already says where to resume
            params["_cursor"] = server_cursor
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
        path = f"/flows/{flow}/runs"

        pages_left = [MAX_PAGES]
        last_cursor = [""]

        def listed() -> Iterator[Listed]:
            page = dict(params)
            while pages_left[0] > 0:
                pages_left[0] -= 1
                reply = self._get(path, page)
                rows = rows_of(reply, path, "run_number")
                nxt = reply.header("x-next-cursor") or ""
                for i, row in enumerate(rows):
                    yield Listed(RunRecord.from_row(flow, row), nxt if i == len(rows) - 1 else None)
                if not nxt:
                    pages_left[0] = -1  # the listing ended
                    return
                page = {**page, "_cursor": nxt}
                last_cursor[0] = nxt

        def needs_check(rec: RunRecord) -> bool:
            """Settling costs requests unless master already decided (end ok) or the run is alive."""
            return decide is not None and not (rec.service_status == "completed" or self._liveness(rec.last_heartbeat_s) is True)

        late: list[str] = []  # runs master calls running whose heartbeat is late
        bound = _config.default("fresh_run_checks")

        def settle(rec: RunRecord) -> None:
            if decide is None:
                return
            if rec.service_status == "running" and needs_check(rec):
                if len(late) >= bound:
                    late.append(rec.run_id)
                    rec.status = "unknown"  # not re-derived: its heartbeat is late, nothing else was checked
                    return
                late.append(rec.run_id)
            decide(rec)

        scan = scan_runs(listed(), q, limit=limit, after=after, budget=budget, needs_check=needs_check,
                         settle=settle, note="service filters: status/time/user/tags pushed down, cursors followed")
        if pages_left[0] == 0 and not scan.more:  # stopped by the page bound, not by the listing's end
            scan.more, scan.complete, scan.server_cursor = True, False, last_cursor[0]
            scan.notes.append(f"stopped after {MAX_PAGES} pages of runs; continue with next_cursor")
        if len(late) > bound:
            scan.complete = False
            scan.notes.append(f"{len(late) - bound} runs with a heartbeat {ALIVE_WITHIN_S}-{DEAD_AFTER_S} s old "
                              f"were not re-derived (bound {bound} per call, METAFLOW_AGENT_FRESH_RUN_CHECKS): shown as unknown")
        return scan

    # --- outcomes and liveness ------------------------------------------------------
    def end_outcome(self, run: RunRecord) -> tuple[bool | None, int | None]:
        """(True, None) when the end step succeeded: when it did is `finished_ms`'s to say."""
        return (True, None) if self.filtered_tasks(run.pathspec.child("end"), "attempt_ok", "True") else (None, None)

    def run_liveness(self, run: RunRecord) -> Fact:
        return self._liveness(run.last_heartbeat_s)

    def task_liveness(self, task: Pathspec) -> Fact:
        reply = self._get(_path(task), ok404=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        value = body.get("last_heartbeat_ts")
        return self._liveness(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None)

    @staticmethod
    def _spend_recent(run: RunRecord) -> bool:
        """Whether this call may still look at one more run's own rows (RECENT_LOOKUPS a call)."""
        memo = current_meter().memo
        key = ("recent", run.flow, run.run_id)
        if key in memo:
            return True
        if sum(1 for k in memo if k[0] == "recent") >= RECENT_LOOKUPS:
            return False
        memo[key] = None
        return True

    def _recent(self, run: RunRecord) -> list[dict[str, Any]] | None:
        """The run's newest metadata rows (master orders them newest first); None where the
        service cannot page them or this call already read its share."""
        if not self.caps.cursors:
            return None
        memo = current_meter().memo
        key = ("recent", run.flow, run.run_id)
        if memo.get(key) is None:
            if key not in memo and not self._spend_recent(run):
                return None
            reply = self._get(_path(run.pathspec) + "/metadata", {"_limit": RECENT_ROWS})
            memo[key] = [r for r in rows_of(reply, "run metadata", "field_name") if isinstance(r.get("ts_epoch"), int)]
        found: list[dict[str, Any]] = memo[key]
        return found

    def failure_look(self, run: RunRecord) -> FailureLook | None:
        """A run stops right after a task fails for good: its newest rows then hold that task's
        attempt_ok False, with no later attempt of the same task (one request, master only).
        Fewer rows than asked for is every row of the run: the look is then a proof."""
        rows = self._recent(run)
        if rows is None:
            return None
        latest: dict[tuple[str, str], tuple[int, bool | None]] = {}
        for r in sorted(rows, key=lambda r: (r["ts_epoch"], r.get("id") or 0)):
            task, attempt = (str(r.get("step_name")), str(r.get("task_id"))), attempt_of(r)
            if r.get("field_name") == "attempt" and attempt >= latest.get(task, (-1, None))[0]:
                latest[task] = (attempt, None)
            elif r.get("field_name") == "attempt_ok" and attempt >= latest.get(task, (-1, None))[0]:
                latest[task] = (attempt, r.get("value") == "True")
        tasks = sorted(latest.items())
        failed = [run.pathspec.child(step).child(task) for (step, task), (_, ok) in tasks if ok is False]
        unfinished = [run.pathspec.child(step).child(task) for (step, task), (_, ok) in tasks if ok is None and step != "_parameters"]
        return FailureLook(failed, whole_run=len(rows) < RECENT_ROWS, unfinished=unfinished)

    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes], *, completed: bool = False) -> int | None:
        """The run's last recorded activity: the heartbeat (stored at most every 10 s) for a run
        long enough for it to tell; a short run's newest metadata row (master), or on 2.5.1 its
        end task's last outcome (a completed run). At most RECENT_LOOKUPS such looks a call."""
        heartbeat = _heartbeat_ms(run)
        newest = max((so.newest_ms for so in outcomes), default=0)
        if heartbeat is not None and heartbeat - run.ts_ms >= SHORT_RUN_S * 1000:
            if heartbeat >= newest:  # said in the answer's notes (call_notes)
                current_meter().memo.setdefault(("heartbeat-dated",), set()).add(str(run.pathspec))
            return max(heartbeat, newest)
        rows = self._recent(run)
        if rows:
            return max(newest, max(int(r["ts_epoch"]) for r in rows))
        if newest:
            return newest
        ended = self.filtered_tasks(run.pathspec.child("end"), "attempt_ok", "True") if completed and rows is None and self._spend_recent(run) else set()
        if ended:  # a service that cannot page: ask the end task (within this call's share of looks)
            detail = self.task_detail(run.pathspec.child("end").child(min(ended, key=task_order)))
            return max((x.finished_ms for x in detail.attempts if x.finished_ms), default=None)
        return None  # too short to date from a heartbeat, and nothing newer known

    # --- steps and tasks -------------------------------------------------------------
    def list_steps(self, run: Pathspec) -> list[str]:
        rows = rows_of(self._get(_path(run) + "/steps"), f"steps of {run}", "step_name")
        if not rows:
            self.get_run(run)
        rows = sorted((r for r in rows if r.get("step_name") != "_parameters"), key=lambda r: (r.get("ts_epoch") or 0, str(r.get("step_name"))))
        return [str(r["step_name"]) for r in rows if r.get("step_name")]

    def list_tasks(self, step: Pathspec) -> list[str]:
        return [str(r["task_id"]) for r in self._task_rows(step)]

    def filtered_tasks(self, step: Pathspec, field: str, pattern: str) -> set[str]:
        """Task ids of a step whose metadata `field` matches `pattern` (one request)."""
        path = _path(step) + "/filtered_tasks"
        if self.caps.filtered_tasks is not False:
            reply = self._get(path, {"metadata_field_name": field, "pattern": pattern}, ok404=True)
            if reply.status == 404 and reply.body is not None and not isinstance(reply.body, str):
                # The route answers a list, even for an unknown step; a JSON 404 is not "no tasks".
                raise ServiceProtocolError(f"metadata service answered 404 with JSON for {path}", hint=_MISBEHAVING)
            if reply.status != 404:
                self.caps.filtered_tasks = True
                return {p.rsplit("/", 1)[-1] for p in rows_of(reply, path, item=str)}
            self.caps.filtered_tasks = False
            self.caps.notes.append("filtered_tasks route missing (service < 2.5.0): per-task metadata fallback")
        import re

        rx = re.compile(pattern)
        tasks = self.list_tasks(step)
        if len(tasks) > FALLBACK_TASKS:
            raise BackendError(
                f"this metadata service has no filtered_tasks route (< 2.5.0) and step {step.step} has {len(tasks)} tasks",
                hint=f"upgrade the service to 2.5.0 or later; without it, steps over {FALLBACK_TASKS} tasks are not scanned task by task",
            )
        hits = set()
        for task in tasks:
            rows = rows_of(self._get(_path(step.child(task)) + "/metadata"), "task metadata", "field_name")
            if any(r.get("field_name") == field and rx.search(str(r.get("value"))) for r in rows):
                hits.add(task)
        return hits

    def step_outcomes(self, run: Pathspec, steps: list[str], *, times: bool = False) -> list[StepOutcomes]:
        """Per step: tasks with attempt_ok True, with attempt_ok False, and started.
        Three filtered_tasks requests per step, whatever the number of tasks. With `times`:
        for a run of at most EXACT_TIMES_TASKS tasks, its metadata rows in one look (exact);
        else one task listing per step (start: the task's registration; finish: its last
        heartbeat, stored at most every 10 s: approximate), and for a finished task of a step
        of at most SMALL_STEP_TASKS tasks that no heartbeat dates, its own rows (one request)."""
        out = []
        for step in steps:
            sps = run.child(step)
            ok = self.filtered_tasks(sps, "attempt_ok", "True")
            failed = self.filtered_tasks(sps, "attempt_ok", "False")
            begun = self.filtered_tasks(sps, "attempt", ".")
            out.append(StepOutcomes(step, begun | ok | failed, ok, failed, exact_times=False))
        if times and sum(len(so.tasks) for so in out) <= EXACT_TIMES_TASKS and self._exact_times(run, out):
            return out
        for so in out if times else []:
            for row in self._task_rows(run.child(so.step)):
                tid, start, beat = str(row.get("task_id")), row.get("ts_epoch"), row.get("last_heartbeat_ts")
                start = start if isinstance(start, int) else None
                finished = int(beat * 1000) if isinstance(beat, (int, float)) and tid in (so.ok | so.failed) else None
                if start is not None and finished is not None and finished < start:
                    finished = None  # a heartbeat stored in the task's first second cannot date its end
                so.times[tid] = (start, finished)
            if len(so.times) <= SMALL_STEP_TASKS:  # a short step (start, join, end): its own rows date its end
                for tid, (start, finished) in list(so.times.items()):
                    if finished is None and tid in (so.ok | so.failed):
                        so.times[tid] = (start, self._outcome_ms(run.child(so.step).child(tid)))
        return out

    def _outcome_ms(self, task: Pathspec) -> int | None:
        """When a task recorded its last outcome, from its metadata rows (one request)."""
        reply = self._get(_path(task) + "/metadata", ok404=True)
        if reply.status == 404:
            return None
        ends = [r["ts_epoch"] for r in rows_of(reply, f"metadata of {task}", "field_name")
                if r.get("field_name") in ("attempt_ok", "attempt-done") and isinstance(r.get("ts_epoch"), int)]
        return max(ends) if ends else None

    def _exact_times(self, run: Pathspec, outcomes: list[StepOutcomes]) -> bool:
        """Each task's first attempt start and last outcome from the run's own metadata rows
        (one request, or a few pages on master); False when they did not all fit."""
        rows, complete = self.run_metadata(run, limit=EXACT_TIMES_TASKS * 40)
        if not complete:
            return False
        by_step = {so.step: so for so in outcomes}
        spans: dict[tuple[str, str], list[int | None]] = {}
        for r in rows:
            so = by_step.get(str(r.get("step_name")))
            ts = r.get("ts_epoch")
            if so is None or not isinstance(ts, int):
                continue
            span = spans.setdefault((so.step, str(r.get("task_id"))), [None, None])
            if r.get("field_name") == "attempt":
                span[0] = ts if span[0] is None else min(span[0], ts)
            elif r.get("field_name") in ("attempt_ok", "attempt-done"):
                span[1] = ts if span[1] is None else max(span[1], ts)
                so.newest_ms = max(so.newest_ms, ts)
        for (step, tid), (start, end) in spans.items():
            so = by_step[step]
            if tid in so.tasks:
                so.times[tid] = (start, end if tid in (so.ok | so.failed) else None)
        for so in outcomes:
            so.exact_times = True
        return True

    def _task_rows(self, step: Pathspec) -> list[dict[str, Any]]:
        """Every task row of a step (unfiltered: both generations send the whole list)."""
        return rows_of(self._get(_path(step) + "/tasks"), f"tasks of {step}", "task_id")

    def failed_tasks_of(self, step: Pathspec) -> set[str]:
        return self.filtered_tasks(step, "attempt_ok", "False")

    def check_task(self, task: Pathspec) -> None:
        if self._get(_path(task), ok404=True).status == 404:
            self.get_run(task.run_ps)
            if self._get(_path(task.step_ps), ok404=True).status == 404:
                raise not_found(task.step_ps)
            raise not_found(task)

    def task_detail(self, task: Pathspec) -> TaskDetail:
        reply = self._get(_path(task) + "/metadata", ok404=True)
        if reply.status == 404:
            self.check_task(task)
        rows = rows_of(reply, f"metadata of {task}", "field_name")
        if not rows:
            self.check_task(task)
        detail = detail_from_rows(rows)
        if isinstance(detail.foreach_index, str):
            detail.foreach_index = detail.foreach_index.strip("{}[]'\"") or None
        return detail

    # --- where the data is -----------------------------------------------------------------
    def run_root(self, run: Pathspec, *, exact: bool = False) -> DataRoot | None:
        """Where the run recorded its data: from metadata rows of its tasks this call already
        read, else (without `exact`) the root another run of its flow recorded, else from its
        `_parameters` artifacts, which its launcher wrote first (one small request on both
        generations). Remembered per process; None: nothing recorded yet."""
        key = (run.flow, str(run.run))
        with self._roots_lock:
            known = self._run_roots.get(key)
            flow_root = self._flow_roots.get(run.flow)
        if known is not None:
            return known
        root = self._root_already_read(run)
        if root is None and not exact and flow_root is not None:
            return flow_root  # its flow's: a task missing there has the run's own record looked up
        if root is None:
            path = _path(run.child("_parameters")) + "/artifacts"
            found: dict[DataRoot, int] = {}
            for row in rows_of(self._get(path), path, "name"):
                recorded = DataRoot.of_location(row.get("ds_type"), row.get("location"), run.flow)
                ts = row.get("ts_epoch")
                if recorded is not None:
                    found[recorded] = max(found.get(recorded, 0), ts if isinstance(ts, int) else 0)
            if not found:
                return None
            root = max(found, key=lambda r: found[r])  # one root in practice; else the newest
        self._remember_root(run.flow, str(run.run), root)
        return root

    def call_notes(self) -> list[str]:
        dated = current_meter().memo.get(("heartbeat-dated",))
        if not dated:
            return []
        return [f"finish of {len(dated)} run(s) from the run's last heartbeat (stored at most every 10 s): up to 10 s early"]

    def root_guessed(self, run: Pathspec) -> bool:
        with self._roots_lock:
            return (run.flow, str(run.run)) not in self._run_roots and run.flow in self._flow_roots

    def _remember_root(self, flow: str, run_id: str, root: DataRoot) -> None:
        with self._roots_lock:
            self._run_roots[(flow, run_id)] = root
            self._flow_roots[flow] = root
            self._flow_roots.move_to_end(flow)
            while len(self._run_roots) > RUN_ROOTS_KEPT:
                self._run_roots.popitem(last=False)
            while len(self._flow_roots) > RUN_ROOTS_KEPT:
                self._flow_roots.popitem(last=False)

    def _learn_root(self, flow: str, run_id: str, ds_type: str | None, location: str | None) -> None:
        """Remember a run's root from an artifact record a query-service answer carried (no request
        later); a root already known is kept."""
        root = DataRoot.of_location(ds_type, location, flow)
        if root is None:
            return
        with self._roots_lock:
            known = (flow, run_id) in self._run_roots
        if not known:
            self._remember_root(flow, run_id, root)

    @staticmethod
    def _root_already_read(run: Pathspec) -> DataRoot | None:
        """The newest ds-type/ds-root pair among the run's metadata rows this call has already
        fetched (run-level rows, or a task's): no request."""
        prefix = _path(run) + "/"
        best: tuple[int, DataRoot] | None = None
        for key, reply in list(current_meter().memo.items()):
            path = key[0] if isinstance(key, tuple) and key else None
            if not isinstance(path, str) or not path.startswith(prefix) or not path.endswith("/metadata") or not isinstance(reply, Reply):
                continue
            pairs: dict[tuple[object, object, int], dict[str, tuple[int, str]]] = {}
            for row in reply.body if isinstance(reply.body, list) else []:
                value, stamp = (row.get("value"), row.get("ts_epoch")) if isinstance(row, dict) else (None, None)
                if isinstance(value, str) and row.get("field_name") in ("ds-type", "ds-root"):
                    ts = stamp if isinstance(stamp, int) else 0
                    pairs.setdefault((row.get("step_name"), row.get("task_id"), attempt_of(row)), {})[str(row["field_name"])] = (ts, value)
            for pair in pairs.values():
                root = DataRoot.of(pair.get("ds-type", (0, None))[1], pair.get("ds-root", (0, None))[1])
                ts = max(t for t, _ in pair.values())
                if root is not None and (best is None or ts > best[0]):
                    best = (ts, root)
        return best[1] if best is not None else None

    def task_root(self, task: Pathspec) -> DataRoot | None:
        """`ds-type`/`ds-root` of the task's latest attempt, from its metadata (the request
        `task_detail` makes: sent once per call for both)."""
        reply = self._get(_path(task) + "/metadata", ok404=True)
        if reply.status == 404:
            return None
        latest: dict[str, tuple[int, int, str]] = {}
        for row in rows_of(reply, f"metadata of {task}", "field_name"):
            name, value = row.get("field_name"), row.get("value")
            if name in ("ds-type", "ds-root") and isinstance(value, str):
                ts = row.get("ts_epoch")
                rank = (attempt_of(row), ts if isinstance(ts, int) else 0, value)
                if rank > latest.get(name, (-1, -1, "")):
                    latest[name] = rank
        if "ds-type" not in latest or "ds-root" not in latest:
            return None
        return DataRoot.of(latest["ds-type"][2], latest["ds-root"][2])

    def artifacts(self, ps: Pathspec, *, limit: int = 5000) -> tuple[list[dict[str, Any]], bool]:
        """Artifact records of a task, a step or a whole run: (at most `limit` rows, complete).

        Master pages with cursors as far as the limit needs; 2.5.1 sends the whole
        list in one response, which is then cut to the limit."""
        return self._bounded(_path(ps) + "/artifacts", limit)

    def run_metadata(self, run: Pathspec, *, limit: int = 20000) -> tuple[list[dict[str, Any]], bool]:
        """Metadata rows of every task of a run, from the run-level route: (rows, complete)."""
        try:
            rows = self._bounded(_path(run) + "/metadata", limit)
        except NotFound:  # lists under unknown runs are 200 []: a 404 means the route is missing
            self.caps.run_metadata = False
            raise
        self.caps.run_metadata = True
        return rows

    def _bounded(self, path: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        if self.caps.cursors:
            rows, more = self._pages(path, {"_limit": min(limit, MAX_PAGE)}, want=limit)
        else:
            rows, more = rows_of(self._get(path), path), False
        return rows[:limit], not more and len(rows) <= limit

    # --- whole answers from the query service, when there is one ------------------------------
    def decided_tasks(self, run: Pathspec, states: list[str], *, step: str | None = None) -> DecidedTasks | None:
        return self.qs.tasks(run, states, step) if self.qs is not None else None

    def decided_summary(self, run: Pathspec) -> DecidedSummary | None:
        if self.qs is None:
            return None
        got = self.qs.summary(run)
        self._learn_root(run.flow, str(run.run), got.ds_type, got.location)
        return got

    def decided_stats(self, flows: list[str], query: RunQuery, last: int | None, per_step: bool) -> list[DecidedStats] | None:
        if self.qs is None:
            return None
        return self.qs.stats(flows, query, last, per_step, _config.default("stats_runs"))

    def decided_flows(self, query: RunQuery) -> list[DecidedFlow] | None:
        if self.qs is None or query.user is not None:
            return None
        return self.qs.flows(query, _config.default("flow_budget"))

    def artifact_name_hits(self, flow: str, glob: str, *, include_private: bool, runs: int, query: RunQuery,
                           limit: int, cursor: str | None) -> NameHitPage | None:
        if self.qs is None or any("," in t for t in (*query.tags_all, *query.tags_any)):  # the service splits its tags at commas
            return None
        page = self.qs.artifact_hits(flow, glob, include_private=include_private, runs=runs, query=query, limit=limit, cursor=cursor)
        for h in page.hits:
            self._learn_root(flow, h.run_id, h.ds_type, h.location)
        return page

    def capabilities(self) -> dict[str, object]:
        caps = self.caps
        qs = self.qs
        return {
            "query_service": qs.url if qs is not None else None,
            "query_service_note": self._qs_note,
            "metadata_url": self.url,
            "service_version": caps.version,
            "server_filters": caps.filters,
            "server_cursors": caps.cursors,
            "filtered_tasks": caps.filtered_tasks,
            "run_metadata_route": caps.run_metadata,
        }
