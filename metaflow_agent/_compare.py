"""Compare two runs by artifact sha: equal sha means equal value, nothing loaded."""

from __future__ import annotations

import io
import pickle
from typing import Literal

from . import _limits
from ._artifacts import artifact_infos
from ._backend import get_backend
from ._blobs import data_index, latest_data_attempt, load_blob
from ._cost import metered
from ._inputs import parse_pathspec
from ._models import ArtifactDiff, ArtifactInfo, RunComparison
from ._result import clip, cost_of
from .backends.base import Backend

_SMALL = 4096  # parameters at most this large are shown by value


def _task_artifacts(backend: Backend, flow: str, run: str, step: str) -> dict[str, ArtifactInfo]:
    tasks = sorted(backend.list_tasks(flow, run, step), key=lambda t: (len(t), t))
    for task in reversed(tasks):
        att = latest_data_attempt(backend, flow, run, step, task)
        if att is not None:
            return {a.name: a for a in artifact_infos(data_index(backend, flow, run, step, task, att))}
    return {}


def _last_step(backend: Backend, flow: str, run: str) -> str | None:
    steps = backend.list_steps(flow, run)
    return "end" if "end" in steps else (steps[-1] if steps else None)


def _small_repr(backend: Backend, flow: str, info: ArtifactInfo | None) -> str | None:
    if info is None or info.sha is None or (info.size or 0) > _SMALL:
        return None
    try:
        return clip(repr(pickle.load(io.BytesIO(load_blob(backend, flow, info.sha, max_bytes=_SMALL * 4)))), 200)
    except Exception:
        return None


def compare_runs(run_a: str, run_b: str, *, include_private: bool = False) -> RunComparison:
    """Parameters and end-step artifacts that differ between two runs.

    By sha (equal sha, equal value): nothing loaded but small parameter
    values. Cost: two data.json reads per run plus step listings.

    Args:
        run_a: First run pathspec 'Flow/RunId'.
        run_b: Second run pathspec 'Flow/RunId'.
        include_private: Also compare Metaflow's own artifacts (names starting with _).
    """
    with metered() as meter:
        a, b = parse_pathspec(run_a, "run"), parse_pathspec(run_b, "run")
        backend = get_backend()
        recs = [backend.get_run(p.flow, p.run) for p in (a, b)]
        statuses = [backend.run_status(r)[0] for r in recs]
        params = [_task_artifacts(backend, p.flow, p.run, "_parameters") for p in (a, b)]
        steps = [_last_step(backend, p.flow, p.run) for p in (a, b)]
        arts = [_task_artifacts(backend, p.flow, p.run, s) if s else {} for p, s in zip((a, b), steps)]
        cap = _limits.default("compare_diffs")
        param_diffs = _diff(params[0], params[1], None, include_private)
        for d in param_diffs:
            d.value_a = _small_repr(backend, a.flow, params[0].get(d.name))
            d.value_b = _small_repr(backend, b.flow, params[1].get(d.name))
        art_diffs = _diff(arts[0], arts[1], steps[1] or steps[0], include_private)
        shared = set(arts[0]) & set(arts[1])
        equal = sum(1 for n in shared if arts[0][n].sha == arts[1][n].sha and (include_private or not n.startswith("_")))
        truncated = len(param_diffs) > cap or len(art_diffs) > cap
        return RunComparison(
            run_a=str(a),
            run_b=str(b),
            status_a=statuses[0],  # type: ignore[arg-type]
            status_b=statuses[1],  # type: ignore[arg-type]
            parameters=param_diffs[:cap],
            artifacts=art_diffs[:cap],
            equal=equal,
            truncated=truncated,
            cost=cost_of(meter),
        )


def _diff(x: dict[str, ArtifactInfo], y: dict[str, ArtifactInfo], step: str | None, private: bool) -> list[ArtifactDiff]:
    out = []
    for name in sorted(set(x) | set(y)):
        if name.startswith("_") and not private:
            continue
        ia, ib = x.get(name), y.get(name)
        if ia and ib and ia.sha == ib.sha:
            continue
        change: Literal["changed", "only_in_a", "only_in_b"] = "changed" if ia and ib else ("only_in_a" if ia else "only_in_b")
        out.append(
            ArtifactDiff(
                name=name,
                step=step,
                change=change,
                sha_a=ia.sha if ia else None,
                sha_b=ib.sha if ib else None,
                size_a=ia.size if ia else None,
                size_b=ib.size if ib else None,
            )
        )
    return out
