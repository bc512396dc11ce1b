"""Why did a run fail: its state, failing tasks with errors and log lines, and parameters, in one answer."""

from __future__ import annotations

import json

from pydantic import JsonValue

from . import _config
from ._backend import Backend, get_backend
from ._blobs import attempt_ended
from ._cost import call
from ._errors import AgentError
from ._inputs import check_limit, iso
from ._logs import task_logs
from ._models import Cost, DiagnosedTask, Diagnosis, ProblemKind
from ._outcomes import assess, exception_of, failed_attempts, short_type
from ._pathspec import Pathspec
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
        rec = backend.meta.get_run(ps)
        a = assess(backend, rec)
        problems: list[tuple[str, str, ProblemKind]] = [(s, t, _AS_PROBLEM[k]) for s, t, k in a.ordered(*_PROBLEMS)]
        problems.sort(key=lambda p: _PROBLEMS.index(p[2]))  # failures before the rest, step order within
        found: list[DiagnosedTask] = []
        for step, task, kind in problems[:tasks]:
            tps = ps.child(step).child(task)
            if (step, task) not in a.details and (step, task) not in a.listings:
                a.details[(step, task)] = backend.meta.task_detail(tps)
            exc = exception_of(backend, tps, failed_attempts(a, tps))
            text = f"{short_type(exc.get('type'))}: {exc.get('message')}" if exc else None
            detail = a.details.get((step, task))
            latest = detail.attempts[-1].attempt if detail and detail.attempts else max(a.listings.get((step, task)) or {0: set()})
            rc = attempt_ended(backend.store_for(tps), tps, latest)[1] if kind != "failed" else None
            log: list[str] = []
            if lines:
                try:
                    got = task_logs(str(tps), stream="both", tail=lines, attempt=latest)
                    log = [f"{ln.stream or ''}: {clip(ln.text, _LINE_CHARS)}" for ln in got.lines]
                except AgentError:
                    log = []
            found.append(DiagnosedTask(pathspec=str(tps), status=kind, exception=clip(text, 500), return_code=rc, log=log))
        result = Diagnosis(
            run=str(ps),
            status=a.state,
            created_at=iso(rec.ts_ms) or "",
            duration_s=round((a.finished_ms - rec.ts_ms) / 1000, 3) if a.finished_ms else None,
            parameters=parameters(backend, ps),
            failures=found,
            total_failures=len(problems),
            truncated=len(problems) > len(found),
            notes=[f"backend: {backend.kind}"] + a.notes + backend.root_notes(),
            cost=Cost.of(meter),
        )
        return _fit(result, max_bytes)


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
