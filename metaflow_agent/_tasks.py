"""Failed, crashed and retried tasks of a run."""

from __future__ import annotations

from . import _config
from ._backend import Backend, get_backend
from ._blobs import attempt_ended, foreach_position
from ._cost import metered
from ._inputs import check_limit, cursor_offset, make_cursor, open_cursor, query_key
from ._models import Cost, FailedTask, FailedTaskList
from ._outcomes import DETAIL_BUDGET, Assessment, assess, exception_of, short_type
from ._pathspec import Pathspec
from ._records import AttemptInfo, TaskDetail, task_order
from ._text import clip


def failed_tasks(run: str, *, limit: int = 50, cursor: str | None = None, include_retried: bool = True) -> FailedTaskList:
    """Failed and crashed tasks of a run, with exception and traceback tail.

    Outcomes come from attempt_ok metadata, by each task's latest attempt:
    failed (no retry left), crashed (died without an outcome), retrying, and
    retried_ok (failed, then succeeded: not a failure). Cost: the per-step
    outcome sets (flat in tasks) plus one lookup per unsettled task.
    """
    with metered() as meter:
        ps = Pathspec.parse(run, "run")
        limit = check_limit("limit", limit, low=1, high=_config.cap("failed_tasks"))
        key = query_key(str(ps), include_retried)
        start = cursor_offset(open_cursor(cursor, "failed_tasks", key), "failed_tasks")
        backend = get_backend()
        rec = backend.meta.get_run(ps)
        a = assess(backend, rec, budget=max(DETAIL_BUDGET, start + limit))
        candidates = a.ordered("failed", "crashed", "retrying")
        if include_retried:
            rank = {s: i for i, s in enumerate(a.steps)}
            retried = [(so.step, t, "retried_ok") for so in a.outcomes for t in so.ok & so.failed]
            candidates = sorted(candidates + retried, key=lambda c: (rank.get(c[0], 0), task_order(c[1])))
        page = candidates[start : start + limit]
        items = [
            _describe(backend, ps.child(step).child(task), kind, a.details.get((step, task)) or _from_datastore(backend, ps.child(step).child(task), a, kind))
            for step, task, kind in page
        ]
        more = start + limit < len(candidates)
        result = FailedTaskList(
            run=str(ps),
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
            cost=Cost.of(meter),
        )
        return result.resumable(lambda kept: make_cursor("failed_tasks", key, i=start + kept))


def _from_datastore(backend: Backend, task: Pathspec, a: Assessment, kind: str) -> TaskDetail | None:
    """Attempts of a failed or crashed task of a finished run, from its folder listing
    (no metadata request): an attempt that saved data raised, one that did not crashed."""
    files = a.listings.get((task.step, task.task))
    if not files or kind not in ("failed", "crashed"):
        return None
    attempts = [AttemptInfo(n, False if "data.json" in files[n] else None) for n in sorted(files)]
    saved = [n for n in sorted(files) if "data.json" in files[n]]
    where = foreach_position(backend.store, task, saved[-1]) if saved else None
    return TaskDetail(attempts, foreach_index=where)


def _describe(backend: Backend, task: Pathspec, kind: str, detail: TaskDetail | None) -> FailedTask:
    if detail is None:
        detail = backend.meta.task_detail(task)
    attempts = detail.attempts
    latest = attempts[-1].attempt if attempts else 0
    bad = [a.attempt for a in attempts if a.ok is False or (a.ok is None and (kind == "crashed" or a.attempt != latest))]
    return_code = attempt_ended(backend.store, task, latest)[1] if kind == "crashed" else None
    exc = exception_of(backend, task, detail)
    trace = exc.get("stacktrace")
    if trace:
        trace = "\n".join(trace.rstrip().splitlines()[-15:])
    message = exc.get("message")
    if kind == "crashed" and attempts and attempts[-1].ok is None:
        died = "died without recording an outcome" + (f" (return code {return_code})" if return_code is not None else "")
        message = f"{died}; an earlier attempt raised: {message}" if message else died
    return FailedTask(
        pathspec=str(task),
        step=task.step,
        task_id=task.task,
        status=kind,  # type: ignore[arg-type]  # kind is one of the FailedTask statuses by construction
        attempts=len(attempts) or 1,
        failed_attempts=bad,
        exception_type=short_type(exc.get("type")),
        message=clip(message, 500),
        traceback=clip(trace, 2000),
        return_code=return_code,
        foreach_index=detail.foreach_index,
    )
