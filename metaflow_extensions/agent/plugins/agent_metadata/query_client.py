"""A typed client for the query service; every body is checked.

Each function takes `get(path, params) -> (status, headers, body)`: an HTTP GET against the API
root (`<url>/agent/v1`), `body` the decoded JSON (None when empty). Transport, retries, timeouts
and authentication belong to `get`; this module only shapes requests and checks answers. A body
of the wrong shape raises `ServiceProtocolError`; error answers become the library's errors
(400 `BadInput`, 404 `NotFound`, 401/403/5xx `ServiceUnavailable`).

Discovery (for the extended provider): `candidate_urls()` lists where the service may be, and
`probe(get)` says whether one answers there (None when not) in one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar, cast

from metaflow_agent._errors import BadInput, NotFound, ServiceProtocolError, ServiceUnavailable
from metaflow_agent._states import RUN_STATES, TASK_STATES, RunState, TaskState

Get = Callable[[str, Mapping[str, Any]], "tuple[int, Mapping[str, str], Any]"]
API_PREFIX = "/agent/v1"
SERVICE_NAME = "metaflow-agent-service"
URL_ENV = "METAFLOW_AGENT_QUERY_SERVICE_URL"
T = TypeVar("T")


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageInfo:
    limit: int | None
    next_cursor: str | None
    truncated: bool
    scanned: int | None
    budget_hit: bool


@dataclass(frozen=True)
class RunRow:
    flow_id: str
    run_number: int
    run_id: str | None
    pathspec: str
    state: RunState
    created_ms: int
    finished_ms: int | None
    duration_ms: int | None
    user: str | None
    tags: tuple[str, ...]
    system_tags: tuple[str, ...]
    heartbeat_s: int | None


@dataclass(frozen=True)
class RunPage:
    flow_id: str
    as_of_s: int
    runs: tuple[RunRow, ...]
    page: PageInfo


@dataclass(frozen=True)
class Attempt:
    attempt: int
    ok: bool | None
    started_ms: int | None
    finished_ms: int | None


@dataclass(frozen=True)
class TaskRow:
    pathspec: str
    step: str
    task_id: int
    state: TaskState
    retried_ok: bool
    attempt_count: int
    attempts: tuple[Attempt, ...]
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    duration_ms: int | None
    heartbeat_s: int | None


@dataclass(frozen=True)
class TaskPage:
    run: RunRow
    as_of_s: int
    tasks: tuple[TaskRow, ...]
    page: PageInfo


CountKey = Literal["running", "completed", "failed", "crashed", "unknown", "retried_ok"]
COUNT_KEYS: tuple[str, ...] = (*TASK_STATES, "retried_ok")


@dataclass(frozen=True)
class SlowTask:
    task_id: int
    state: TaskState
    duration_ms: int


@dataclass(frozen=True)
class StepSummary:
    step: str
    created_ms: int
    tasks: int
    counts: Mapping[str, int]  # COUNT_KEYS -> tasks
    started_ms: int | None
    finished_ms: int | None
    duration_ms: int | None
    slowest: tuple[SlowTask, ...]


@dataclass(frozen=True)
class RunSummary:
    run: RunRow
    as_of_s: int
    steps: tuple[StepSummary, ...]
    total_tasks: int
    total_counts: Mapping[str, int]
    steps_truncated: bool
    first_failure: TaskRow | None  # failed before crashed, then step order, then task id
    ds_type: str | None = None  # where the run recorded its data: its _parameters artifacts' datastore
    location: str | None = None  # and their location (':root:<root>', or an older blob path)


@dataclass(frozen=True)
class Durations:
    min: float | None
    p50: float | None
    p90: float | None
    max: float | None
    of: int


@dataclass(frozen=True)
class RunStatsGroup:
    flow_id: str | None  # None for the total over every flow
    runs_examined: int
    counts: Mapping[str, int]  # RUN_STATES -> runs
    success_rate: float | None
    success_rate_finished: float | None
    duration_ms: Durations
    first_created_ms: int | None
    last_created_ms: int | None
    truncated: bool


@dataclass(frozen=True)
class StepStats:
    flow_id: str
    step: str
    runs: int
    runs_with_failed_task: int
    tasks: int
    duration_ms: Durations


@dataclass(frozen=True)
class RunStats:
    as_of_s: int
    runs_examined: int
    max_runs_per_flow: int
    flows: tuple[RunStatsGroup, ...]
    total: RunStatsGroup
    steps: tuple[StepStats, ...] | None


@dataclass(frozen=True)
class FlowRow:
    flow_id: str
    created_ms: int
    latest_run: RunRow | None
    latest_run_steps: int | None  # steps of the latest run (without _parameters)


@dataclass(frozen=True)
class FlowPage:
    as_of_s: int
    flows: tuple[FlowRow, ...]
    page: PageInfo


@dataclass(frozen=True)
class ArtifactHit:
    pathspec: str
    name: str
    run_number: int
    step: str
    task_id: int
    attempt: int
    sha: str | None
    type: str | None
    content_type: str | None
    location: str
    ds_type: str
    created_ms: int
    tasks_before: int  # tasks of the page's range before this hit's task
    empty_tasks_before: int  # of those, tasks without artifact rows


@dataclass(frozen=True)
class ArtifactPage:
    flow_id: str
    hits: tuple[ArtifactHit, ...]
    page: PageInfo  # page.scanned: tasks covered, through the task of the first hit after the page
    runs_searched: tuple[int, ...]  # run numbers covered, newest first
    tasks_without_artifacts: int  # covered tasks without artifact rows


@dataclass(frozen=True)
class ServiceCapabilities:
    service: str
    version: str
    api: str
    read_only: bool
    auth: str
    paths: tuple[str, ...]
    limits: Mapping[str, Any]
    indexes: Mapping[str, bool]  # index name -> present
    run_states: tuple[str, ...]
    task_states: tuple[str, ...]


# --- body checking ---------------------------------------------------------------------------
class _Obj:
    """A JSON object read field by field; surprises raise ServiceProtocolError."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ServiceProtocolError(f"query service sent {type(value).__name__} for {where}, expected an object",
                                       hint="the query service or a proxy in front of it is misbehaving")
        self.d, self.where = value, where

    def _get(self, key: str, kinds: tuple[type, ...], optional: bool) -> Any:
        if key not in self.d:
            raise ServiceProtocolError(f"query service answer lacks {self.where}.{key}", hint="client and service versions may differ")
        value = self.d[key]
        if value is None and optional:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ServiceProtocolError(f"query service sent {type(value).__name__} for {self.where}.{key}",
                                       hint="client and service versions may differ")
        return value

    def req_int(self, key: str) -> int:
        return cast(int, self._get(key, (int,), False))

    def opt_int(self, key: str) -> int | None:
        return cast("int | None", self._get(key, (int,), True))

    def num(self, key: str) -> float | None:
        v = self._get(key, (int, float), True)
        return None if v is None else float(v)

    def req_str(self, key: str) -> str:
        return cast(str, self._get(key, (str,), False))

    def opt_str(self, key: str) -> str | None:
        return cast("str | None", self._get(key, (str,), True))

    def req_bool(self, key: str) -> bool:
        return cast(bool, self._get(key, (bool,), False))

    def obj(self, key: str) -> _Obj:
        return _Obj(self._get(key, (dict,), False), f"{self.where}.{key}")

    def opt_obj(self, key: str) -> _Obj | None:
        v = self._get(key, (dict,), True)
        return None if v is None else _Obj(v, f"{self.where}.{key}")

    def seq(self, key: str, item: Callable[[Any, str], T]) -> tuple[T, ...]:
        values = self._get(key, (list,), False)
        return tuple(item(v, f"{self.where}.{key}[{i}]") for i, v in enumerate(values))

    def strs(self, key: str) -> tuple[str, ...]:
        return self.seq(key, _string)

    def literal(self, key: str, allowed: Sequence[str]) -> str:
        value = self.req_str(key)
        if value not in allowed:
            raise ServiceProtocolError(f"query service sent {value[:40]!r} for {self.where}.{key}", hint=f"expected one of {', '.join(allowed)}")
        return value

    def counts(self, key: str, keys: Sequence[str]) -> dict[str, int]:
        o = self.obj(key)
        return {k: o.req_int(k) for k in keys}


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ServiceProtocolError(f"query service sent {type(value).__name__} for {where}, expected a string")
    return value


