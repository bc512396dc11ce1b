"""Compare two runs by artifact sha: equal sha means equal value, nothing loaded."""

from __future__ import annotations

from typing import Literal

from . import _config
from ._backend import Backend, get_backend
from ._cost import call
from ._datastore import Datastore
from ._models import ArtifactDiff, ArtifactInfo, Cost, RunComparison
from ._outcomes import run_status
from ._pathspec import Pathspec
from ._values import plain_value, task_artifacts


def _task_artifacts(backend: Backend, step: Pathspec) -> tuple[dict[str, ArtifactInfo], Datastore | None]:
    """The artifacts of the step's latest task that saved any, and that task's store."""
    tasks = sorted(backend.meta.list_tasks(step), key=lambda t: (len(t), t))
    for task in reversed(tasks):
        store = backend.store_for(step.child(task))
        arts = task_artifacts(store, step.child(task))
        if arts is not None:
            return arts, store
    return {}, None


def _last_step(backend: Backend, run: Pathspec) -> str | None:
    steps = backend.meta.list_steps(run)
    return "end" if "end" in steps else (steps[-1] if steps else None)


def compare_runs(run_a: str, run_b: str, *, include_private: bool = False) -> RunComparison:
    """Parameters and end-step artifacts that differ between two runs.

    By sha (equal sha, equal value): nothing large is loaded; changed
    values are shown when small and plain. Cost: two data.json reads per
    run, step listings, the small blobs.

    Args:
        run_a: First run pathspec 'Flow/RunId'.
        run_b: Second run pathspec 'Flow/RunId'.
        include_private: Also compare Metaflow's own artifacts (names starting with _).
    """
    with call() as meter:
        a, b = Pathspec.parse(run_a, "run"), Pathspec.parse(run_b, "run")
        backend = get_backend()
        recs = [backend.meta.get_run(p) for p in (a, b)]
        statuses = [run_status(backend, r) for r in recs]
        params, param_stores = zip(*(_task_artifacts(backend, p.child("_parameters")) for p in (a, b)))
        steps = [_last_step(backend, p) for p in (a, b)]
        arts, art_stores = zip(*(_task_artifacts(backend, p.child(s)) if s else ({}, None) for p, s in zip((a, b), steps)))
        cap = _config.default("compare_diffs")
        param_diffs = _diff(params[0], params[1], None, include_private)
        art_diffs = _diff(arts[0], arts[1], steps[1] or steps[0], include_private)
        for diffs, (xa, xb), (sa, sb) in ((param_diffs, params, param_stores), (art_diffs, arts, art_stores)):
            for d in diffs[:cap]:
                d.value_a = plain_value(sa, a.flow, xa.get(d.name))[0] if sa is not None else None
                d.value_b = plain_value(sb, b.flow, xb.get(d.name))[0] if sb is not None else None
        shared = set(arts[0]) & set(arts[1])
        equal = sum(1 for n in shared if arts[0][n].sha == arts[1][n].sha and (include_private or not n.startswith("_")))
        return RunComparison(
            run_a=str(a),
            run_b=str(b),
            status_a=statuses[0],
            status_b=statuses[1],
            parameters=param_diffs[:cap],
            artifacts=art_diffs[:cap],
            equal=equal,
            truncated=len(param_diffs) > cap or len(art_diffs) > cap,
            notes=meter.damage_notes() + backend.root_notes(),
            cost=Cost.of(meter),
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
