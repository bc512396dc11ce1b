"""Validation of caller input: limits, times, regexes, tags, namespaces, cursors (pathspecs: `_pathspec`)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ._errors import BadCursor, BadInput, BadLimit, BadPattern, BadTime


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


DEFAULT_NAMESPACE = "default"


def resolve_namespace(namespace: str | None) -> str | None:
    """'default' → Metaflow's default namespace (user:<you>); None → all runs."""
    if namespace == DEFAULT_NAMESPACE:
        from ._config import username

        user = username()
        return f"user:{user}" if user else None
    return namespace


def check_tags(value: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    """A tag list (a single string is one tag); BadInput for anything else."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    try:
        tags = tuple(value)
    except TypeError:
        tags = (value,)  # type: ignore[assignment]  # reported as bad just below
    if not all(isinstance(t, str) and t for t in tags):
        raise BadInput(f"{name} must be a list of non-empty strings", hint=f"e.g. {name}=['team:a']")
    return tags


def cursor_position(state: dict[str, Any] | None, kind: str, start: tuple[int, ...]) -> tuple[int, ...]:
    """The position a key cursor carries (`start` without a cursor): as many ints as `start` has."""
    if state is None:
        return start
    pos = state.get("pos")
    if not isinstance(pos, list) or len(pos) != len(start) or not all(isinstance(p, int) and not isinstance(p, bool) and -1 <= p < 1 << 31 for p in pos):
        raise BadCursor(
            f"{kind} cursor has no valid position",
            hint=f"pass the next_cursor returned by the previous {kind} call, or omit cursor to start over",
        )
    return tuple(pos)