def _page(o: _Obj) -> PageInfo:
    p = o.obj("page")
    return PageInfo(p.opt_int("limit"), p.opt_str("next_cursor"), p.req_bool("truncated"), p.opt_int("scanned"), p.req_bool("budget_hit"))


def _run(value: Any, where: str) -> RunRow:
    o = _Obj(value, where)
    return RunRow(
        flow_id=o.req_str("flow_id"), run_number=o.req_int("run_number"), run_id=o.opt_str("run_id"), pathspec=o.req_str("pathspec"),
        state=cast(RunState, o.literal("state", RUN_STATES)), created_ms=o.req_int("created_ms"), finished_ms=o.opt_int("finished_ms"),
        duration_ms=o.opt_int("duration_ms"), user=o.opt_str("user"), tags=o.strs("tags"), system_tags=o.strs("system_tags"),
        heartbeat_s=o.opt_int("heartbeat_s"))


def _attempt(value: Any, where: str) -> Attempt:
    o = _Obj(value, where)
    ok = o._get("ok", (bool,), True)
    return Attempt(o.req_int("attempt"), ok, o.opt_int("started_ms"), o.opt_int("finished_ms"))


def _task(value: Any, where: str) -> TaskRow:
    o = _Obj(value, where)
    return TaskRow(
        pathspec=o.req_str("pathspec"), step=o.req_str("step"), task_id=o.req_int("task_id"), state=cast(TaskState, o.literal("state", TASK_STATES)),
        retried_ok=o.req_bool("retried_ok"), attempt_count=o.req_int("attempt_count"), attempts=o.seq("attempts", _attempt),
        created_ms=o.req_int("created_ms"), started_ms=o.opt_int("started_ms"), finished_ms=o.opt_int("finished_ms"),
        duration_ms=o.opt_int("duration_ms"), heartbeat_s=o.opt_int("heartbeat_s"))


