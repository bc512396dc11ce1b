"""Failed, crashed and retried tasks of a run."""

from __future__ import annotations

from . import _limits
from ._backend import get_backend
from ._blobs import foreach_position
from ._cost import metered
from ._inputs import (
    check_limit,
    cursor_offset,
    make_cursor,
    open_cursor,
    parse_pathspec,
    query_key,
)
from ._errors import BadInput
from ._models import Detail, FailedTask, FailedTaskList
from ._outcomes import (
    DETAIL_BUDGET,
    Assessment,
    assess,
    exception_of,
    short_type,
    task_order,
)
from ._result import clip, cost_of
from .backends.base import AttemptInfo, Backend, RunRecord, TaskDetail


def failed_tasks(
    run: str, *, limit: int = 50, cursor: str | None = None, include_retried: bool = True, detail: Detail = "full"
) -> FailedTaskList:
    """Failed and crashed tasks of a run, with exception and traceback tail.

    Status by latest attempt: failed (no retry left), crashed (died without
    an outcome), retrying, or retried_ok (recovered: not a failure). Cost:
    flat in tasks, plus one lookup per unsettled task.

    Args:
        run: Run pathspec 'Flow/RunId'.
        limit: Most tasks to return.
        cursor: next_cursor of the previous page.
        include_retried: Also list retried_ok tasks (recovered, not failures).
        detail: 'brief' drops tracebacks (many tasks per answer); 'full' keeps them.
    """
    with metered() as meter:
        ps = parse_pathspec(run, "run")
        limit = check_limit("limit", limit, low=1, high=_limits.cap("failed_tasks"))
        if detail not in ("brief", "full"):
            raise BadInput(f"detail={detail!r}", hint="use detail='brief' (no tracebacks) or 'full'")
        key = query_key(str(ps), include_retried)
        start = cursor_offset(open_cursor(cursor, "failed_tasks", key), "failed_tasks")
        backend = get_backend()
        rec = backend.get_run(ps.flow, ps.run)
        a = assess(backend, rec, budget=max(DETAIL_BUDGET, start + limit))
        kinds = ("failed", "crashed", "retrying")
        candidates = a.ordered(*kinds)
        if include_retried:
            rank = {s: i for i, s in enumerate(a.steps)}
            retried = [(so.step, t, "retried_ok") for so in a.outcomes for t in so.ok & so.failed]
            candidates = sorted(candidates + retried, key=lambda c: (rank.get(c[0], 0), task_order(c[1])))
        page = candidates[start : start + limit]
        items = [
            _describe(backend, ps.flow, ps.run, step, task, kind, a.details.get((step, task)) or _from_datastore(backend, rec, a, step, task, kind), detail)
            for step, task, kind in page
        ]
        more = start + limit < len(candidates)
        return FailedTaskList(
            run=f"{ps.flow}/{ps.run}",
            failed=items,
            total_failed=sum(1 for c in candidates if c[2] == "failed"),
            total_crashed=sum(1 for c in candidates if c[2] == "crashed"),
            total_retrying=sum(1 for c in candidates if c[2] == "retrying"),
            total_retried_ok=sum(1 for so in a.outcomes for _ in so.ok & so.failed),
            truncated=more,
            next_cursor=make_cursor("failed_tasks", key, i=start + limit) if more else None,
            complete=a.complete,
            scanned=len(candidates),
            notes=[f"backend: {backend.kind}; run status {a.status}"] + a.notes,
            cost=cost_of(meter),
        )


def _from_datastore(backend: Backend, run: RunRecord, a: Assessment, step: str, task: str, kind: str) -> TaskDetail | None:
    """Attempts of a failed or crashed task of a finished run, from its folder listing
    (no metadata request): an attempt that saved data raised, one that did not crashed."""
    files = a.listings.get((step, task))
    if not files or kind not in ("failed", "crashed"):
        return None
    attempts = [AttemptInfo(n, False if "data.json" in files[n] else None) for n in sorted(files)]
    saved = [n for n in sorted(files) if "data.json" in files[n]]
    where = foreach_position(backend, run.flow, run.run_id, step, task, saved[-1]) if saved else None
    return TaskDetail(attempts, foreach_index=where)


def _describe(
    backend: Backend, flow: str, run: str, step: str, task: str, kind: str, detail: TaskDetail | None, level: Detail = "full"
) -> FailedTask:
    if detail is None:
        detail = backend.task_detail(flow, run, step, task)
    attempts = detail.attempts
    latest = attempts[-1].attempt if attempts else 0
    bad = [a.attempt for a in attempts if a.ok is False or (a.ok is None and (kind == "crashed" or a.attempt != latest))]
    return_code = backend.attempt_ended(flow, run, step, task, latest)[1] if kind == "crashed" else None
    exc = exception_of(backend, flow, run, step, task, detail)
    trace = exc.get("stacktrace") if level == "full" else None
    if trace:
        trace = "\n".join(trace.rstrip().splitlines()[-15:])
    message = exc.get("message")
    if kind == "crashed" and attempts and attempts[-1].ok is None:
        died = "died without recording an outcome" + (f" (return code {return_code})" if return_code is not None else "")
        message = f"{died}; an earlier attempt raised: {message}" if message else died
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
