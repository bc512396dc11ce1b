"""Why did a run fail: its state, failing tasks with errors and log lines, and parameters, in one answer."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import JsonValue

from . import _config
from ._backend import Backend, get_backend
from ._blobs import attempt_ended
from ._cost import call, current_meter, shown_without, skip_damaged
from ._errors import AgentError, Damaged
from ._inputs import check_limit, iso
from ._logs import task_logs
from ._models import Cost, DiagnosedTask, Diagnosis, ProblemKind
from ._outcomes import Assessment, assess, exception_of, failed_attempts, short_type
from ._pathspec import Pathspec
from ._records import DecidedTask, RunRecord, task_order
from ._text import clip
from ._values import plain_value, task_artifacts

_PROBLEMS: tuple[ProblemKind, ...] = ("failed", "crashed", "unknown", "retrying")
_AS_PROBLEM: dict[str, ProblemKind] = {k: k for k in _PROBLEMS}
_LINE_CHARS = 200


def parameters(backend: Backend, run: Pathspec) -> dict[str, JsonValue]:
    """A run's parameters: small plain values as themselves, the type otherwise."""
    step = run.child("_parameters")
    for task in backend.meta.list_tasks(step):
        store = backend.store_for(step.child(task))
        arts = task_artifacts(store, step.child(task))
        if arts is None:
            continue
        out: dict[str, JsonValue] = {}
        for name, info in sorted(arts.items()):
            if name.startswith("_") or name == "name":  # Metaflow's own, and the flow's name
                continue
            value, note = plain_value(store, run.flow, info)
            out[name] = value if note is None else f"<{info.type or '?'}, {info.size} bytes>"
        return out
    return {}


def diagnose_run(run: str, *, tasks: int = 3, lines: int = 10, max_bytes: int = 4096) -> Diagnosis:
    """Why a run failed, in one call: state, errors, logs, parameters.

    For the first failed, crashed or unknown tasks: the exception and the
    last lines of stdout and stderr merged; cut to fit max_bytes.

    Args:
        run: Run pathspec 'Flow/RunId'.
        tasks: Most failing tasks shown.
        lines: Log lines per task.
        max_bytes: Size of the whole answer as JSON, at most.
    """
    with call() as meter:
        ps = Pathspec.parse(run, "run")
        tasks = check_limit("tasks", tasks, low=1, high=20)
        lines = check_limit("lines", lines, low=0, high=200)
        max_bytes = check_limit("max_bytes", max_bytes, low=1024, high=_config.cap("log_max_bytes"))
        backend = get_backend()
        decided = _decided_problems(backend, ps)
        if decided is not None:  # the query service decided every task's state
            rec, problems, notes = decided.run, decided.problems, decided.notes
            state, finished_ms = rec.status or "unknown", rec.finished_ms
        else:
            rec = backend.meta.get_run(ps)
            a = assess(backend, rec)
            state, finished_ms, notes = a.state, a.finished_ms, [f"backend: {backend.kind}"] + a.notes
            problems = [(s, t, _AS_PROBLEM[k]) for s, t, k in a.ordered(*_PROBLEMS)]
            problems.sort(key=lambda p: _PROBLEMS.index(p[2]))  # failures before the rest, step order within
        found: list[DiagnosedTask] = []
        for step, task, kind in problems:
            if len(found) == tasks:
                break
            tps = ps.child(step).child(task)
            with skip_damaged(str(tps)):  # a damaged one is named; the next problem is shown
                if decided is not None:
                    known = decided.tasks[(step, task)].attempts
                    tries = [x.attempt for x in known if x.ok is False], max((x.attempt for x in known), default=0)
                else:
                    tries = _tries(backend, a, tps)
                found.append(_diagnosed(backend, tps, kind, lines, *tries))
        params: dict[str, JsonValue] = {}
        with shown_without(f"{ps}/_parameters"):
            params = parameters(backend, ps)
        result = Diagnosis(
            run=str(ps),
            status=state,
            created_at=iso(rec.ts_ms) or "",
            duration_s=round((finished_ms - rec.ts_ms) / 1000, 3) if finished_ms else None,
            parameters=params,
            failures=found,
            total_failures=len(problems),
            truncated=len(problems) > len(found),
            notes=notes + backend.root_notes() + meter.damage_notes(),
            cost=Cost.of(meter),
        )
        return _fit(result, max_bytes)