def _slow(value: Any, where: str) -> SlowTask:
    o = _Obj(value, where)
    return SlowTask(o.req_int("task_id"), cast(TaskState, o.literal("state", TASK_STATES)), o.req_int("duration_ms"))


def _step(value: Any, where: str) -> StepSummary:
    o = _Obj(value, where)
    return StepSummary(step=o.req_str("step"), created_ms=o.req_int("created_ms"), tasks=o.req_int("tasks"), counts=o.counts("counts", COUNT_KEYS),
                       started_ms=o.opt_int("started_ms"), finished_ms=o.opt_int("finished_ms"), duration_ms=o.opt_int("duration_ms"),
                       slowest=o.seq("slowest", _slow))


def _durations(o: _Obj) -> Durations:
    return Durations(o.num("min"), o.num("p50"), o.num("p90"), o.num("max"), o.req_int("of"))


def _group(value: Any, where: str, *, flow: bool = True) -> RunStatsGroup:
    o = _Obj(value, where)
    return RunStatsGroup(
        flow_id=o.req_str("flow_id") if flow else None, runs_examined=o.req_int("runs_examined"), counts=o.counts("counts", RUN_STATES),
        success_rate=o.num("success_rate"), success_rate_finished=o.num("success_rate_finished"),
        duration_ms=_durations(o.obj("duration_ms")), first_created_ms=o.opt_int("first_created_ms"),
        last_created_ms=o.opt_int("last_created_ms"), truncated=o.req_bool("truncated") if flow else False)


def _step_stats(value: Any, where: str) -> StepStats:
    o = _Obj(value, where)
    return StepStats(o.req_str("flow_id"), o.req_str("step"), o.req_int("runs"), o.req_int("runs_with_failed_task"), o.req_int("tasks"),
                     _durations(o.obj("duration_ms")))


def _flow(value: Any, where: str) -> FlowRow:
    o = _Obj(value, where)
    latest = o.opt_obj("latest_run")
    return FlowRow(o.req_str("flow_id"), o.req_int("created_ms"), None if latest is None else _run(latest.d, latest.where),
                   o.opt_int("latest_run_steps"))


def _hit(value: Any, where: str) -> ArtifactHit:
    o = _Obj(value, where)
    return ArtifactHit(
        pathspec=o.req_str("pathspec"), name=o.req_str("name"), run_number=o.req_int("run_number"), step=o.req_str("step"), task_id=o.req_int("task_id"),
        attempt=o.req_int("attempt"), sha=o.opt_str("sha"), type=o.opt_str("type"), content_type=o.opt_str("content_type"),
        location=o.req_str("location"), ds_type=o.req_str("ds_type"), created_ms=o.req_int("created_ms"),
        tasks_before=o.req_int("tasks_before"), empty_tasks_before=o.req_int("empty_tasks_before"))


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ServiceProtocolError(f"query service sent {type(value).__name__} for {where}, expected an integer")
    return value


