"""Failed, crashed and retried tasks of a run."""

from __future__ import annotations

from . import _limits
from ._backend import get_backend
from ._blobs import task_exception
from ._cost import metered
from ._errors import BadInput
from ._inputs import check_limit, cursor_offset, decode_cursor, encode_cursor, parse_pathspec
from ._models import FailedTask, FailedTaskList
from ._outcomes import short_type, task_order
from ._result import clip, cost_of
from .backends.base import Backend

_LIVENESS_BUDGET = 50  # undecided tasks checked one by one while a run is still running


def failed_tasks(run: str, *, limit: int = 50, cursor: str | None = None, include_retried: bool = True) -> FailedTaskList:
    """Failed and crashed tasks of a run, with exception and traceback tail.

    Outcomes come from attempt_ok metadata: tasks that failed and then
    succeeded on retry are listed as retried_ok (not failures); a task that
    died without recording an outcome is crashed. Cost: one outcome query per
    step (flat in tasks) plus one detail lookup per task returned.
    """
    with metered() as meter:
        ps = parse_pathspec(run, "run")
        limit = check_limit("limit", limit, low=1, high=_limits.cap("failed_tasks"))
        state = decode_cursor(cursor, "failed_tasks")
        if state is not None and state.get("r", str(ps)) != str(ps):
            raise BadInput(f"cursor belongs to failed_tasks of {state['r']}", hint=f"pass it with run='{state['r']}', or drop the cursor")
        start = cursor_offset(state, "failed_tasks")
        backend = get_backend()
        rec = backend.get_run(ps.flow, ps.run)
        status, _ = backend.run_status(rec)
        steps = backend.list_steps(ps.flow, ps.run)
        notes = [f"backend: {backend.kind}; run status {status}"]
        candidates: list[tuple[str, str, str]] = []  # (step, task, kind)
        checked = 0
        for so in backend.step_outcomes(ps.flow, ps.run, steps):
            for task in so.failed - so.ok:
                candidates.append((so.step, task, "failed"))
            if include_retried:
                for task in so.ok & so.failed:
                    candidates.append((so.step, task, "retried_ok"))
            for task in sorted(so.started - so.ok - so.failed, key=task_order):
                if status != "running":
                    candidates.append((so.step, task, "crashed"))
                elif checked < _LIVENESS_BUDGET:
                    checked += 1
                    attempt = backend.latest_attempt(ps.flow, ps.run, so.step, task)
                    if backend.attempt_ended(ps.flow, ps.run, so.step, task, attempt)[0]:
                        candidates.append((so.step, task, "crashed"))
                elif checked == _LIVENESS_BUDGET:
                    checked += 1
                    notes.append(f"run is running: only {_LIVENESS_BUDGET} unfinished tasks were checked for crashes")
        order = {s: i for i, s in enumerate(steps)}
        candidates.sort(key=lambda c: (order.get(c[0], 0), task_order(c[1])))
        page = candidates[start : start + limit]
        items = [_describe(backend, ps.flow, ps.run, step, task, kind, status) for step, task, kind in page]
        for item, (_, _, kind) in zip(items, page):
            if item.status != kind:  # an earlier attempt failed, the latest one crashed
                candidates[candidates.index((item.step, item.task_id, kind))] = (item.step, item.task_id, item.status)
        more = start + limit < len(candidates)
        return FailedTaskList(
            run=f"{ps.flow}/{ps.run}",
            failed=items,
            total_failed=sum(1 for c in candidates if c[2] == "failed"),
            total_crashed=sum(1 for c in candidates if c[2] == "crashed"),
            total_retried_ok=sum(1 for c in candidates if c[2] == "retried_ok"),
            truncated=more,
            next_cursor=encode_cursor("failed_tasks", {"r": str(ps), "i": start + limit}) if more else None,
            scanned=len(candidates),
            notes=notes,
            cost=cost_of(meter),
        )


def _describe(backend: Backend, flow: str, run: str, step: str, task: str, kind: str, run_status: str) -> FailedTask:
    detail = backend.task_detail(flow, run, step, task)
    attempts = detail.attempts
    latest = attempts[-1].attempt if attempts else 0
    if kind == "failed" and attempts and attempts[-1].ok is None:
        # The latest attempt never recorded an outcome: crashed if it is over, else a retry is running.
        if run_status != "running" or backend.attempt_ended(flow, run, step, task, latest)[0]:
            kind = "crashed"
    bad = [a.attempt for a in attempts if a.ok is False or (a.ok is None and (kind == "crashed" or a.attempt != latest))]
    return_code = None
    if kind == "crashed":
        return_code = backend.attempt_ended(flow, run, step, task, latest)[1]
    exc = None
    for attempt in sorted((a.attempt for a in attempts if a.ok is False), reverse=True):
        exc = task_exception(backend, flow, run, step, task, attempt)
        if exc:
            break
    exc = exc or {}
    trace = exc.get("stacktrace")
    if trace:
        trace = "\n".join(trace.rstrip().splitlines()[-15:])
    message = exc.get("message")
    if kind == "crashed" and not message:
        message = "died without recording an outcome" + (f" (return code {return_code})" if return_code is not None else "")
    return FailedTask(
        pathspec=f"{flow}/{run}/{step}/{task}",
        step=step,
        task_id=task,
        status=kind,  # type: ignore[arg-type]
        attempts=len(attempts) or 1,
        failed_attempts=bad,
        exception_type=short_type(exc.get("type")),
        message=clip(message, 500),
        traceback=clip(trace, 2000),
        return_code=return_code,
        foreach_index=detail.foreach_index,
    )
