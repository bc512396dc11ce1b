"""The GET routes, answering like the generation in ``state.mode``.

``release`` (2.5.1) ignores every query parameter except on ``filtered_tasks`` and leaves the
version header off the task/step/run artifact lists. ``master`` filters runs (``RUN_FILTERS``,
``_tags``) and tasks (``TASK_FILTERS``; no ``status``), paginates flows, runs, tasks, task and
run metadata and task/step/run artifacts on ``_limit``/``_cursor``/any filter, adds ``user``
to run rows and ``status`` when a status filter is sent; ``release-2.6.1`` answers like master. Unknown objects are ``404 {}``, lists
under unknown parents ``200 []``. Neither sends the version header on ``/version`` and
``/attempt/N/artifacts``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from aiohttp import web

from . import query as q
from .handlers import VERSIONS, HandlerBase, handled, page_headers, respond
from .store import Rec, is_numeric

RUN_FILTERS = ("flow_id", "run_number", "run_id", "user_name", "ts_epoch", "last_heartbeat_ts", "tags", "system_tags", "user", "status")
TASK_FILTERS = ("task_id", "task_name", "user_name", "ts_epoch", "last_heartbeat_ts")
TIME_FILTERS = ("ts_epoch", "last_heartbeat_ts")

FLOW_KEY = ([("ts_epoch", int), ("flow_id", str)], lambda r: (r["ts_epoch"], r["flow_id"]))
RUN_KEY = ([("ts_epoch", int), ("run_number", int)], lambda r: (r["ts_epoch"], r["run_number"]))
TASK_KEY = ([("ts_epoch", int), ("task_id", int)], lambda r: (r["ts_epoch"], r["task_id"]))
METADATA_KEY = ([("ts_epoch", int), ("id", int)], lambda r: (r["ts_epoch"], r["id"]))
ARTIFACT_KEY = ([("ts_epoch", int), ("task_id", int), ("name", str)], lambda r: (r["ts_epoch"], r["task_id"], r["name"]))

KeySpec = tuple[list[tuple[str, type]], Callable[[Rec], tuple[Any, ...]]]


class ReadRoutes(HandlerBase):
    def _paged(self, request: web.Request, rows: list[Rec], spec: KeySpec, preds: list[q.Predicate] | None = None) -> q.Page | None:
        """Master's paginated path, or ``None`` for the unpaginated (release or plain) path."""
        if not self.master:
            return None
        cursor, limit = request.query.get("_cursor"), request.query.get("_limit")
        if not preds and cursor is None and limit is None:
            return None
        fields, key = spec
        if cursor:
            q.decode_cursor(cursor, fields)
        size = q.page_size(limit)
        kept = [r for r in rows if all(p(r) for p in preds or [])]
        return q.paginate(kept, key, fields, cursor, size)

    def _list(self, request: web.Request, rows: list[Rec], spec: KeySpec, serialize: Callable[[Rec], Rec], version: bool = True) -> web.Response:
        page = self._paged(request, rows, spec)
        if page is None:
            return respond(200, [serialize(r) for r in rows], version=version)
        return respond(200, [serialize(r) for r in page.rows], headers=page_headers(page))

    # ---------------------------------------------------------------- admin
    async def ping(self, request: web.Request) -> web.Response:
        return respond(200, "pong", raw=True)

    async def version(self, request: web.Request) -> web.Response:
        return respond(200, VERSIONS[self.state.mode], raw=True, version=False)

    # ---------------------------------------------------------------- flows and runs
    @handled()
    async def get_flows(self, request: web.Request) -> web.Response:
        with self.store.lock:
            return self._list(request, list(self.store.flows.values()), FLOW_KEY, self.store.serialize_flow)

    @handled()
    async def get_flow(self, request: web.Request) -> web.Response:
        flow = self.store.flows.get(request.match_info["flow_id"])
        return respond(200, self.store.serialize_flow(flow)) if flow else respond(404, {})

    def _run_row(self, run: Rec, status: bool = False) -> Rec:
        if not self.master:
            return self.store.serialize_run(run)
        extra: Rec = {"status": self.store.run_status(run)} if status else {}
        extra["user"] = self.store.run_user(run)
        return self.store.serialize_run(run, extra)

    @handled()
    async def get_runs(self, request: web.Request) -> web.Response:
        (flow_id,) = self.m(request, "flow_id")
        query = request.query
        with self.store.lock:
            rows = self.store.list_runs(flow_id)
            if not self.master:
                return respond(200, [self._run_row(r) for r in rows])
            q.validate_filters(query, RUN_FILTERS, TIME_FILTERS, statuses=True)
            preds = q.tag_predicates(query) + q.column_predicates(query, RUN_FILTERS)
            with_status = "status" in {q.split_field_op(k)[0] for k in query if not k.startswith("_")}
            views = [
                dict(r, user=self.store.run_user(r), **({"status": self.store.run_status(r)} if with_status else {}))
                for r in rows
            ]
            page = self._paged(request, views, RUN_KEY, preds)
            if page is None:
                return respond(200, [self._run_row(r) for r in rows])
            return respond(200, [self._run_row(r, with_status) for r in page.rows], headers=page_headers(page))

    @handled()
    async def get_run(self, request: web.Request) -> web.Response:
        run = self.store.find_run(*self.m(request, "flow_id", "run_number"))
        return respond(200, self._run_row(run)) if run else respond(404, {})

    # ---------------------------------------------------------------- steps and tasks
    @handled()
    async def get_steps(self, request: web.Request) -> web.Response:
        with self.store.lock:
            steps = self.store.list_steps(*self.m(request, "flow_id", "run_number"))
            return respond(200, [self.store.serialize_step(s) for s in steps])

    @handled()
    async def get_step(self, request: web.Request) -> web.Response:
        step = self.store.find_step(*self.m(request, "flow_id", "run_number", "step_name"))
        return respond(200, self.store.serialize_step(step)) if step else respond(404, {})

    @handled()
    async def get_tasks(self, request: web.Request) -> web.Response:
        with self.store.lock:
            rows = self.store.list_tasks(*self.m(request, "flow_id", "run_number", "step_name"))
            if self.master:
                q.validate_filters(request.query, TASK_FILTERS, TIME_FILTERS)
            page = self._paged(request, rows, TASK_KEY, q.column_predicates(request.query, TASK_FILTERS))
            if page is None:
                return respond(200, [self.store.serialize_task(t) for t in rows])
            return respond(200, [self.store.serialize_task(t) for t in page.rows], headers=page_headers(page))

    @handled()
    async def get_task(self, request: web.Request) -> web.Response:
        task = self.store.find_task(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
        return respond(200, self.store.serialize_task(task)) if task else respond(404, {})

    @handled()
    async def get_filtered_tasks(self, request: web.Request) -> web.Response:
        """Pathspecs of the step's tasks with a metadata row matching field and (unanchored) regex."""
        flow_id, run_key, step_name = self.m(request, "flow_id", "run_number", "step_name")
        field, pattern = request.query.get("metadata_field_name"), request.query.get("pattern")
        try:
            rx = re.compile(pattern) if pattern else None
        except re.error as err:
            raise q.DatabaseError("invalid regular expression: %s" % err) from None
        found: dict[int, str] = {}
        for m in self.store.run_metadata(flow_id, run_key):
            if m["step_name"] != step_name or (field and m["field_name"] != field):
                continue
            if rx is not None and (m["value"] is None or not rx.search(str(m["value"]))):
                continue
            run_part = m["run_id"] or m["run_number"]
            found[m["task_id"]] = "%s/%s/%s/%s" % (m["flow_id"], run_part, m["step_name"], m["task_name"] or m["task_id"])
        return respond(200, [found[k] for k in sorted(found)])

    # ---------------------------------------------------------------- metadata
    @handled()
    async def get_task_metadata(self, request: web.Request) -> web.Response:
        with self.store.lock:
            rows = self.store.task_metadata(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
            return self._list(request, rows, METADATA_KEY, self.store.serialize_metadata)

    @handled()
    async def get_run_metadata(self, request: web.Request) -> web.Response:
        with self.store.lock:
            rows = self.store.run_metadata(*self.m(request, "flow_id", "run_number"))
            return self._list(request, rows, METADATA_KEY, self.store.serialize_metadata)

    # ---------------------------------------------------------------- artifacts
    def _artifact_list(self, request: web.Request, rows: list[Rec]) -> web.Response:
        # 2.5.1 built these responses by hand, without the version header; master adds it.
        latest = self.store.latest_artifacts(rows)
        return self._list(request, latest, ARTIFACT_KEY, self.store.serialize_artifact, version=self.master)

    @handled()
    async def get_task_artifacts(self, request: web.Request) -> web.Response:
        with self.store.lock:
            rows = self.store.task_artifacts(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
            return self._artifact_list(request, rows)

    @handled()
    async def get_step_artifacts(self, request: web.Request) -> web.Response:
        with self.store.lock:
            return self._artifact_list(request, self.store.run_artifacts(*self.m(request, "flow_id", "run_number", "step_name")))

    @handled()
    async def get_run_artifacts(self, request: web.Request) -> web.Response:
        with self.store.lock:
            return self._artifact_list(request, self.store.run_artifacts(*self.m(request, "flow_id", "run_number")))

    @handled(version=False)
    async def get_attempt_artifacts(self, request: web.Request) -> web.Response:
        attempt = int(request.match_info["attempt_id"])
        with self.store.lock:
            rows = self.store.task_artifacts(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
            return respond(200, [self.store.serialize_artifact(a) for a in rows if a["attempt_id"] == attempt], version=False)

    def _artifact(self, request: web.Request, attempt: int | None) -> web.Response:
        """One artifact; without an attempt, that of the highest attempt holding ``name``."""
        with self.store.lock:
            rows = self.store.task_artifacts(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
            if attempt is None:
                attempts = [a["attempt_id"] for a in rows if a["name"] == "name"]
                attempt = max(attempts) if attempts else 0
            name = request.match_info["artifact_name"]
            found = [a for a in rows if a["name"] == name and a["attempt_id"] == attempt]
            return respond(200, self.store.serialize_artifact(found[0])) if found else respond(404, {})

    @handled()
    async def get_artifact(self, request: web.Request) -> web.Response:
        return self._artifact(request, None)

    @handled()
    async def get_artifact_attempt(self, request: web.Request) -> web.Response:
        raw = request.match_info["attempt_id"]
        if not is_numeric(raw):
            raise q.DatabaseError('invalid input syntax for type integer: "%s"' % raw)
        return self._artifact(request, int(raw))
