"""Tasks of a run: the failed, crashed and retried ones with their errors, or all of them by state."""

from __future__ import annotations

from . import _config
from ._backend import Backend, get_backend
from ._blobs import attempt_ended, attempt_times, foreach_position, latest_attempt
from ._cost import call, skip_damaged
from ._cursor import cursor_offset, make_cursor, open_cursor, query_key
from ._errors import AgentError, BadInput
from ._inputs import check_limit, iso
from ._models import (
    AttemptTime,
    Cost,
    Detail,
    FailedTask,
    FailedTaskList,
    ProblemKind,
    TaskInfo,
    TaskList,
)
from ._outcomes import (
    DETAIL_BUDGET,
    KIND_STATE,
    Assessment,
    assess,
    exception_of,
    short_type,
)
from ._pathspec import Pathspec
from ._records import AttemptInfo, DecidedTask, TaskDetail, task_order
from ._states import TASK_STATES, TaskState
from ._text import clip

_PROBLEM: dict[str, ProblemKind] = {"failed": "failed", "crashed": "crashed", "retrying": "retrying", "unknown": "unknown"}
# Failures first; tasks that recovered last.
_KIND_ORDER: dict[str, int] = {"failed": 0, "crashed": 1, "unknown": 2, "retrying": 3, "retried_ok": 4}


def failed_tasks(
    run: str, *, limit: int = 50, cursor: str | None = None, include_retried: bool = True, detail: Detail = "full"
) -> FailedTaskList:
    """Failed and crashed tasks of a run, with exception and traceback tail.

    Failures first (failed, crashed, unknown), then retrying tasks and
    retried_ok ones (failed an attempt, then succeeded: not failures).
    Cost: flat in tasks, plus one look per unsettled task.

    Args:
        run: Run pathspec 'Flow/RunId'.
        limit: Most tasks to return.
        cursor: next_cursor of the previous page.
        include_retried: Also list retried_ok tasks (recovered, not failures).
        detail: 'brief' drops tracebacks (many tasks per answer); 'full' keeps them.
    """
    with call() as meter:
        ps = Pathspec.parse(run, "run")
        limit = check_limit("limit", limit, low=1, high=_config.cap("failed_tasks"))
        if detail not in ("brief", "full"):
            raise BadInput(f"detail={detail!r}", hint="use detail='brief' (no tracebacks) or 'full'")
        key = query_key(str(ps), include_retried)
        start = cursor_offset(open_cursor(cursor, "failed_tasks", key), "failed_tasks")
        backend = get_backend()
        decided = backend.meta.decided_tasks(ps, ["failed", "crashed", "unknown", "running", "retried_ok"])
        details: dict[tuple[str, str], TaskDetail] = {}
        if decided is not None:  # the query service decided every task's state
            candidates = [(t.step, t.task, kind) for t in decided.tasks if (kind := _decided_kind(t)) is not None]
            details = {(t.step, t.task): TaskDetail(t.attempts) for t in decided.tasks}
            state, complete, scanned, notes = decided.run.status, decided.complete, len(decided.tasks), ["answered by the query service"]
            a = None
        else:
            rec = backend.meta.get_run(ps)
            a = assess(backend, rec, budget=max(DETAIL_BUDGET, start + limit))
            candidates = [(s, t, _PROBLEM[k]) for s, t, k in a.ordered(*_PROBLEM)]
            candidates += [(so.step, t, "retried_ok") for so in a.outcomes for t in so.ok & so.failed]
            state, complete, scanned, notes = a.state, a.complete, sum(len(so.tasks) for so in a.outcomes), a.notes
        total_retried_ok = sum(1 for c in candidates if c[2] == "retried_ok")
        if not include_retried:
            candidates = [c for c in candidates if c[2] != "retried_ok"]
        candidates.sort(key=lambda c: (_KIND_ORDER[c[2]], task_order(c[1]), c[0]))
        page = candidates[start : start + limit]
        items: list[FailedTask] = []
        shown: list[int] = []  # each item's place among the candidates (a damaged one is skipped)
        for i, (step, task, kind) in enumerate(page, start):
            tps = ps.child(step).child(task)
            with skip_damaged(str(tps)):
                found = details.get((step, task))
                if found is not None:
                    found.foreach_index = _foreach_of(backend, tps, found)
                items.append(_describe(backend, tps, kind, found or _detail(backend, a, tps), detail))
                shown.append(i)
        more = start + limit < len(candidates)
        result = FailedTaskList(
            run=str(ps),
            failed=items,
            total_failed=sum(1 for c in candidates if c[2] == "failed"),
            total_crashed=sum(1 for c in candidates if c[2] == "crashed"),
            total_unknown=sum(1 for c in candidates if c[2] == "unknown"),
            total_retrying=sum(1 for c in candidates if c[2] == "retrying"),
            total_retried_ok=total_retried_ok,
            truncated=more,
            next_cursor=make_cursor("failed_tasks", key, i=start + limit) if more else None,
            complete=complete and not meter.skipped_count,
            scanned=scanned,
            notes=[f"backend: {backend.kind}; run {state}"] + notes + meter.damage_notes() + backend.root_notes(),
            cost=Cost.of(meter),
        )
        return result.resumable(lambda kept: make_cursor("failed_tasks", key, i=shown[kept - 1] + 1))


