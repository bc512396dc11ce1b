"""Small artifact values as JSON: numbers, strings, short lists and dicts, and nothing else.

Read from the task's data index (size and type first: nothing large is loaded), decoded with
the allow-list unpickler (no code runs), then converted to plain JSON within a size bound.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._blobs import data_index, latest_attempt, load_blob
from ._datastore import Datastore
from ._errors import AgentError, Damaged, NotAllowed
from ._models import ArtifactInfo
from ._pathspec import Pathspec
from ._repr import small_json
from ._unpickle import loads

VALUE_BYTES = 4096  # stored size up to which a value is loaded to be shown
JSON_CHARS = 1000  # longest JSON form shown


_NO_INFO: dict[str, Any] = {}
_TEXT = (str, type(None))
_SIZE = (int, type(None))


class IndexItem(NamedTuple):
    """One artifact of a data index, as plain values (cheap to make for every artifact searched)."""

    name: str
    size: int | None
    type: str | None
    encoding: str | None
    sha: str | None


def index_items(index: dict[str, Any]) -> list[IndexItem]:
    """The artifacts of a data index, sorted by name; Damaged when an entry is not what Metaflow writes."""
    objects, info = index.get("objects") or {}, index.get("info") or {}
    out = []
    for name, sha in sorted(objects.items()):
        meta = info.get(name) or _NO_INFO
        if type(meta) is not dict:
            raise Damaged(f"the artifact index's entry for {name!r} is not what Metaflow writes", hint="the data.json is corrupt")
        size, kind, encoding = meta.get("size"), meta.get("type"), meta.get("encoding")
        if type(sha) not in _TEXT or type(size) not in _SIZE or type(kind) not in _TEXT or type(encoding) not in _TEXT:
            raise Damaged(f"an entry of the artifact index ({name!r}) is not what Metaflow writes", hint="the data.json is corrupt")
        out.append(IndexItem(name, size, clean_type(kind), encoding, sha))
    return out


def artifact_infos(index: dict[str, Any]) -> list[ArtifactInfo]:
    """The artifacts of a data index (name, size, type, encoding, sha), sorted by name."""
    return [ArtifactInfo(name=i.name, size=i.size, type=i.type, encoding=i.encoding, sha=i.sha) for i in index_items(index)]


def clean_type(raw: str | None) -> str | None:
    """"<class 'numpy.ndarray'>" → "numpy.ndarray"."""
    if raw and raw.startswith("<class '") and raw.endswith("'>"):
        return raw[8:-2]
    return raw


def task_artifacts(store: Datastore, task: Pathspec) -> dict[str, ArtifactInfo] | None:
    """The artifacts of a task's latest attempt that saved any (None: none saved)."""
    attempt = latest_attempt(store, task, with_data=True)
    if attempt is None:
        return None
    return {a.name: a for a in artifact_infos(data_index(store, task, attempt))}


def plain_value(store: Datastore, flow: str, info: ArtifactInfo | None) -> tuple[Any, str | None]:
    """(value as JSON, None) for a small plain value; (None, why not) otherwise."""
    if info is None or info.sha is None:
        return None, "not saved"
    if info.size is not None and info.size > VALUE_BYTES:
        return None, f"{info.size} bytes: too large to show (artifact_preview shows a summary)"
    if info.encoding and not str(info.encoding).startswith("pickle"):
        return None, f"encoding {info.encoding} is not decoded here"
    try:
        value = loads(load_blob(store, flow, info.sha, max_bytes=VALUE_BYTES * 4))
    except NotAllowed:
        return None, f"type {info.type or '?'} is not a plain value (artifact_preview shows a summary)"
    except AgentError as exc:
        return None, f"could not be read: {exc.message}"
    small = small_json(value, max_chars=JSON_CHARS)
    if small.get("kind") != "json":
        return None, f"type {info.type or small.get('type')} is not a plain value, or longer than {JSON_CHARS} characters as JSON"
    return small.get("value"), None
