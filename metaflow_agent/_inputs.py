"""Validation of caller input: pathspecs, limits, times, regexes, cursors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ._errors import BadCursor, BadLimit, BadPathspec, BadPattern, BadTime

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9_\-.:]+$")


@dataclass(frozen=True)
class Pathspec:
    """A parsed 'Flow[/Run[/Step[/Task]]]'."""

    flow: str
    run: str = ""  # "" when the pathspec stops above this level
    step: str = ""
    task: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.flow, self.run, self.step, self.task) if p)


_DEPTH = {"flow": 1, "run": 2, "step": 3, "task": 4}
_EXAMPLE = {"flow": "MyFlow", "run": "MyFlow/12", "step": "MyFlow/12/train", "task": "MyFlow/12/train/345"}


def parse_pathspec(value: Any, kind: str) -> Pathspec:
    """Parse a pathspec that must name exactly a flow, run, step or task."""
    want = _DEPTH[kind]
    if not isinstance(value, str) or not value.strip():
        raise BadPathspec(f"expected a {kind} pathspec, got {value!r}", hint=f"use the form '{_EXAMPLE[kind]}'")
    parts = value.strip().strip("/").split("/")
    if len(parts) != want:
        raise BadPathspec(
            f"{value!r} is not a {kind} pathspec ({len(parts)} parts, expected {want})",
            hint=f"use the form '{_EXAMPLE[kind]}'",
        )
    if not _NAME.match(parts[0]):
        raise BadPathspec(f"{parts[0]!r} is not a valid flow name", hint="flow names are Python class names, e.g. 'MyFlow'")
    if want >= 2 and not _ID.match(parts[1]):
        raise BadPathspec(f"{parts[1]!r} is not a valid run id", hint=f"use the form '{_EXAMPLE[kind]}'")
    if want >= 3 and not _NAME.match(parts[2]):
        raise BadPathspec(f"{parts[2]!r} is not a valid step name", hint=f"use the form '{_EXAMPLE[kind]}'")
    if want >= 4 and not _ID.match(parts[3]):
        raise BadPathspec(f"{parts[3]!r} is not a valid task id", hint=f"use the form '{_EXAMPLE[kind]}'")
    return Pathspec(*parts)


def check_limit(name: str, value: Any, *, low: int, high: int) -> int:
    """An int within [low, high], else BadLimit naming the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadLimit(f"{name} must be an integer, got {value!r}", hint=f"pass {name} between {low} and {high}")
    if not low <= value <= high:
        raise BadLimit(f"{name}={value} is out of range", hint=f"pass {name} between {low} and {high}")
    return value


def compile_pattern(pattern: Any) -> re.Pattern[str]:
    """Compile a user regex, turning syntax errors into BadPattern."""
    if not isinstance(pattern, str) or not pattern:
        raise BadPattern(f"grep pattern must be a non-empty string, got {pattern!r}", hint="pass a Python regular expression, e.g. 'Error|Traceback'")
    if len(pattern) > 1000:
        raise BadPattern("grep pattern is longer than 1000 characters", hint="use a shorter pattern")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadPattern(f"invalid regex {pattern!r}: {exc}", hint="escape special characters with re.escape or use a simpler pattern") from None


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: Any, name: str, *, now: datetime | None = None) -> int | None:
    """ISO-8601, relative ('24h', '7d'), datetime or epoch seconds → epoch ms."""
    if value is None:
        return None
    now = now or datetime.now(timezone.utc)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value * 1000) if value < 1e11 else int(value)
        if isinstance(value, str):
            m = _RELATIVE.match(value)
            if m:
                delta = timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
                return int((now - delta).timestamp() * 1000)
    except (OverflowError, ValueError):
        raise BadTime(f"{name}={value!r} is out of range", hint=f"pass {name} within a few years of now, e.g. '7d'") from None
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
            return int(dt.timestamp() * 1000)
    raise BadTime(
        f"{name}={value!r} is not a time",
        hint=f"pass {name} as ISO-8601 ('2026-11-01T00:00:00Z') or relative ('24h', '7d', '30m')",
    )


def iso(ms: int | float | None) -> str | None:
    """Epoch ms → ISO-8601 UTC string."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_cursor(kind: str, state: dict[str, Any]) -> str:
    """An opaque cursor bound to the query kind that issued it."""
    raw = json.dumps({"k": kind, **state}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> dict[str, Any] | None:
    """Decode a cursor from encode_cursor; BadCursor when foreign or corrupt."""
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise BadCursor(f"cursor must be a string, got {type(cursor).__name__}", hint=f"pass the next_cursor returned by {kind}")
    try:
        pad = "=" * (-len(cursor) % 4)
        state = json.loads(base64.urlsafe_b64decode(cursor + pad))
        if not isinstance(state, dict) or state.pop("k") != kind:
            raise ValueError
        return state
    except Exception:
        raise BadCursor(
            f"cursor {cursor[:40]!r} was not issued by {kind}",
            hint=f"pass the next_cursor returned by the previous {kind} call, or omit cursor to start over",
        ) from None


def query_key(*args: Any) -> str:
    """A short fingerprint of a query's arguments, as given (relative times unresolved)."""
    return hashlib.sha1(repr(args).encode()).hexdigest()[:12]


def open_cursor(cursor: str | None, kind: str, key: str) -> dict[str, Any] | None:
    """Decode a cursor and check it was issued for this very query (`key`)."""
    state = decode_cursor(cursor, kind)
    if state is not None and state.get("q") != key:
        raise BadCursor(
            f"cursor belongs to a different {kind} query",
            hint=f"repeat the {kind} call with the same arguments to use this cursor, or drop the cursor",
        )
    return state


def make_cursor(kind: str, key: str, **state: Any) -> str:
    """A cursor bound to its query kind and arguments."""
    return encode_cursor(kind, {"q": key, **state})


def cursor_offset(state: dict[str, Any] | None, kind: str) -> int:
    """The list offset an offset cursor carries (0 without a cursor); BadCursor when corrupt."""
    if state is None:
        return 0
    value = state.get("i")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadCursor(
            f"{kind} cursor has no valid position",
            hint=f"pass the next_cursor returned by the previous {kind} call, or omit cursor to start over",
        )
    return value
