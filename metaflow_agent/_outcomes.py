"""Task and run states, decided in one place for every backend and function.

The rule is `_states` (one table, also rendered as SQL for the query service); this module
gathers its facts as cheaply as the backend allows:

- a task's latest attempt and its outcome: `attempt_ok` metadata (never the Client's
  `Task.finished`, False for a task that raised), with the task's datastore folder as the
  cheap witness of which attempt is latest and whether it saved its data (it raised) or not;
- whether the runtime recorded the attempt's exit (`<attempt>.runtime`);
- liveness: the backend's proof (local: this host's processes; service: heartbeats).

Flat in the number of tasks: per-step outcome sets, then one look per unsettled task (failed
or unfinished) up to a budget. Listing runs settles each with fewer looks still
(`settle_run`): the end step first, then liveness, then the first failed task found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ._backend import Backend
from ._blobs import attempt_files, graph_info, latest_attempt, task_exception
from ._cost import current_meter, skip_damaged
from ._errors import BackendError, Damaged
from ._models import FailureBrief
from ._pathspec import Pathspec
from ._records import DecidedTask, FailureLook, RunRecord, StepOutcomes, TaskDetail, task_order
from ._states import FINISHED, Fact, RunState, TaskState, run_state, task_state
from ._text import clip

DETAIL_BUDGET = 50  # unsettled tasks examined one by one per run before approximating
SETTLE_STEPS = 50  # steps searched for a failed task when settling a listed run
DEFAULT_RETRY_TIMES = 3  # metaflow's @retry default

# Why an unsettled task is listed: its state, or "retrying" (running after a failed attempt).
Kind = Literal["failed", "crashed", "retrying", "running", "unknown"]
KIND_STATE: dict[str, TaskState] = {"failed": "failed", "crashed": "crashed", "retrying": "running", "running": "running", "unknown": "unknown"}


def short_type(type_name: str | None) -> str | None:
    if not type_name:
        return None
    return type_name.split(".", 1)[1] if type_name.startswith("builtins.") else type_name


@dataclass
class Assessment:
    """Everything decided about one run."""

    state: RunState
    finished_ms: int | None
    alive: Fact
    steps: list[str]
    outcomes: list[StepOutcomes]
    verdicts: dict[tuple[str, str], Kind]  # (step, task) -> kind, for unsettled tasks
    details: dict[tuple[str, str], TaskDetail] = field(default_factory=dict)
    listings: dict[tuple[str, str], dict[int, set[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    complete: bool = True
    limits: dict[str, int] | None = None  # attempts allowed per step, once read
    limits_read: bool = False

    def counts(self, so: StepOutcomes) -> dict[str, int]:
        """Per-step counts by state (retried_ok within completed, retrying within running)."""
        mine = [v for (step, _), v in self.verdicts.items() if step == so.step]
        return {
            "tasks": len(so.tasks),
            "completed": len(so.ok),
            "retried_ok": len(so.ok & so.failed),
            "failed": mine.count("failed"),
            "crashed": mine.count("crashed"),
            "running": mine.count("running") + mine.count("retrying"),
            "retrying": mine.count("retrying"),
            "unknown": mine.count("unknown"),
        }

    def ordered(self, *kinds: str) -> list[tuple[str, str, Kind]]:
        """(step, task, kind) of the given kinds, in step then task order."""
        rank = {s: i for i, s in enumerate(self.steps)}
        items = [(s, t, v) for (s, t), v in self.verdicts.items() if v in kinds]
        return sorted(items, key=lambda x: (rank.get(x[0], 0), task_order(x[1])))


def assess(backend: Backend, run: RunRecord, *, budget: int = DETAIL_BUDGET, times: bool = False, finish: bool = False) -> Assessment:
    """Decide the run's state and the state of every unsettled task (and when it finished, if asked)."""
    meta, rps = backend.meta, run.pathspec
    steps = meta.list_steps(rps)
    outcomes = meta.step_outcomes(rps, steps, times=times)
    end_ok = any(so.step == "end" and so.ok for so in outcomes)
    failed_of = {so.step: so.failed for so in outcomes}
    unsettled = [(so.step, t) for so in outcomes for t in sorted((so.failed - so.ok) | (so.started - so.ok - so.failed), key=task_order)]
    alive: Fact = None if end_ok and not unsettled else meta.run_liveness(run)
    a = Assessment("unknown", None, alive, steps, outcomes, {})
    tasks_alive: Fact = False if end_ok else alive  # once the end step succeeded, the run is over
    by_step = {so.step: so for so in outcomes}
    for i, (step, task) in enumerate(unsettled):
        has_failed = task in failed_of[step]
        if i >= budget:
            a.complete = False
            a.verdicts[(step, task)] = _approximate(has_failed, tasks_alive)
            continue
        tps = rps.child(step).child(task)
        with skip_damaged(str(tps)):
            a.verdicts[(step, task)] = _task_kind(backend, tps, has_failed, tasks_alive, a)
        if (step, task) not in a.verdicts:  # damaged: left out of its step like any damaged task
            _drop(by_step[step], task)
    if not a.complete:
        a.notes.append(f"{len(unsettled)} unsettled tasks: the first {budget} examined one by one, the rest judged from the run's liveness")
    kinds = set(a.verdicts.values())
    a.state = run_state(end_ok=end_ok, any_failed="failed" in kinds, any_crashed="crashed" in kinds, alive=alive)
    if finish and a.state in FINISHED:
        a.finished_ms = meta.finished_ms(run, outcomes, completed=a.state == "completed")
    return a


