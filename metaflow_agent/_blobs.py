"""A task's files in the datastore: attempt listings, the data index (`<attempt>.data.json`),
content-addressed blobs, exit records and the internal artifacts this library reads itself.

Everything here takes a `Datastore` and a task `Pathspec`: no backend, no metadata.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

from ._cost import current_meter
from ._datastore import Datastore
from ._errors import AgentError, BackendError, Damaged, NotFound, TooLarge
from ._inputs import check_limit
from ._pathspec import Pathspec
from ._unpickle import loads

if TYPE_CHECKING:
    from .backends.base import MetadataBackend

INTERNAL_BLOB_CAP = 1 << 20  # internal artifacts (_exception, _graph_info, ...) are small


def attempt_files(store: Datastore, task: Pathspec) -> dict[int, set[str]]:
    """The task folder, by attempt: {0: {"data.json", "runtime", "runtime_stdout.log", ...}} (one listing)."""
    out: dict[int, set[str]] = {}
    for name in store.list(str(task)):
        head, _, rest = name.partition(".")
        if head.isdigit() and rest:
            out.setdefault(int(head), set()).add(rest)
    return out


def attempt_times(store: Datastore, task: Pathspec) -> dict[int, tuple[int | None, int | None]]:
    """Per attempt, (start, last write) in epoch ms from the task folder's file times (one listing):
    the attempt's `attempt.json` is written when it starts; its last file when it ends."""
    files: dict[int, list[tuple[str, float]]] = {}
    for e in store.entries(str(task), with_stat=True):
        head, _, rest = e.name.partition(".")
        if head.isdigit() and rest and e.mtime is not None:
            files.setdefault(int(head), []).append((rest, e.mtime))
    out: dict[int, tuple[int | None, int | None]] = {}
    for n, items in files.items():
        begun = next((t for name, t in items if name == "attempt.json"), min(t for _, t in items))
        out[n] = (int(begun * 1000), int(max(t for _, t in items) * 1000))
    return out


def latest_attempt(store: Datastore, task: Pathspec, *, with_data: bool) -> int | None:
    """The highest attempt in the task folder (with a data.json when `with_data`), from one listing."""
    found = [n for n, files in attempt_files(store, task).items() if not with_data or "data.json" in files]
    return max(found) if found else None


def resolve_attempt(store: Datastore, meta: MetadataBackend, task: Pathspec, attempt: int | None, *, with_data: bool) -> int:
    """The attempt asked for (checked), else the latest in the task folder (with data when `with_data`).

    NotFound when the task is absent; when it has no such attempt, the latest is 0 for
    logs and NotFound for artifacts."""
    if attempt is not None:
        return check_limit("attempt", attempt, low=0, high=99)
    latest = latest_attempt(store, task, with_data=with_data)
    if latest is not None:
        return latest
    meta.check_task(task)
    if not with_data:
        return 0
    raise NotFound(f"task {task} has no saved artifacts at {store.root}", hint="it may still be running or have crashed; see failed_tasks")


def data_index(store: Datastore, task: Pathspec, attempt: int) -> dict[str, Any]:
    """The attempt's data.json: objects (name → sha) and info (name → size/type/encoding)."""
    rel = f"{task}/{attempt}.data.json"
    try:
        index = store.read_json(rel)
    except NotFound:
        raise NotFound(
            f"task {task} attempt {attempt} has no artifacts (no data.json at {store.root})",
            hint="the attempt may still be running or may have crashed before saving; try another attempt",
        ) from None
    if not isinstance(index, dict) or not isinstance(index.get("objects", {}), dict) or not isinstance(index.get("info", {}), dict):
        raise Damaged(f"{rel} is not an artifact index", hint="the file is corrupt; other tasks are still answered", item=rel)
    return index


def load_blob(store: Datastore, flow: str, sha: str, *, max_bytes: int) -> bytes:
    """The raw (decompressed) bytes of an artifact, refused over max_bytes stored."""
    rel = f"{flow}/data/{sha[:2]}/{sha}"
    raw_flag = False
    if store.size(rel + "_meta") is not None:
        try:
            raw_flag = bool(json.loads(store.read_small(rel + "_meta", cap=4096)).get("cas_raw"))
        except ValueError:
            pass
    size = store.size(rel)
    if size is None:
        raise NotFound(f"artifact blob {sha} is missing from the datastore", hint="the datastore may have been cleaned")
    if size > max_bytes:
        raise TooLarge(f"artifact blob is {size} bytes, over the {max_bytes}-byte cap", hint="raise max_bytes or use list_artifacts for its size and type")
    data = store.read(rel)
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


def attempt_ended(store: Datastore, task: Pathspec, attempt: int) -> tuple[bool, int | None]:
    """Whether the runtime recorded the attempt's exit (`<attempt>.runtime`), and its return code."""
    rel = f"{task}/{attempt}.runtime"
    if store.size(rel) is None:
        return False, None
    try:
        rc = json.loads(store.read_small(rel)).get("return_code")
    except (ValueError, AttributeError):
        rc = None
    return True, rc if isinstance(rc, int) and not isinstance(rc, bool) else None


def _internal(store: Datastore, task: Pathspec, attempt: int, name: str) -> Any:
    """One of Metaflow's own small artifacts of an attempt, through the allow-list unpickler;
    None when absent or unreadable."""
    try:
        sha = data_index(store, task, attempt).get("objects", {}).get(name)
        if not sha:
            return None
        return loads(load_blob(store, task.flow, sha, max_bytes=INTERNAL_BLOB_CAP))
    except Damaged as exc:  # the task is still shown, without this part; the answer names it
        current_meter().damaged(str(task), exc.message, skipped=False)
        return None
    except (AgentError, OSError, ValueError):
        return None


def task_exception(store: Datastore, task: Pathspec, attempt: int) -> dict[str, str | None] | None:
    """type/message/stacktrace of an attempt's `_exception`, or None when absent."""
    obj = _internal(store, task, attempt, "_exception")
    state = getattr(obj, "__dict__", None) or {}
    if not state.get("type"):
        return None
    return {"type": state.get("type"), "message": state.get("exception"), "stacktrace": state.get("stacktrace")}


def foreach_position(store: Datastore, task: Pathspec, attempt: int) -> str | None:
    """'items=3' (var=value per level, like the foreach-stack metadata) from `_foreach_stack`."""
    frames = _internal(store, task, attempt, "_foreach_stack")
    parts = [f"{f[1]}={f[4]}" for f in frames or [] if isinstance(f, tuple) and len(f) >= 5 and f[1] and f[4] is not None]
    return ",".join(parts) or None


def graph_info(store: Datastore, task: Pathspec, attempt: int) -> dict[str, Any] | None:
    """The run's `_graph_info` (a plain dict of steps and decorators) as saved by one of its tasks."""
    graph = _internal(store, task, attempt, "_graph_info")
    return graph if isinstance(graph, dict) else None