def _decided_kind(t: DecidedTask) -> ProblemKind | None:
    """Why a task the backend decided is listed (None: it is not)."""
    if t.state == "completed":
        return "retried_ok" if t.retried_ok else None
    if t.state == "running":
        return "retrying" if any(x.ok is False for x in t.attempts) else None
    return _PROBLEM.get(t.state)


def _foreach_of(backend: Backend, task: Pathspec, detail: TaskDetail) -> str | None:
    """The task's foreach position, from the latest attempt that saved its data."""
    try:
        saved = latest_attempt(backend.store_for(task), task, with_data=True)
    except AgentError:
        return None
    return foreach_position(backend.store_for(task), task, saved) if saved is not None else None


def _detail(backend: Backend, a: Assessment | None, task: Pathspec) -> TaskDetail:
    """A task's attempts with their timing: its metadata where that is cheap or already read,
    else its datastore folder (attempt files and their times: no metadata request)."""
    known = a.details.get((task.step, task.task)) if a is not None else None
    if known is not None:
        return known
    if a is None or backend.kind == "local" or (task.step, task.task) not in a.listings:
        return backend.meta.task_detail(task)
    files = a.listings[(task.step, task.task)]
    times = attempt_times(backend.store_for(task), task)
    attempts = []
    for n in sorted(files):
        started, ended = times.get(n, (None, None))
        attempts.append(AttemptInfo(n, False if "data.json" in files[n] else None, started, ended if "data.json" in files[n] else None))
    saved = [n for n in sorted(files) if "data.json" in files[n]]
    return TaskDetail(attempts, foreach_index=foreach_position(backend.store_for(task), task, saved[-1]) if saved else None)


def _describe(backend: Backend, task: Pathspec, kind: ProblemKind, detail: TaskDetail, level: Detail = "full") -> FailedTask:
    attempts = detail.attempts
    latest = attempts[-1].attempt if attempts else 0
    bad = [x.attempt for x in attempts if x.ok is False or (x.ok is None and (kind == "crashed" or x.attempt != latest))]
    return_code = attempt_ended(backend.store_for(task), task, latest)[1] if kind == "crashed" else None
    exc = exception_of(backend, task, [x.attempt for x in attempts if x.ok is False])
    trace = exc.get("stacktrace") if level == "full" else None
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
        status=kind,
        attempts=len(attempts) or 1,
        failed_attempts=bad,
        timing=[AttemptTime(attempt=x.attempt, ok=x.ok, started_at=iso(x.started_ms),
                            duration_s=round((x.finished_ms - x.started_ms) / 1000, 3) if x.started_ms and x.finished_ms else None)
                for x in attempts],
        exception_type=short_type(exc.get("type")),
        message=clip(message, 500),
        traceback=clip(trace, 2000),
        return_code=return_code,
        foreach_index=detail.foreach_index,
    )