def _drop(so: StepOutcomes, task: str) -> None:
    """Leave a damaged task out of its step's outcome sets (it is named in the answer's notes)."""
    for tasks in (so.started, so.ok, so.failed):
        tasks.discard(task)
    so.times.pop(task, None)


def _approximate(has_failed: bool, alive: Fact) -> Kind:
    """A task's kind from the run's liveness alone (past the budget)."""
    latest_ok = False if has_failed else None
    return _kind(task_state(latest_ok=latest_ok, run_alive=alive), latest_ok)


def _kind(state: TaskState, latest_ok: bool | None) -> Kind:
    if state == "running" and latest_ok is False:
        return "retrying"
    return state  # type: ignore[return-value]  # unsettled tasks are never completed (their latest attempt has no True)


def _task_kind(backend: Backend, task: Pathspec, has_failed: bool, run_alive: Fact, a: Assessment) -> Kind:
    """One unsettled task's kind: its latest attempt from its datastore folder (an attempt that
    saved data.json raised; one that did not is running or died), else from its metadata."""
    try:
        files = attempt_files(backend.store_for(task), task)
    except Damaged:
        raise
    except BackendError:  # no datastore: the metadata alone decides
        files = {}
    if files:
        a.listings[(task.step, task.task)] = files
        latest, made = max(files), len(files)
        latest_ok: bool | None = False if has_failed and "data.json" in files[latest] else None
        exit_recorded = "runtime" in files[latest]
    else:
        detail = backend.meta.task_detail(task)
        a.details[(task.step, task.task)] = detail
        latest_ok = detail.attempts[-1].ok if detail.attempts else None
        made, exit_recorded = len(detail.attempts), False
    retries_left: Fact = None
    if (latest_ok is False or exit_recorded) and run_alive is True:  # will the runtime try again?
        allowed = _retry_limits(backend, task, a)
        retries_left = None if allowed is None else made < allowed.get(task.step, 1)
    alive: Fact = None
    if latest_ok is None and not exit_recorded and run_alive is not False:
        alive = backend.meta.task_liveness(task)
    state = task_state(latest_ok=latest_ok, run_alive=run_alive, exit_recorded=exit_recorded, alive=alive, retries_left=retries_left)
    return _kind(state, latest_ok)


