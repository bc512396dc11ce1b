"""Artifacts: listing and search from data.json (no unpickling); guarded previews."""

from __future__ import annotations

import fnmatch
import io
import pickle
from typing import Any

from . import _limits
from ._backend import get_backend
from ._blobs import data_index, latest_data_attempt, load_blob
from ._cost import metered
from ._errors import BackendError, BadInput, NotFound
from ._inputs import (
    check_limit,
    cursor_offset,
    make_cursor,
    open_cursor,
    parse_pathspec,
    parse_time,
    query_key,
)
from ._models import (
    ArtifactHit,
    ArtifactInfo,
    ArtifactList,
    ArtifactPreview,
    ArtifactSearch,
)
from ._result import clip, cost_of
from ._runs import DEFAULT_NAMESPACE, resolve_namespace
from .backends.base import Backend, RunQuery


def clean_type(raw: str | None) -> str | None:
    """"<class 'numpy.ndarray'>" → "numpy.ndarray"."""
    if raw and raw.startswith("<class '") and raw.endswith("'>"):
        return raw[8:-2]
    return raw


def artifact_infos(index: dict[str, Any]) -> list[ArtifactInfo]:
    objects, info = index.get("objects", {}), index.get("info", {})
    out = []
    for name, sha in objects.items():
        meta = info.get(name, {})
        out.append(ArtifactInfo(name=name, size=meta.get("size"), type=clean_type(meta.get("type")), encoding=meta.get("encoding"), sha=sha))
    return sorted(out, key=lambda a: a.name)


def _resolve_attempt(backend: Backend, flow: str, run: str, step: str, task: str, attempt: int | None) -> int:
    if attempt is not None:
        return check_limit("attempt", attempt, low=0, high=99)
    latest = latest_data_attempt(backend, flow, run, step, task)
    if latest is None:
        backend.check_task(flow, run, step, task)
        raise NotFound(f"task {flow}/{run}/{step}/{task} has no saved artifacts", hint="it may still be running or have crashed; see failed_tasks")
    return latest


def list_artifacts(
    task: str,
    *,
    attempt: int | None = None,
    include_private: bool = False,
    limit: int = 200,
    cursor: str | None = None,
) -> ArtifactList:
    """A task's artifact names, sizes, types and sha, without loading any.

    Reads one small index file (data.json) of the attempt.

    Args:
        task: Task pathspec 'Flow/RunId/step/TaskId'.
        attempt: Attempt number; default the latest that saved data.
        include_private: Also list Metaflow's own artifacts (names starting with _).
        limit: Most artifacts to return.
        cursor: next_cursor of the previous page.
    """
    with metered() as meter:
        ps = parse_pathspec(task, "task")
        limit = check_limit("limit", limit, low=1, high=_limits.cap("artifacts"))
        key = query_key(str(ps), attempt, include_private)
        start = cursor_offset(open_cursor(cursor, "list_artifacts", key), "list_artifacts")
        backend = get_backend()
        att = _resolve_attempt(backend, ps.flow, ps.run, ps.step, ps.task, attempt)
        infos = [a for a in artifact_infos(data_index(backend, ps.flow, ps.run, ps.step, ps.task, att)) if include_private or not a.name.startswith("_")]
        page = infos[start : start + limit]
        more = start + limit < len(infos)
        return ArtifactList(
            task=str(ps),
            attempt=att,
            artifacts=page,
            truncated=more,
            next_cursor=make_cursor("list_artifacts", key, i=start + limit) if more else None,
            scanned=len(infos),
            cost=cost_of(meter),
        )


def _summary(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"python_type": f"{type(value).__module__}.{type(value).__qualname__}"}
    shape = getattr(value, "shape", None)
    if shape is not None:
        out["shape"] = list(shape) if isinstance(shape, tuple) else str(shape)
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        out["dtype"] = str(dtype)
    dtypes = getattr(value, "dtypes", None)
    columns = getattr(value, "columns", None)
    if columns is not None:
        cols = [str(c) for c in list(columns)[:50]]
        out["columns"] = cols
        if dtypes is not None and hasattr(dtypes, "items"):
            out["dtypes"] = {str(k): str(v) for k, v in list(dtypes.items())[:50]}
    if isinstance(value, dict):
        keys = list(value.keys())
        out["len"] = len(keys)
        out["keys"] = [clip(repr(k), 80) for k in keys[:50]]
    elif isinstance(value, (list, tuple, set, frozenset, str, bytes)):
        out["len"] = len(value)
        if isinstance(value, (list, tuple)) and value:
            out["item_types"] = sorted({type(v).__name__ for v in list(value)[:100]})
    return out