def list_tasks(run: str, *, step: str | None = None, state: TaskState | None = None, limit: int = 100,
               cursor: str | None = None) -> TaskList:
    """A run's tasks with their state and timing.

    counts gives every task of the run (or step) by state. Cost: as
    run_summary (flat in the number of tasks on a service).

    Args:
        run: Run pathspec 'Flow/RunId'.
        step: Only this step's tasks.
        state: Only tasks in this state.
        limit: Most tasks to return.
        cursor: next_cursor of the previous page.
    """
    with call() as meter:
        ps = Pathspec.parse(run, "run")
        if step is not None:
            step = Pathspec.parse(f"{ps}/{step}", "step").step
        if state is not None and state not in TASK_STATES:
            raise BadInput(f"state={state!r} is not a task state", hint=f"use one of {', '.join(TASK_STATES)}, or omit it")
        limit = check_limit("limit", limit, low=1, high=_config.cap("tasks"))
        key = query_key(str(ps), step, state)
        start = cursor_offset(open_cursor(cursor, "list_tasks", key), "list_tasks")
        backend = get_backend()
        rows: list[TaskInfo] = []
        decided = backend.meta.decided_tasks(ps, list(TASK_STATES), step=step)
        if decided is not None:  # the query service decided every task's state
            for t in decided.tasks:
                rows.append(TaskInfo(pathspec=f"{ps}/{t.step}/{t.task}", step=t.step, task_id=t.task, state=t.state,
                                     retried=any(x.ok is False for x in t.attempts), started_at=iso(t.started_ms),
                                     duration_s=round((t.finished_ms - t.started_ms) / 1000, 3) if t.started_ms and t.finished_ms else None))
            if step is not None and not rows:
                backend.meta.check_task(ps.child(step).child("0"))  # NotFound naming the missing step (or run)
            run_state, complete, notes = decided.run.status, decided.complete, ["answered by the query service"]
        else:
            rec = backend.meta.get_run(ps)
            a = assess(backend, rec, times=True)
            for so in a.outcomes:
                if step is not None and so.step != step:
                    continue
                for task in so.tasks:
                    kind = a.verdicts.get((so.step, task))
                    task_state: TaskState = "completed" if task in so.ok else KIND_STATE[kind] if kind else "unknown"
                    begun, ended = so.times.get(task, (None, None))
                    rows.append(TaskInfo(pathspec=f"{ps}/{so.step}/{task}", step=so.step, task_id=task, state=task_state,
                                         retried=task in so.failed, started_at=iso(begun),
                                         duration_s=round((ended - begun) / 1000, 3) if begun and ended else None))
            if step is not None and step not in a.steps:
                backend.meta.check_task(ps.child(step).child("0"))  # NotFound naming the missing step
            run_state, complete, notes = a.state, a.complete, list(a.notes)
            if a.outcomes and not all(so.exact_times for so in a.outcomes):
                notes.append("task times from registration and last heartbeat: approximate")
        rows.sort(key=lambda r: (task_order(r.task_id), r.step))  # task ids grow in execution order
        counts: dict[TaskState, int] = {s: 0 for s in TASK_STATES}
        for row in rows:
            counts[row.state] += 1
        chosen = [r for r in rows if state is None or r.state == state]
        page = chosen[start : start + limit]
        more = start + limit < len(chosen)
        notes = [f"backend: {backend.kind}; run {run_state}"] + notes + backend.root_notes()
        result = TaskList(run=str(ps), tasks=page, counts=counts, truncated=more,
                          next_cursor=make_cursor("list_tasks", key, i=start + limit) if more else None,
                          complete=complete and not meter.skipped_count, scanned=len(rows), notes=notes + meter.damage_notes(),
                          cost=Cost.of(meter))
        return result.resumable(lambda kept: make_cursor("list_tasks", key, i=start + kept))
