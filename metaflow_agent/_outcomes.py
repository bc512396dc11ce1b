"""Task and run outcomes derived from attempt_ok metadata (never Task.finished)."""

from __future__ import annotations

from ._blobs import task_exception
from ._models import FailureBrief
from ._result import clip
from .backends.base import Backend, StepOutcomes


def task_order(task_id: str) -> tuple[int, str]:
    return (int(task_id), "") if task_id.isdigit() else (1 << 62, task_id)


def classify_run(so: StepOutcomes, run_status: str) -> dict[str, int]:
    """Counts by outcome for one step. Unfinished tasks are running while the
    run is, and crashed once the run is over."""
    undecided = so.started - so.ok - so.failed
    over = run_status != "running"
    return {
        "tasks": len(so.started | so.ok | so.failed),
        "completed": len(so.ok),
        "failed": len(so.failed - so.ok),
        "running": 0 if over else len(undecided),
        "crashed": len(undecided) if over else 0,
        "retried_ok": len(so.ok & so.failed),
    }


def short_type(type_name: str | None) -> str | None:
    if not type_name:
        return None
    return type_name.split(".", 1)[1] if type_name.startswith("builtins.") else type_name


def first_failure(backend: Backend, flow: str, run: str, outcomes: list[StepOutcomes], run_status: str) -> FailureBrief | None:
    """The first failed (else crashed) task in step order, with its exception."""
    for so in outcomes:
        failed = sorted(so.failed - so.ok, key=task_order)
        if failed:
            task = failed[0]
            attempt = backend.latest_attempt(flow, run, so.step, task)
            exc = task_exception(backend, flow, run, so.step, task, attempt) or {}
            return FailureBrief(
                pathspec=f"{flow}/{run}/{so.step}/{task}",
                exception_type=short_type(exc.get("type")),
                message=clip(exc.get("message"), 300),
            )
    if run_status != "running":
        for so in outcomes:
            crashed = sorted(so.started - so.ok - so.failed, key=task_order)
            if crashed:
                return FailureBrief(pathspec=f"{flow}/{run}/{so.step}/{crashed[0]}", exception_type="crashed", message="died without recording an outcome")
    return None
