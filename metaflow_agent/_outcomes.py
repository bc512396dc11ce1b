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

import io
import pickle
from dataclasses import dataclass, field
from typing import Any

from ._blobs import (
    attempt_files,
    data_index,
    latest_data_attempt,
    load_blob,
    task_exception,
)
from ._errors import AgentError
from ._models import FailureBrief
from ._result import clip
from .backends.base import Backend, RunRecord, StepOutcomes, TaskDetail

DETAIL_BUDGET = 50  # tasks examined one by one per run before approximating
DEFAULT_RETRY_TIMES = 3  # metaflow's @retry default


def task_order(task_id: str) -> tuple[int, str]:
    return (int(task_id), "") if task_id.isdigit() else (1 << 62, task_id)


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


class _PlainData(pickle.Unpickler):
    """Unpickles builtin containers and scalars only (the graph info is such a dict)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed here")


def max_attempts(backend: Backend, flow: str, run: str, outcomes: list[StepOutcomes]) -> dict[str, int] | None:
    """Attempts allowed per step (1 + @retry times), from the run's `_graph_info`
    artifact (a plain dict, a few KB); None when no task's data can be read."""
    for so in outcomes:
        task = min(so.ok or so.started, key=task_order, default=None)
        if task is None:
            continue
        try:
            attempt = latest_data_attempt(backend, flow, run, so.step, task)
            sha = None if attempt is None else data_index(backend, flow, run, so.step, task, attempt).get("objects", {}).get("_graph_info")
            if not sha:
                continue
            graph = _PlainData(io.BytesIO(load_blob(backend, flow, sha, max_bytes=1 << 20))).load()
        except (AgentError, pickle.UnpicklingError, EOFError, ValueError):
            continue
        allowed = {}
        for name, info in (graph.get("steps") or {}).items():
            times = 0
            for deco in info.get("decorators") or []:
                if isinstance(deco, dict) and deco.get("name") == "retry":
                    times = int((deco.get("attributes") or {}).get("times", DEFAULT_RETRY_TIMES) or 0)
            allowed[name] = 1 + times
        return allowed
    return None


def assess(backend: Backend, run: RunRecord, *, budget: int = DETAIL_BUDGET) -> Assessment:
    """Decide the run's status and the outcome of every unsettled task.

    Flat in the number of tasks: the per-step outcome sets, plus one detail
    lookup per unsettled task (failed or unfinished) up to `budget`.
    """
    steps = backend.list_steps(run.flow, run.run_id)
    outcomes = backend.step_outcomes(run.flow, run.run_id, steps)
    end_ok = any(so.step == "end" and so.ok for so in outcomes)
    live = backend.run_live(run, outcomes)
    a = Assessment("running", None, steps, outcomes, {})
    failed_of = {so.step: so.failed for so in outcomes}
    unsettled = [(so.step, t) for so in outcomes for t in sorted((so.failed - so.ok) | (so.started - so.ok - so.failed), key=task_order)]
    # Retry limits matter only when a latest attempt failed while the run may go on.
    limits = max_attempts(backend, run.flow, run.run_id, outcomes) if live and any(t in failed_of[s] for s, t in unsettled) else None
    # A dead run (stale heartbeat) settles every task from the sets alone.
    judge_from_sets = not live and not end_ok and not backend.tasks_outlive_run
    for i, (step, task) in enumerate(unsettled):
        if i >= budget:
            a.complete = False
            a.verdicts[(step, task)] = "failed" if task in failed_of[step] else ("running" if live and not end_ok else "crashed")
            continue
        if judge_from_sets:
            verdict = _dead_run_verdict(backend, run, step, task, task in failed_of[step], a)
            if verdict is not None:
                a.verdicts[(step, task)] = verdict
                continue
        detail = backend.task_detail(run.flow, run.run_id, step, task)
        a.details[(step, task)] = detail
        a.verdicts[(step, task)] = _verdict(backend, run, step, task, detail, limits, live and not end_ok)
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
        a.finished_ms = backend.finished_ms(run, outcomes)
    return a


def _dead_run_verdict(backend: Backend, run: RunRecord, step: str, task: str, has_failed: bool, a: Assessment) -> str | None:
    """In a run that is over: failed when the latest attempt saved its data (it raised),
    crashed when it did not. Read from one datastore listing; None when the datastore
    has nothing for the task (then the metadata decides)."""
    if not has_failed:
        return "crashed"
    files = attempt_files(backend, run.flow, run.run_id, step, task)
    if not files:
        return None
    a.listings[(step, task)] = files
    return "failed" if "data.json" in files[max(files)] else "crashed"


def _verdict(backend: Backend, run: RunRecord, step: str, task: str, detail: TaskDetail,
             limits: dict[str, int] | None, live: bool) -> str:
    if not detail.attempts:
        return "running" if live or backend.tasks_outlive_run else "crashed"
    latest = detail.attempts[-1]
    allowed = limits.get(step, 1) if limits is not None else None
    exhausted = allowed is not None and len(detail.attempts) >= allowed
    if latest.ok is False:
        if exhausted or allowed is None or not live:
            return "failed"
        return "retrying"
    ended, _ = backend.attempt_ended(run.flow, run.run_id, step, task, latest.attempt)
    if ended:
        return "retrying" if live and allowed is not None and not exhausted else "crashed"
    if not live and not backend.tasks_outlive_run:
        return "crashed"  # the run's heartbeat stopped: nothing of it is alive
    return "running" if backend.task_fresh(run.flow, run.run_id, step, task) else "crashed"


def exception_of(backend: Backend, flow: str, run: str, step: str, task: str, detail: TaskDetail) -> dict[str, Any]:
    """The `_exception` of the latest attempt that recorded a failure ({} when none)."""
    for attempt in sorted((a.attempt for a in detail.attempts if a.ok is False), reverse=True):
        exc = task_exception(backend, flow, run, step, task, attempt)
        if exc:
            return exc
    return {}


def first_failure(backend: Backend, run: RunRecord, a: Assessment) -> FailureBrief | None:
    """The first failed (else crashed) task in step order, with its exception."""
    for kinds in (("failed",), ("crashed",)):
        for step, task, verdict in a.ordered(*kinds):
            detail = a.details.get((step, task)) or backend.task_detail(run.flow, run.run_id, step, task)
            exc = exception_of(backend, run.flow, run.run_id, step, task, detail)
            if verdict == "crashed" and not exc:
                return FailureBrief(pathspec=f"{run.flow}/{run.run_id}/{step}/{task}", exception_type="crashed", message="died without recording an outcome")
            return FailureBrief(
                pathspec=f"{run.flow}/{run.run_id}/{step}/{task}",
                exception_type=short_type(exc.get("type")),
                message=clip(exc.get("message"), 300),
            )
    return None