# --- requests --------------------------------------------------------------------------------
def _call(get: Get, path: str, params: Mapping[str, Any], what: str) -> _Obj:
    clean = {k: v for k, v in params.items() if v is not None}
    status, _headers, body = get(path, clean)
    if status == 200:
        return _Obj(body, what)
    detail = body if isinstance(body, dict) else {}
    message = str(detail.get("message") or f"query service answered {status} for {what}")[:500]
    hint = str(detail.get("hint") or "")[:500]
    if status == 400:
        raise BadInput(message, hint=hint)
    if status == 404 and detail.get("error") == "not_found":
        raise NotFound(message, hint=hint)
    if status in (401, 403):
        raise ServiceUnavailable(f"query service refused the request ({status}): {message}",
                                 hint="set the query service's bearer token, or unset its URL to use the metadata service alone")
    if status in (502, 503, 504):
        raise ServiceUnavailable(f"query service unavailable ({status}): {message}", hint=hint or "retry later")
    raise ServiceProtocolError(f"query service answered {status} for {what}", hint="is this URL the metaflow-agent-service API root?")


def _csv(values: Sequence[str] | None) -> str | None:
    return ",".join(values) if values else None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def list_runs(get: Get, flow: str, *, states: Sequence[str] | None = None, since_ms: int | None = None, until_ms: int | None = None,
              tags_any: Sequence[str] | None = None, tags_all: Sequence[str] | None = None, users: Sequence[str] | None = None,
              limit: int | None = None, cursor: str | None = None) -> RunPage:
    """Runs of a flow, newest first, with state, finish and duration."""
    o = _call(get, f"/flows/{flow}/runs", {"state": _csv(states), "since": since_ms, "until": until_ms, "tags_any": _csv(tags_any),
                                           "tags_all": _csv(tags_all), "user": _csv(users), "_limit": limit, "_cursor": cursor}, "runs")
    return RunPage(o.req_str("flow_id"), o.req_int("as_of_s"), o.seq("data", _run), _page(o))


def get_run(get: Get, flow: str, run: str) -> RunRow:
    """One run with state, finish and duration."""
    o = _call(get, f"/flows/{flow}/runs/{run}", {}, "run")
    return _run(o.obj("data").d, "run.data")


def list_tasks(get: Get, flow: str, run: str, *, states: Sequence[str] | None = None, steps: Sequence[str] | None = None,
               limit: int | None = None, cursor: str | None = None) -> TaskPage:
    """Tasks of a run by state, with attempts and timing."""
    o = _call(get, f"/flows/{flow}/runs/{run}/tasks", {"state": _csv(states), "step": _csv(steps), "_limit": limit, "_cursor": cursor}, "tasks")
    return TaskPage(_run(o.obj("run").d, "tasks.run"), o.req_int("as_of_s"), o.seq("data", _task), _page(o))


def run_summary(get: Get, flow: str, run: str, *, slowest: int | None = None) -> RunSummary:
    """Per-step counts by state and timings of a run, with totals."""
    o = _call(get, f"/flows/{flow}/runs/{run}/summary", {"slowest": slowest}, "summary")
    totals = o.obj("totals")
    first = o.opt_obj("first_failure")
    ds = o.opt_obj("datastore")  # absent on an older query service
    return RunSummary(_run(o.obj("run").d, "summary.run"), o.req_int("as_of_s"), o.seq("steps", _step), totals.req_int("tasks"),
                      totals.counts("counts", COUNT_KEYS), o.req_bool("steps_truncated"),
                      None if first is None else _task(first.d, first.where),
                      None if ds is None else ds.opt_str("ds_type"), None if ds is None else ds.opt_str("location"))


