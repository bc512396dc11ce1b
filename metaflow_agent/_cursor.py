"""Cursors that cannot be forged: signed, bound to their query, checked field by field.

A cursor is ``c1.<payload>.<tag>``: the payload is compact JSON of the kind,
the query fingerprint and the position; the tag is an HMAC-SHA256 of the
payload. Both the tag and the query fingerprint use a key from
``METAFLOW_AGENT_CURSOR_KEY`` or, without it, from a per-user key file
(``$XDG_CACHE_HOME/metaflow-agent/cursor.key``, created 0600), so separate CLI
processes of the same user accept each other's cursors and nobody else can
make one. A cursor that fails the tag, names another kind or query, or whose
fields do not match the kind's schema (types, ranges, lengths) is BadCursor:
no OverflowError or TypeError reaches the caller.

Offset cursors carry ``i``; search cursors a position ``pos`` (or, through the
query service, its cursor ``srv`` and the hits to ``skip``); list_runs the last
(ts, id) seen and the window resolved on the first page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import BadCursor

KEY_ENV = "METAFLOW_AGENT_CURSOR_KEY"
VERSION = "c1"
MAX_CURSOR = 8192  # characters
_TAG_BYTES = 16
MAX_OFFSET = 10**9


# --------------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class Int:
    low: int
    high: int
    optional: bool = False

    def ok(self, v: Any) -> bool:
        return (v is None and self.optional) or (type(v) is int and self.low <= v <= self.high)


@dataclass(frozen=True)
class Str:
    max_len: int
    pattern: str = ""
    optional: bool = False

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.optional
        return type(v) is str and len(v) <= self.max_len and (not self.pattern or re.fullmatch(self.pattern, v) is not None)


@dataclass(frozen=True)
class Ints:
    length: int
    low: int
    high: int

    def ok(self, v: Any) -> bool:
        return type(v) is list and len(v) == self.length and all(type(x) is int and self.low <= x <= self.high for x in v)


Field = Int | Str | Ints
_EPOCH_MS = 1 << 53

SCHEMAS: dict[str, dict[str, Field]] = {
    "list_artifacts": {"i": Int(0, MAX_OFFSET)},
    "failed_tasks": {"i": Int(0, MAX_OFFSET)},
    "list_tasks": {"i": Int(0, MAX_OFFSET)},
    "list_flows": {"i": Int(0, MAX_OFFSET)},
    "search_artifacts": {"pos": Ints(4, -1, MAX_OFFSET)},
    # The same search through the query service: its cursor (none: from the start), how many of
    # that page's name hits to pass over, and the window's times as the first page resolved them.
    "search_artifacts_qs": {
        "srv": Str(4096, r"[A-Za-z0-9_\-]+", optional=True),
        "skip": Int(0, MAX_OFFSET),
        "since": Int(-_EPOCH_MS, _EPOCH_MS, optional=True),
        "until": Int(-_EPOCH_MS, _EPOCH_MS, optional=True),
    },
    "list_runs": {
        "ts": Int(-_EPOCH_MS, _EPOCH_MS),
        "id": Str(256, r"[A-Za-z0-9_\-.:]+"),
        "since": Int(-_EPOCH_MS, _EPOCH_MS, optional=True),
        "until": Int(-_EPOCH_MS, _EPOCH_MS, optional=True),
        "srv": Str(4096, optional=True),
    },
}


def register(kind: str, **fields: Field) -> None:
    """Declare the fields of a new cursor kind (all required unless optional)."""
    SCHEMAS[kind] = dict(fields)


# --------------------------------------------------------------------------- the key
_key: bytes | None = None
_key_lock = threading.Lock()


def _key_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metaflow-agent" / "cursor.key"


def _read_or_create(path: Path) -> bytes:
    """The key file's bytes, creating it 0600 (atomically: two processes agree on one key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        pass
    else:
        tmp = secrets.token_hex(32).encode()
        try:
            os.write(fd, tmp)
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            raise OSError("cursor key file is not a regular file of this user")
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # others could have read it: tighten (the key stays valid for this user)
        data = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(data) < 32:  # a writer may not have finished: its key is the one to use, so wait for it
        raise OSError("cursor key file is incomplete")
    return data


def key() -> bytes:
    """The cursor key: METAFLOW_AGENT_CURSOR_KEY, else the per-user key file, else a per-process key."""
    global _key
    env = os.environ.get(KEY_ENV)
    if env:
        return hashlib.sha256(b"metaflow-agent cursor key\0" + env.encode()).digest()
    with _key_lock:
        if _key is None:
            for _ in range(50):
                try:
                    _key = _read_or_create(_key_file())
                    break
                except OSError as exc:
                    if "incomplete" not in str(exc):
                        break
                    threading.Event().wait(0.01)
            if _key is None:  # unwritable home: cursors still work within this process
                _key = secrets.token_bytes(32)
        return _key