def _graph_of(backend: Backend, task: Pathspec, a: Assessment) -> dict[str, Any] | None:
    """The run's `_graph_info`, as saved by every task that saved data: this one if it did,
    else a task that succeeded, else the run's `_parameters` task."""
    ok = next((task.run_ps.child(so.step).child(min(so.ok, key=task_order)) for so in a.outcomes if so.ok), None)
    candidates = [task] + ([ok] if ok is not None else [])
    try:
        for candidate in candidates:
            attempt = latest_attempt(backend.store_for(candidate), candidate, with_data=True)
            if attempt is not None:
                return graph_info(backend.store_for(candidate), candidate, attempt)
        params = task.run_ps.child("_parameters")
        for tid in backend.meta.list_tasks(params):
            attempt = latest_attempt(backend.store_for(params.child(tid)), params.child(tid), with_data=True)
            if attempt is not None:
                return graph_info(backend.store_for(params.child(tid)), params.child(tid), attempt)
    except BackendError:
        return None
    return None


def _retry_limits(backend: Backend, task: Pathspec, a: Assessment) -> dict[str, int] | None:
    """Attempts allowed per step (1 + @retry times), from the run's `_graph_info`; read once per
    assessment, None when unreadable."""
    if not a.limits_read:
        a.limits_read = True
        graph = _graph_of(backend, task, a)
        if graph is not None:
            a.limits = {}
            for name, info in (graph.get("steps") or {}).items():
                times = 0
                for deco in (info.get("decorators") or []) if isinstance(info, dict) else []:
                    if isinstance(deco, dict) and deco.get("name") == "retry":
                        try:
                            times = int((deco.get("attributes") or {}).get("times", DEFAULT_RETRY_TIMES) or 0)
                        except (TypeError, ValueError):
                            times = DEFAULT_RETRY_TIMES
                a.limits[str(name)] = 1 + times
    return a.limits


def settle_run(backend: Backend, run: RunRecord) -> None:
    """Set a listed run's state and finish with the fewest looks: the end step, then its
    liveness, then (only if it may have failed) a search for a failed task, newest step first."""
    if run.service_status == "completed":  # the service checked the end step itself
        run.status = "completed"
        return
    end_ok: bool | None = None
    if run.service_status is None:  # else the service found no successful end step
        end_ok, finished = backend.meta.end_outcome(run)
        if end_ok:
            run.status, run.finished_ms = "completed", finished
            return
    alive = backend.meta.run_liveness(run)
    if alive is True and not backend.meta.liveness_lags:
        run.status, run.finished_ms = "running", None
        return
    # A heartbeat lags: a run whose task has just failed or died for good still looks alive.
    look = backend.meta.failure_look(run)
    if alive is True and look is None:  # no cheap look: decide it as run_summary does
        run.status = assess(backend, run).state
        return
    failed, crashed = _failed_or_crashed(backend, run, alive, look, end_failed=end_ok is False)
    run.status = run_state(end_ok=False, any_failed=failed, any_crashed=crashed, alive=alive)


def finish(backend: Backend, runs: list[RunRecord]) -> None:
    """Date the end of the runs that are over (settled ones whose finish is not known yet)."""
    for run in runs:
        if run.finished_ms is None and run.status in FINISHED:
            try:
                run.finished_ms = backend.meta.finished_ms(run, [], completed=run.status == "completed")
            except Damaged as exc:  # shown without its finish
                current_meter().damaged(str(run.pathspec), f"finish unknown: {exc.message}", skipped=False)