def _tries(backend: Backend, a: Assessment, tps: Pathspec) -> tuple[list[int], int]:
    """A task's failed attempts and its latest attempt, from the assessment (its detail read if needed)."""
    step, task = tps.step, tps.task
    if (step, task) not in a.details and (step, task) not in a.listings:
        a.details[(step, task)] = backend.meta.task_detail(tps)
    detail = a.details.get((step, task))
    latest = detail.attempts[-1].attempt if detail and detail.attempts else max(a.listings.get((step, task)) or {0: set()})
    return failed_attempts(a, tps), latest


def _diagnosed(backend: Backend, tps: Pathspec, kind: ProblemKind, lines: int, failed_tries: list[int], latest: int) -> DiagnosedTask:
    """One failing task: its exception, exit code and last log lines."""
    exc = exception_of(backend, tps, failed_tries)
    text = f"{short_type(exc.get('type'))}: {exc.get('message')}" if exc else None
    rc = attempt_ended(backend.store_for(tps), tps, latest)[1] if kind != "failed" else None
    log: list[str] = []
    if lines:
        try:
            got = task_logs(str(tps), stream="both", tail=lines, attempt=latest)
            log = [f"{ln.stream or ''}: {clip(ln.text, _LINE_CHARS)}" for ln in got.lines]
        except Damaged as exc_:  # shown without its log
            current_meter().damaged(str(tps), f"log: {exc_.message}", skipped=False)
        except AgentError:
            log = []
    return DiagnosedTask(pathspec=str(tps), status=kind, exception=clip(text, 500), return_code=rc, log=log)


@dataclass
class _Decided:
    """What the query service decided: the run (state and finish set), its problems in order, with their tasks."""

    run: RunRecord
    problems: list[tuple[str, str, ProblemKind]]
    tasks: dict[tuple[str, str], DecidedTask]
    notes: list[str]


def _decided_problems(backend: Backend, ps: Pathspec) -> _Decided | None:
    """The run's problems from a backend that decides states, in two requests (the summary for the
    state and step order, the tasks in problem states); None when the backend does not decide."""
    summary = backend.meta.decided_summary(ps)
    got = backend.meta.decided_tasks(ps, ["failed", "crashed", "unknown", "running"]) if summary is not None else None
    if summary is None or got is None:
        return None
    rank = {s.step: i for i, s in enumerate(summary.steps)}
    picked: list[tuple[tuple[int, int, tuple[int, str]], DecidedTask, ProblemKind]] = []
    for t in got.tasks:
        kind = _AS_PROBLEM.get(t.state) if t.state != "running" else ("retrying" if any(x.ok is False for x in t.attempts) else None)
        if kind is not None:
            picked.append(((_PROBLEMS.index(kind), rank.get(t.step, len(rank)), task_order(t.task)), t, kind))
    picked.sort(key=lambda p: p[0])
    notes = [f"backend: {backend.kind}, answered by the query service"]
    if not got.complete:
        notes.append("more tasks in problem states than one answer holds: the first ones by task id are shown")
    return _Decided(summary.run, [(t.step, t.task, kind) for _, t, kind in picked], {(t.step, t.task): t for _, t, _ in picked}, notes)


def _fit(d: Diagnosis, max_bytes: int) -> Diagnosis:
    """Drop log lines (oldest first, evenly), then tasks, until the JSON fits `max_bytes`."""

    def size() -> int:
        return len(json.dumps(d.model_dump(mode="json"), separators=(",", ":")))

    while size() > max_bytes:
        longest = max(d.failures, key=lambda f: len(f.log), default=None)
        if longest is not None and longest.log:
            longest.log.pop(0)
        elif len(d.failures) > 1:
            d.failures.pop()
        elif d.failures and d.failures[0].exception and len(d.failures[0].exception) > 80:
            d.failures[0].exception = clip(d.failures[0].exception, len(d.failures[0].exception) // 2)
        else:
            break
        d.truncated = True
    return d