def _reset_key_cache() -> None:
    """Forget the cached key (tests that switch the key file)."""
    global _key
    with _key_lock:
        _key = None


# --------------------------------------------------------------------------- API
def query_key(*args: Any) -> str:
    """A keyed fingerprint of a query's arguments, as given (relative times unresolved)."""
    return hmac.new(key(), b"query\0" + repr(args).encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(payload: bytes) -> bytes:
    return hmac.new(key(), b"cursor\0" + payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _check(kind: str, state: dict[str, Any]) -> None:
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise KeyError(f"no cursor schema for {kind!r}")
    unknown = set(state) - set(schema)
    missing = {k for k, f in schema.items() if k not in state and not getattr(f, "optional", False)}
    if unknown or missing or not all(schema[k].ok(v) for k, v in state.items()):
        raise ValueError(f"{kind} cursor fields do not match the schema")


def make_cursor(kind: str, key_: str, **state: Any) -> str:
    """A signed cursor of `kind` for the query `key_` (from query_key) at `state`."""
    _check(kind, state)
    payload = json.dumps({"k": kind, "q": key_, **state}, separators=(",", ":"), sort_keys=True).encode()
    return f"{VERSION}.{_b64(payload)}.{_b64(_tag(payload))}"


def _bad(kind: str, why: str) -> BadCursor:
    return BadCursor(
        f"cursor {why}",
        hint=f"pass the next_cursor returned by the previous {kind} call with the same arguments, or omit cursor to start over",
    )


def _payload(cursor: Any, kind: str) -> dict[str, Any]:
    """The verified payload of a cursor (tag and schema), not yet bound to a query."""
    if not isinstance(cursor, str):
        raise _bad(kind, f"must be a string, not {type(cursor).__name__}")
    if len(cursor) > MAX_CURSOR:
        raise _bad(kind, f"is {len(cursor)} characters long; no {kind} cursor is")
    parts = cursor.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise _bad(kind, f"{cursor[:40]!r} was not issued by {kind}")
    try:
        payload, tag = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise _bad(kind, f"{cursor[:40]!r} is not a cursor") from None
    if _b64(payload) != parts[1] or _b64(tag) != parts[2]:  # base64 ignores a last character's spare bits
        raise _bad(kind, "was altered (not in its canonical form)")
    if not hmac.compare_digest(tag, _tag(payload)):
        raise _bad(kind, "was altered or issued elsewhere (its signature does not match)")
    try:
        state = json.loads(payload)
        if not isinstance(state, dict) or state.pop("k", None) != kind or not isinstance(state.get("q"), str):
            raise ValueError
        fields = {k: v for k, v in state.items() if k != "q"}
        _check(kind, fields)
    except (ValueError, TypeError, KeyError, RecursionError):
        raise _bad(kind, f"was not issued by {kind}") from None
    return state


def open_cursor(cursor: str | None, kind: str, key_: str) -> dict[str, Any] | None:
    """Verify a cursor and its binding to this very query; its fields, or None without one."""
    if cursor is None:
        return None
    state = _payload(cursor, kind)
    if not hmac.compare_digest(state.pop("q"), key_):
        raise BadCursor(
            f"cursor belongs to a different {kind} query",
            hint=f"repeat the {kind} call with the same arguments to use this cursor, or drop the cursor",
        )
    return state


def reissue_cursor(cursor: str, kind: str, **changes: Any) -> str:
    """The same query's cursor at another position (e.g. i=12), for layers that re-page an answer."""
    state = _payload(cursor, kind)
    q = state.pop("q")
    return make_cursor(kind, q, **{**state, **changes})


def cursor_kind(cursor: Any, kinds: tuple[str, ...]) -> str:
    """Which of `kinds` issued a verified cursor; BadCursor (as for the first kind) when none did."""
    for kind in kinds:
        try:
            _payload(cursor, kind)
        except BadCursor:
            continue
        return kind
    _payload(cursor, kinds[0])  # raises the first kind's error
    raise _bad(kinds[0], "was not issued here")


def peek_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """A verified cursor's fields (without checking which query it belongs to)."""
    state = _payload(cursor, kind)
    state.pop("q")
    return state


def cursor_offset(state: dict[str, Any] | None, kind: str) -> int:
    """The list offset an offset cursor carries (0 without a cursor)."""
    if state is None:
        return 0
    value = state.get("i")
    if type(value) is not int or not 0 <= value <= MAX_OFFSET:
        raise _bad(kind, "has no valid position")
    return value


def cursor_position(state: dict[str, Any] | None, start: tuple[int, ...]) -> tuple[int, ...]:
    """The position a verified `pos` cursor carries (`start` without a cursor)."""
    return start if state is None else tuple(state["pos"])