def artifact_preview(task: str, name: str, *, attempt: int | None = None, max_bytes: int | None = None, max_chars: int | None = None) -> ArtifactPreview:
    """A short, type-aware, size-guarded look at one artifact's value.

    The one function that unpickles, and only this value; refuses (TooLarge)
    an artifact stored larger than max_bytes.

    Args:
        task: Task pathspec 'Flow/RunId/step/TaskId'.
        name: Artifact name (list_artifacts shows them).
        attempt: Attempt number; default the latest that saved data.
        max_bytes: Refuse an artifact stored larger than this.
        max_chars: Cut the repr to this many characters.
    """
    with metered() as meter:
        ps = parse_pathspec(task, "task")
        if not isinstance(name, str) or not name:
            raise BadInput("artifact name is required", hint="list_artifacts(task) shows the names")
        cap = check_limit("max_bytes", max_bytes if max_bytes is not None else _limits.default("preview_max_bytes"), low=1, high=_limits.cap("preview_max_bytes"))
        chars = check_limit("max_chars", max_chars if max_chars is not None else _limits.default("repr_chars"), low=20, high=_limits.cap("repr_chars"))
        backend = get_backend()
        att = _resolve_attempt(backend, ps.flow, ps.run, ps.step, ps.task, attempt)
        index = data_index(backend, ps.flow, ps.run, ps.step, ps.task, att)
        sha = index.get("objects", {}).get(name)
        if sha is None:
            names = sorted(n for n in index.get("objects", {}) if not n.startswith("_"))
            raise NotFound(f"task {ps} has no artifact {name!r}", hint=f"available: {', '.join(names[:20]) or 'none'}")
        info = index.get("info", {}).get(name, {})
        size = info.get("size")
        if size is not None and size > cap:
            from ._errors import TooLarge

            raise TooLarge(f"artifact {name!r} is {size} bytes, over max_bytes={cap}", hint=f"raise max_bytes above {size} to load it, or use list_artifacts for its type and size")
        raw = load_blob(backend, ps.flow, sha, max_bytes=cap)
        encoding = info.get("encoding", "pickle-v4")
        if not str(encoding).startswith("pickle"):
            raise BadInput(f"artifact {name!r} has encoding {encoding!r}, which this preview cannot decode", hint="load it with the Metaflow Client API")
        try:
            value = pickle.load(io.BytesIO(raw))
        except (ImportError, AttributeError) as exc:
            raise BackendError(
                f"artifact {name!r} needs code that is not importable here: {exc}",
                hint="install the flow's dependencies where this runs, or use list_artifacts for its size and type",
            ) from None
        except Exception as exc:
            raise BackendError(f"artifact {name!r} could not be unpickled: {type(exc).__name__}: {exc}", hint="use list_artifacts for its size and type") from None
        try:
            text = repr(value)
            summary = _summary(value)
        except Exception as exc:
            text, summary = f"<repr failed: {type(exc).__name__}>", {"python_type": f"{type(value).__module__}.{type(value).__qualname__}"}
        return ArtifactPreview(
            task=str(ps),
            name=name,
            type=clean_type(info.get("type")),
            size=size,
            summary=summary,
            repr=clip(text, chars) or "",
            truncated=len(text) > chars,
            cost=cost_of(meter),
        )


