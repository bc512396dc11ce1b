"""Task data index (`<attempt>.data.json`) and content-addressed blobs."""

from __future__ import annotations

import io
import json
import pickle
import zlib
from typing import Any

from ._errors import BackendError, NotFound, TooLarge
from .backends.base import Backend


def attempt_files(backend: Backend, flow: str, run: str, step: str, task: str) -> dict[int, set[str]]:
    """The task folder, by attempt: {0: {"data.json", "runtime", "runtime_stdout.log", ...}} (one listing)."""
    out: dict[int, set[str]] = {}
    for name in backend.store.list(f"{flow}/{run}/{step}/{task}"):
        head, _, rest = name.partition(".")
        if head.isdigit() and rest:
            out.setdefault(int(head), set()).add(rest)
    return out


def latest_data_attempt(backend: Backend, flow: str, run: str, step: str, task: str) -> int | None:
    """Highest attempt with a data.json, from one listing of the task folder."""
    found = [n for n, files in attempt_files(backend, flow, run, step, task).items() if "data.json" in files]
    return max(found) if found else None


def data_index(backend: Backend, flow: str, run: str, step: str, task: str, attempt: int) -> dict[str, Any]:
    """The attempt's data.json: objects (name → sha) and info (name → size/type/encoding)."""
    rel = f"{flow}/{run}/{step}/{task}/{attempt}.data.json"
    try:
        return json.loads(backend.store.read_small(rel))
    except NotFound:
        raise NotFound(
            f"task {flow}/{run}/{step}/{task} attempt {attempt} has no artifacts (no data.json)",
            hint="the attempt may still be running or may have crashed before saving; try another attempt",
        ) from None


def load_blob(backend: Backend, flow: str, sha: str, *, max_bytes: int) -> bytes:
    """The raw (decompressed) bytes of an artifact, refused over max_bytes stored."""
    rel = f"{flow}/data/{sha[:2]}/{sha}"
    meta_rel = rel + "_meta"
    raw_flag = False
    if backend.store.size(meta_rel) is not None:
        try:
            raw_flag = bool(json.loads(backend.store.read_small(meta_rel, cap=4096)).get("cas_raw"))
        except ValueError:
            pass
    size = backend.store.size(rel)
    if size is None:
        raise NotFound(f"artifact blob {sha} is missing from the datastore", hint="the datastore may have been cleaned")
    if size > max_bytes:
        raise TooLarge(f"artifact blob is {size} bytes, over the {max_bytes}-byte cap", hint="raise max_bytes or use list_artifacts for its size and type")
    data = backend.store.read(rel)
    return data if raw_flag else _gunzip(data, max_bytes, sha)


def _gunzip(data: bytes, cap: int, sha: str) -> bytes:
    """Decompress, refusing to produce more than cap bytes (a small blob can expand a lot)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise BackendError(f"artifact blob {sha} is not valid gzip: {exc}", hint="the datastore object may be corrupt") from None
    if len(out) > cap:
        raise TooLarge(f"artifact {sha} expands to more than {cap} bytes", hint="raise max_bytes to load it")
    return out


class _ExceptionOnly(pickle.Unpickler):
    """Unpickles a Metaflow exception wrapper and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("metaflow.exception", "MetaflowExceptionWrapper"):
            from metaflow.exception import MetaflowExceptionWrapper

            return MetaflowExceptionWrapper
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed here")


def task_exception(backend: Backend, flow: str, run: str, step: str, task: str, attempt: int) -> dict[str, str | None] | None:
    """type/message/stacktrace of an attempt's `_exception`, or None when absent."""
    try:
        index = data_index(backend, flow, run, step, task, attempt)
        sha = index.get("objects", {}).get("_exception")
        if not sha:
            return None
        obj = _ExceptionOnly(io.BytesIO(load_blob(backend, flow, sha, max_bytes=1 << 20))).load()
    except (NotFound, TooLarge, BackendError, pickle.UnpicklingError, EOFError, OSError, ValueError):
        return None
    state = getattr(obj, "__dict__", {}) or {}
    if not state.get("type"):
        return None
    return {"type": state.get("type"), "message": state.get("exception"), "stacktrace": state.get("stacktrace")}


class _Frame(tuple):
    """Stand-in for a foreach frame (step, var, num_splits, index, value): its class
    lives in the flow's own module, which is not importable here."""

    def __new__(cls, *fields: Any) -> "_Frame":
        return tuple.__new__(cls, fields)


class _FramesOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name == "ForeachFrame":
            return _Frame
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed here")


def foreach_position(backend: Backend, flow: str, run: str, step: str, task: str, attempt: int) -> str | None:
    """'items=3' (var=value per level, like the foreach-stack metadata) from `_foreach_stack`."""
    try:
        sha = data_index(backend, flow, run, step, task, attempt).get("objects", {}).get("_foreach_stack")
        if not sha:
            return None
        frames = _FramesOnly(io.BytesIO(load_blob(backend, flow, sha, max_bytes=1 << 20))).load()
    except (NotFound, TooLarge, BackendError, pickle.UnpicklingError, EOFError, OSError, ValueError):
        return None
    parts = [f"{f[1]}={f[4]}" for f in frames or [] if isinstance(f, tuple) and len(f) >= 5 and f[1] and f[4] is not None]
    return ",".join(parts) or None