def run_stats(get: Get, flows: Sequence[str], *, since_ms: int | None = None, until_ms: int | None = None, last: int | None = None,
              per_step: bool = False, tags_any: Sequence[str] | None = None, tags_all: Sequence[str] | None = None) -> RunStats:
    """Counts by state, success rates and duration percentiles over runs."""
    o = _call(get, "/stats/runs", {"flows": _csv(flows), "since": since_ms, "until": until_ms, "last": last,
                                   "per_step": _flag(per_step) if per_step else None, "tags_any": _csv(tags_any),
                                   "tags_all": _csv(tags_all)}, "run statistics")
    steps = o.seq("steps", _step_stats) if "steps" in o.d else None
    return RunStats(o.req_int("as_of_s"), o.req_int("runs_examined"), o.req_int("max_runs_per_flow"), o.seq("flows", _group),
                    _group(o.obj("total").d, "stats.total", flow=False), steps)


def list_flows(get: Get, *, tags_any: Sequence[str] | None = None, tags_all: Sequence[str] | None = None,
               limit: int | None = None, cursor: str | None = None) -> FlowPage:
    """Flows in name order, each with its latest run among those the tags select."""
    o = _call(get, "/flows", {"tags_any": _csv(tags_any), "tags_all": _csv(tags_all), "_limit": limit, "_cursor": cursor}, "flows")
    return FlowPage(o.req_int("as_of_s"), o.seq("data", _flow), _page(o))


def search_artifacts(get: Get, flow: str, *, name: str | None = None, name_prefix: str | None = None, include_private: bool = False,
                     attempts: Literal["latest", "all"] | None = None, runs: int | None = None, since_ms: int | None = None,
                     until_ms: int | None = None, tags_any: Sequence[str] | None = None, tags_all: Sequence[str] | None = None,
                     users: Sequence[str] | None = None, limit: int | None = None, cursor: str | None = None) -> ArtifactPage:
    """Artifacts by name glob or prefix in the newest `runs` runs, in walk order.

    Walk order: run newest first, its steps in creation order, task id, attempt, name. Each page
    says what it covered (runs, tasks, tasks without artifact rows)."""
    o = _call(get, f"/flows/{flow}/artifacts", {"name": name, "name_prefix": name_prefix,
                                                "include_private": _flag(include_private) if include_private else None,
                                                "attempts": attempts, "runs": runs, "since": since_ms, "until": until_ms,
                                                "tags_any": _csv(tags_any), "tags_all": _csv(tags_all), "user": _csv(users),
                                                "_limit": limit, "_cursor": cursor}, "artifacts")
    return ArtifactPage(o.req_str("flow_id"), o.seq("data", _hit), _page(o), o.seq("runs_searched", _int),
                        o.req_int("tasks_without_artifacts"))


def capabilities(get: Get) -> ServiceCapabilities:
    """What the service offers: version, routes, limits, which optional indexes are present."""
    o = _call(get, "/capabilities", {}, "capabilities")
    idx = o.obj("indexes")
    states = o.obj("states")
    return ServiceCapabilities(
        service=o.req_str("service"), version=o.req_str("version"), api=o.req_str("api"), read_only=o.req_bool("read_only"), auth=o.req_str("auth"),
        paths=tuple(_Obj(e, "capabilities.endpoints[]").req_str("path") for e in o._get("endpoints", (list,), False)),
        limits=o.obj("limits").d, indexes={k: _Obj(v, f"capabilities.indexes.{k}").req_bool("present") for k, v in idx.d.items()},
        run_states=states.strs("run"), task_states=states.strs("task"))


# --- discovery -------------------------------------------------------------------------------
def candidate_urls(env: Mapping[str, str]) -> list[str]:
    """Where the query service may answer, in order of preference.

    The configured URL, else beside the metadata service
    (`<METAFLOW_SERVICE_URL>/agent/v1`, a reverse proxy's path)."""
    if env.get(URL_ENV):
        return [env[URL_ENV].rstrip("/")]
    base = env.get("METAFLOW_SERVICE_URL")
    return [base.rstrip("/") + API_PREFIX] if base else []


def probe(get: Get) -> ServiceCapabilities | None:
    """The service's capabilities if one answers at `get`'s root, else None.

    One request. Absent (404, another server, a non-JSON page) is None; present but refusing
    (401/403) or unwell (5xx) raises, so a misconfiguration is not silently ignored."""
    try:
        caps = capabilities(get)
    except (NotFound, BadInput, ServiceProtocolError):
        return None
    return caps if caps.service == SERVICE_NAME else None