def search_artifacts(
    flow: str,
    *,
    name: str,
    min_size: int | None = None,
    max_size: int | None = None,
    type: str | None = None,
    runs: int = 10,
    since: str | None = None,
    until: str | None = None,
    namespace: str | None = DEFAULT_NAMESPACE,
    include_private: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> ArtifactSearch:
    """Find artifacts by name glob, size and type across recent runs.

    Reads each task's data.json only, nothing unpickled; scans the newest
    `runs` runs (or those in since/until) within a task budget.

    Args:
        flow: Flow name.
        name: Artifact name or glob, e.g. 'model*'.
        min_size: Smallest stored size in bytes.
        max_size: Largest stored size in bytes.
        type: Substring of the Python type, e.g. 'DataFrame'.
        runs: How many recent runs to scan.
        since: Runs created at or after: ISO-8601 or relative ('24h', '7d').
        until: Runs created before: ISO-8601 or relative.
        namespace: e.g. 'user:alice'; 'default' is yours (user:<you>); null: all users.
        include_private: Also match Metaflow's own artifacts (names starting with _).
        limit: Most hits to return.
        cursor: next_cursor of the previous page.
    """
    with metered() as meter:
        fl = parse_pathspec(flow, "flow").flow
        if not isinstance(name, str) or not name:
            raise BadInput("name is required", hint="pass an artifact name or glob, e.g. name='model*'")
        runs = check_limit("runs", runs, low=1, high=_limits.cap("search_runs"))
        for label, size in (("min_size", min_size), ("max_size", max_size)):
            if size is not None:
                check_limit(label, size, low=0, high=1 << 50)
        if type is not None and (not isinstance(type, str) or not type):
            raise BadInput(f"type={type!r} must be a non-empty string", hint="e.g. type='ndarray' or type='pandas.DataFrame'")
        limit = check_limit("limit", limit, low=1, high=_limits.cap("search_hits"))
        budget = _limits.default("search_tasks_budget")
        key = query_key(fl, name, min_size, max_size, type, runs, since, until, namespace, include_private)
        state = open_cursor(cursor, "search_artifacts", key)
        ns = resolve_namespace(namespace)
        backend = get_backend()
        query = RunQuery(since_ms=parse_time(since, "since"), until_ms=parse_time(until, "until"), tags_all=(ns,) if ns else ())
        scan = backend.scan_runs(fl, query, runs, None, runs, with_status=False)
        hits: list[ArtifactHit] = []
        searched: list[str] = []
        resume = tuple((state or {}).get("pos") or (-1, -1, -1, -1))  # position of the last hit returned
        tasks_read = 0
        more, complete, last = False, True, resume
        for pos, task_ps, info in _walk(backend, fl, scan.runs, resume, searched):
            if info is None:  # a task boundary: count it against the budget
                if tasks_read >= budget:
                    complete = False
                    break
                tasks_read += 1
                continue
            if (info.name.startswith("_") and not include_private) or not _match(info, name, min_size, max_size, type):
                continue
            if len(hits) == limit:
                more = True
                break
            hits.append(ArtifactHit(task=task_ps, name=info.name, size=info.size, type=info.type, sha=info.sha))
            last = pos
        notes = [f"scanned {tasks_read} tasks' data.json in {len(searched)} runs; nothing unpickled"]
        if ns:
            notes.append(f"runs in namespace {ns!r}; for all users pass namespace=None (CLI: --no-namespace)")
        if not complete:
            notes.append(f"task budget {budget} reached: narrow runs/since/until")
        return ArtifactSearch(
            flow=fl,
            hits=hits,
            runs_searched=searched,
            truncated=more,
            next_cursor=make_cursor("search_artifacts", key, pos=list(last)) if more else None,
            complete=complete,
            scanned=tasks_read,
            notes=notes,
            cost=cost_of(meter),
        )


def _walk(backend: Backend, flow: str, runs: list[Any], resume: tuple[int, ...], searched: list[str]) -> Any:
    """Yield (position, task pathspec, artifact) in a stable order, after `resume`.

    A (position, pathspec, None) item marks each task whose data.json is read.
    """
    for ri, rec in enumerate(runs):
        if ri < resume[0]:
            continue
        searched.append(rec.run_id)
        for si, step in enumerate(backend.list_steps(flow, rec.run_id)):
            if (ri, si) < resume[:2]:
                continue
            tasks = sorted(backend.list_tasks(flow, rec.run_id, step), key=lambda t: (len(t), t))
            for ti, task in enumerate(tasks):
                if (ri, si, ti) < resume[:3]:
                    continue
                yield (ri, si, ti, -1), None, None
                att = latest_data_attempt(backend, flow, rec.run_id, step, task)
                if att is None:
                    continue
                for ai, info in enumerate(artifact_infos(data_index(backend, flow, rec.run_id, step, task, att))):
                    if (ri, si, ti, ai) > resume:
                        yield (ri, si, ti, ai), f"{flow}/{rec.run_id}/{step}/{task}", info


def _match(a: ArtifactInfo, name: str, min_size: int | None, max_size: int | None, type_: str | None) -> bool:
    if not fnmatch.fnmatchcase(a.name, name):
        return False
    if min_size is not None and (a.size is None or a.size < min_size):
        return False
    if max_size is not None and (a.size is None or a.size > max_size):
        return False
    if type_ is not None and (a.type is None or type_ not in a.type):
        return False
    return True
