"""Task and run outcomes, decided in one place for every backend and function.

Outcomes come from `attempt_ok` metadata, never from the Client's
`Task.finished` (False for a task that raised). Per task, by its latest attempt:

- an attempt succeeded → completed (retried_ok when an earlier one failed);
- latest attempt failed → failed once its retries are exhausted (the step's
  `@retry` times, read from the run's `_graph_info`) or the run is over, else
  retrying (the runtime will start another attempt);
- latest attempt has no outcome → running while the task is alive; crashed
  when its process exited (the runtime's `<attempt>.runtime` record), its
  heartbeat / files went stale, or the run is over.

A run is completed when its end step succeeded, failed when a task failed or
crashed for good or nothing is alive any more, and running otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._backend import Backend
from ._blobs import (
    attempt_ended,
    attempt_files,
    graph_info,
    latest_attempt,
    task_exception,
)
from ._errors import AgentError
from ._models import FailureBrief
from ._pathspec import Pathspec
from ._records import RunRecord, StepOutcomes, TaskDetail, task_order
from ._text import clip

DETAIL_BUDGET = 50  # tasks examined one by one per run before approximating
DEFAULT_RETRY_TIMES = 3  # metaflow's @retry default


def short_type(type_name: str | None) -> str | None:
    if not type_name:
        return None
    return type_name.split(".", 1)[1] if type_name.startswith("builtins.") else type_name


@dataclass
class Assessment:
    """Everything decided about one run."""

    status: str
    finished_ms: int | None
    steps: list[str]
    outcomes: list[StepOutcomes]
    verdicts: dict[tuple[str, str], str]  # (step, task) -> failed/crashed/retrying/running, for unsettled tasks
    details: dict[tuple[str, str], TaskDetail] = field(default_factory=dict)
    listings: dict[tuple[str, str], dict[int, set[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    complete: bool = True

    def counts(self, so: StepOutcomes) -> dict[str, int]:
        """Per-step counts by outcome."""
        mine = [v for (step, _), v in self.verdicts.items() if step == so.step]
        return {
            "tasks": len(so.started | so.ok | so.failed),
            "completed": len(so.ok),
            "retried_ok": len(so.ok & so.failed),
            "failed": mine.count("failed"),
            "crashed": mine.count("crashed"),
            "retrying": mine.count("retrying"),
            "running": mine.count("running"),
        }

    def ordered(self, *kinds: str) -> list[tuple[str, str, str]]:
        """(step, task, verdict) of the given kinds, in step then task order."""
        rank = {s: i for i, s in enumerate(self.steps)}
        items = [(s, t, v) for (s, t), v in self.verdicts.items() if v in kinds]
        return sorted(items, key=lambda x: (rank.get(x[0], 0), task_order(x[1])))


def max_attempts(backend: Backend, run: Pathspec, outcomes: list[StepOutcomes]) -> dict[str, int] | None:
    """Attempts allowed per step (1 + @retry times), from the run's `_graph_info`
    artifact (a plain dict, a few KB); None when no task's data can be read."""
    for so in outcomes:
        task = min(so.ok or so.started, key=task_order, default=None)
        if task is None:
            continue
        tps = run.child(so.step).child(task)
        try:
            attempt = latest_attempt(backend.store, tps, with_data=True)
        except AgentError:
            continue
        graph = None if attempt is None else graph_info(backend.store, tps, attempt)
        if graph is None:
            continue
        allowed = {}
        for name, info in (graph.get("steps") or {}).items():
            times = 0
            for deco in (info or {}).get("decorators") or []:
                if isinstance(deco, dict) and deco.get("name") == "retry":
                    try:
                        times = int((deco.get("attributes") or {}).get("times", DEFAULT_RETRY_TIMES) or 0)
                    except (TypeError, ValueError):
                        times = DEFAULT_RETRY_TIMES
            allowed[name] = 1 + times
        return allowed
    return None


def run_status(backend: Backend, run: RunRecord) -> tuple[str, int | None]:
    """(status, finished_ms): a cheap check first, the full assessment when it cannot tell."""
    quick = backend.meta.quick_status(run)
    if quick is not None:
        return quick
    a = assess(backend, run)
    return a.status, a.finished_ms