def _failed_or_crashed(backend: Backend, run: RunRecord, alive: Fact, look: FailureLook | None,
                       end_failed: bool = False) -> tuple[bool | None, bool | None]:
    """Whether some task of the run is failed, and whether one died for good, by the rule: first
    among the tasks the backend's cheap look names; then, unless that look settles it, step by
    step (newest first) for a failed one; the end step first when its outcome was a failure
    (then the steps need not be listed at all)."""
    holder = Assessment("unknown", None, alive, [], [], {})
    if look is not None:
        if look.failed and alive is not True:
            return True, None  # its latest attempt failed and no retry can follow in a run that is not alive
        for task in look.failed:  # alive: failed only if its @retry is used up
            if _task_kind(backend, task, True, alive, holder) == "failed":
                return True, None
        crashed = any(_task_kind(backend, task, False, alive, holder) == "crashed" for task in look.unfinished) if alive is True else None
        if look.whole_run or alive is True:
            return False, crashed
    if end_failed:
        end = run.pathspec.child("end")
        for task_id in sorted(backend.meta.failed_tasks_of(end), key=task_order):
            if _task_kind(backend, end.child(task_id), True, alive, holder) == "failed":
                return True, None
    steps = backend.meta.list_steps(run.pathspec)
    for step in list(reversed(steps))[:SETTLE_STEPS]:
        sps = run.pathspec.child(step)
        for task_id in sorted(backend.meta.failed_tasks_of(sps), key=task_order):
            if _task_kind(backend, sps.child(task_id), True, alive, holder) == "failed":
                return True, None
    return (False if len(steps) <= SETTLE_STEPS else None), None


def run_status(backend: Backend, run: RunRecord) -> RunState:
    """A run's state (settled once, then remembered on the record)."""
    if run.status is None:
        settle_run(backend, run)
    return run.status or "unknown"


def exception_of(backend: Backend, task: Pathspec, attempts: list[int]) -> dict[str, Any]:
    """The `_exception` of the latest of `attempts` that recorded one ({} when none)."""
    for attempt in sorted(attempts, reverse=True):
        exc = task_exception(backend.store_for(task), task, attempt)
        if exc:
            return exc
    return {}


def failed_attempts(a: Assessment, task: Pathspec) -> list[int]:
    """Attempts of a task that may hold an exception: those whose outcome was False."""
    detail = a.details.get((task.step, task.task))
    if detail is not None:
        return [x.attempt for x in detail.attempts if x.ok is False]
    files = a.listings.get((task.step, task.task)) or {}
    return [n for n, names in files.items() if "data.json" in names]


def first_decided_failure(backend: Backend, run: Pathspec, steps: list[str], first: DecidedTask | None = None) -> FailureBrief | None:
    """The first failed (else crashed) task in step order, from a backend that decides states
    (`first` when the backend named it already), with its exception."""
    if first is None:
        decided = backend.meta.decided_tasks(run, ["failed", "crashed"])
        if decided is None or not decided.tasks:
            return None
        rank = {s: i for i, s in enumerate(steps)}
        first = min(decided.tasks, key=lambda t: (t.state != "failed", rank.get(t.step, len(rank)), task_order(t.task)))
    tps = run.child(first.step).child(first.task)
    exc = exception_of(backend, tps, [x.attempt for x in first.attempts if x.ok is False])
    if first.state == "crashed" and not exc:
        return FailureBrief(pathspec=str(tps), exception_type="crashed", message="died without recording an outcome")
    return FailureBrief(pathspec=str(tps), exception_type=short_type(exc.get("type")), message=clip(exc.get("message"), 300))


def first_failure(backend: Backend, run: RunRecord, a: Assessment) -> FailureBrief | None:
    """The first failed (else crashed) task in step order, with its exception."""
    for kinds in (("failed",), ("crashed",)):
        for step, task, kind in a.ordered(*kinds):
            tps = run.pathspec.child(step).child(task)
            with skip_damaged(str(tps)):  # a damaged one is named; the next failure is shown
                if (step, task) not in a.details and (step, task) not in a.listings:
                    a.details[(step, task)] = backend.meta.task_detail(tps)
                exc = exception_of(backend, tps, failed_attempts(a, tps))
                if kind == "crashed" and not exc:
                    return FailureBrief(pathspec=str(tps), exception_type="crashed", message="died without recording an outcome")
                return FailureBrief(pathspec=str(tps), exception_type=short_type(exc.get("type")), message=clip(exc.get("message"), 300))
    return None
