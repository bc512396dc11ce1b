"""Validation of caller input: limits, times, regexes, tags, namespaces, cursors (pathspecs: `_pathspec`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from ._errors import BadInput, BadLimit, BadTime


def check_limit(name: str, value: Any, *, low: int, high: int) -> int:
    """An int within [low, high], else BadLimit naming the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadLimit(f"{name} must be an integer, got {value!r}", hint=f"pass {name} between {low} and {high}")
    if not low <= value <= high:
        raise BadLimit(f"{name}={value} is out of range", hint=f"pass {name} between {low} and {high}")
    return value


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


def iso(ms: float | None) -> str | None:
    """Epoch ms → ISO-8601 UTC string."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


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