def assess(backend: Backend, run: RunRecord, *, budget: int = DETAIL_BUDGET) -> Assessment:
    """Decide the run's status and the outcome of every unsettled task.

    Flat in the number of tasks: the per-step outcome sets, plus one detail
    lookup per unsettled task (failed or unfinished) up to `budget`.
    """
    meta, rps = backend.meta, run.pathspec
    steps = meta.list_steps(rps)
    outcomes = meta.step_outcomes(rps, steps)
    end_ok = any(so.step == "end" and so.ok for so in outcomes)
    live = meta.run_live(run, outcomes)
    a = Assessment("running", None, steps, outcomes, {})
    failed_of = {so.step: so.failed for so in outcomes}
    unsettled = [(so.step, t) for so in outcomes for t in sorted((so.failed - so.ok) | (so.started - so.ok - so.failed), key=task_order)]
    # Retry limits matter only when a latest attempt failed while the run may go on.
    limits = max_attempts(backend, rps, outcomes) if live and any(t in failed_of[s] for s, t in unsettled) else None
    # A dead run (stale heartbeat) settles every task from the sets alone.
    judge_from_sets = not live and not end_ok and not meta.tasks_outlive_run
    for i, (step, task) in enumerate(unsettled):
        if i >= budget:
            a.complete = False
            a.verdicts[(step, task)] = "failed" if task in failed_of[step] else ("running" if live and not end_ok else "crashed")
            continue
        tps = rps.child(step).child(task)
        if judge_from_sets:
            verdict = _dead_run_verdict(backend, tps, task in failed_of[step], a)
            if verdict is not None:
                a.verdicts[(step, task)] = verdict
                continue
        detail = meta.task_detail(tps)
        a.details[(step, task)] = detail
        a.verdicts[(step, task)] = _verdict(backend, tps, detail, limits, live and not end_ok)
    if judge_from_sets and unsettled:
        a.notes.append("the run is over (stale heartbeat): tasks judged from the outcome sets, no per-task lookups")
    if not a.complete:
        a.notes.append(f"{len(unsettled)} unsettled tasks: the first {budget} examined one by one, the rest judged from the run's state")
    verdicts = set(a.verdicts.values())
    if end_ok:
        a.status = "completed"
        # Nothing can still be running in a finished run.
        a.verdicts = {k: ("crashed" if v in ("running", "retrying") else v) for k, v in a.verdicts.items()}
    elif verdicts & {"failed", "crashed"} or not (live or verdicts & {"running", "retrying"}):
        a.status = "failed"
        a.verdicts = {k: ("crashed" if v == "running" else "failed" if v == "retrying" else v) for k, v in a.verdicts.items()}
    if a.status != "running":
        a.finished_ms = meta.finished_ms(run, outcomes)
    return a


def _dead_run_verdict(backend: Backend, task: Pathspec, has_failed: bool, a: Assessment) -> str | None:
    """In a run that is over: failed when the latest attempt saved its data (it raised),
    crashed when it did not. Read from one datastore listing; None when the datastore
    has nothing for the task (then the metadata decides)."""
    if not has_failed:
        return "crashed"
    files = attempt_files(backend.store, task)
    if not files:
        return None
    a.listings[(task.step, task.task)] = files
    return "failed" if "data.json" in files[max(files)] else "crashed"


def _verdict(backend: Backend, task: Pathspec, detail: TaskDetail, limits: dict[str, int] | None, live: bool) -> str:
    meta = backend.meta
    if not detail.attempts:
        return "running" if live or meta.tasks_outlive_run else "crashed"
    latest = detail.attempts[-1]
    allowed = limits.get(task.step, 1) if limits is not None else None
    exhausted = allowed is not None and len(detail.attempts) >= allowed
    if latest.ok is False:
        if exhausted or allowed is None or not live:
            return "failed"
        return "retrying"
    ended, _ = attempt_ended(backend.store, task, latest.attempt)
    if ended:
        return "retrying" if live and allowed is not None and not exhausted else "crashed"
    if not live and not meta.tasks_outlive_run:
        return "crashed"  # the run's heartbeat stopped: nothing of it is alive
    return "running" if meta.task_fresh(task) else "crashed"


def exception_of(backend: Backend, task: Pathspec, detail: TaskDetail) -> dict[str, Any]:
    """The `_exception` of the latest attempt that recorded a failure ({} when none)."""
    for attempt in sorted((a.attempt for a in detail.attempts if a.ok is False), reverse=True):
        exc = task_exception(backend.store, task, attempt)
        if exc:
            return exc
    return {}


def first_failure(backend: Backend, run: RunRecord, a: Assessment) -> FailureBrief | None:
    """The first failed (else crashed) task in step order, with its exception."""
    for kinds in (("failed",), ("crashed",)):
        for step, task, verdict in a.ordered(*kinds):
            tps = run.pathspec.child(step).child(task)
            detail = a.details.get((step, task)) or backend.meta.task_detail(tps)
            exc = exception_of(backend, tps, detail)
            if verdict == "crashed" and not exc:
                return FailureBrief(pathspec=str(tps), exception_type="crashed", message="died without recording an outcome")
            return FailureBrief(pathspec=str(tps), exception_type=short_type(exc.get("type")), message=clip(exc.get("message"), 300))
    return None
