"""Query-parameter parsing: every value checked, every problem a `BadParam` naming the parameter.

Cursors are opaque to clients: base64url of a small JSON object holding the keyset position and
a digest of the query that issued it, so a cursor replayed against other filters is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")  # flow and step names, run ids
TAG_MAX = 255


class BadParam(Exception):
    """A wrong request parameter: HTTP 400 with a JSON body naming it."""

    def __init__(self, param: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.param, self.message, self.hint = param, message, hint


class NotFoundError(Exception):
    """The flow or run in the path does not exist: HTTP 404."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Limits:
    default: int
    cap: int


class Query:
    """One request's query parameters, read by name; unknown ones are errors."""

    def __init__(self, items: Iterable[tuple[str, str]], *, allowed: Sequence[str]) -> None:
        self._values: dict[str, str] = {}
        for key, value in items:
            if key not in allowed:
                raise BadParam(key, f"unknown parameter {key!r}", f"this route takes: {', '.join(sorted(allowed)) or 'no parameters'}")
            if key in self._values:
                raise BadParam(key, f"parameter {key!r} given twice", "give it once; lists are comma-separated (a,b)")
            self._values[key] = value

    def raw(self, name: str) -> str | None:
        return self._values.get(name)

    def canonical(self, exclude: Sequence[str] = ("_cursor", "_limit")) -> str:
        """The parameters defining the result set, stably (for cursor binding)."""
        return json.dumps({k: v for k, v in sorted(self._values.items()) if k not in exclude}, separators=(",", ":"))

    # --- typed getters -----------------------------------------------------------
    def limit(self, limits: Limits, name: str = "_limit") -> int:
        raw = self.raw(name)
        if raw is None:
            return limits.default
        value = self._int(name, raw)
        if not 1 <= value <= limits.cap:
            raise BadParam(name, f"{name} must be between 1 and {limits.cap}, got {value}", f"use at most {limits.cap} and follow the cursor")
        return value

    def integer(self, name: str, *, lo: int, hi: int, default: int | None = None) -> int | None:
        raw = self.raw(name)
        if raw is None:
            return default
        value = self._int(name, raw)
        if not lo <= value <= hi:
            raise BadParam(name, f"{name} must be between {lo} and {hi}, got {value}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise BadParam(name, f"{name} must be true or false, got {raw[:40]!r}")

    def choices(self, name: str, allowed: Sequence[str]) -> list[str]:
        """A comma-separated subset of `allowed` (empty list when absent)."""
        raw = self.raw(name)
        if raw is None:
            return []
        items = [x.strip() for x in raw.split(",")]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise BadParam(name, f"{name} has unknown value(s) {bad[:5]!r}", f"allowed: {', '.join(allowed)} (comma-separated)")
        return list(dict.fromkeys(items))

    def names(self, name: str, *, max_items: int, pattern: re.Pattern[str] = NAME_RE) -> list[str]:
        raw = self.raw(name)
        if raw is None:
            return []
        items = [x.strip() for x in raw.split(",")]
        if not items or len(items) > max_items:
            raise BadParam(name, f"{name} takes 1 to {max_items} comma-separated names, got {len(items)}")
        for item in items:
            if not pattern.fullmatch(item):
                raise BadParam(name, f"{name} has an invalid name {item[:60]!r}", "names are letters, digits, _ . : -")
        return list(dict.fromkeys(items))

    def tags(self, name: str, *, max_items: int = 20) -> list[str]:
        raw = self.raw(name)
        if raw is None:
            return []
        items = [x.strip() for x in raw.split(",")]
        if not items or len(items) > max_items or any(not t or len(t) > TAG_MAX for t in items):
            raise BadParam(name, f"{name} takes 1 to {max_items} non-empty comma-separated tags of at most {TAG_MAX} characters")
        return list(dict.fromkeys(items))

    def epoch_ms(self, name: str) -> int | None:
        """A time: epoch milliseconds or ISO-8601 (UTC when no zone)."""
        raw = self.raw(name)
        if raw is None:
            return None
        if re.fullmatch(r"\d{1,15}", raw):
            return int(raw)
        from datetime import datetime, timezone

        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadParam(name, f"{name} is not a time: {raw[:40]!r}", "give epoch milliseconds or ISO-8601, e.g. 2026-11-30T17:00:00Z") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)

    @staticmethod
    def _int(name: str, raw: str) -> int:
        if not re.fullmatch(r"-?\d{1,18}", raw):
            raise BadParam(name, f"{name} must be an integer, got {raw[:40]!r}")
        return int(raw)


def check_name(param: str, value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise BadParam(param, f"invalid {param} {value[:60]!r}", "names are letters, digits, _ . : -")
    return value


# --- cursors ---------------------------------------------------------------------
def _digest(route: str, canonical: str) -> str:
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()[:16]


def encode_cursor(route: str, query: Query, key: Sequence[Any]) -> str:
    """An opaque cursor: a keyset position bound to route and filters."""
    blob = json.dumps({"q": _digest(route, query.canonical()), "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(blob).decode().rstrip("=")


def decode_cursor(route: str, query: Query, types: Sequence[type]) -> list[Any] | None:
    """The keyset position in `_cursor`, checked against route, filters and types."""
    raw = query.raw("_cursor")
    if raw is None:
        return None
    try:
        if len(raw) > 2048:
            raise ValueError
        data: Mapping[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        key = data["k"]
        if not isinstance(key, list) or len(key) != len(types):
            raise ValueError
        for value, kind in zip(key, types):
            if type(value) is not kind:  # bool is not int here
                raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadParam("_cursor", "malformed cursor", "pass X-Next-Cursor / next_cursor exactly as received") from None
    if data.get("q") != _digest(route, query.canonical()):
        raise BadParam("_cursor", "this cursor belongs to another query", "repeat the filters of the request that returned the cursor, or drop _cursor")
    return key


GlobPart = tuple[str, str]  # ("lit", char) | ("any", "") | ("one", "") | ("class", "[...]" body with its "!" kept)


def parse_glob(pattern: str) -> list[GlobPart]:
    """A glob in fnmatch's grammar: `*`, `?`, `[seq]`, `[!seq]` (a `[` with no closing `]` is literal)."""
    out: list[GlobPart] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1][0] != "any":  # a run of stars is one star
                out.append(("any", ""))
        elif c == "?":
            out.append(("one", ""))
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":  # a ] first in the class is literal
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(("lit", "["))
                continue
            out.append(("class", pattern[i:j]))
            i = j + 1
        else:
            out.append(("lit", c))
    return out


def glob_to_like(pattern: str) -> str:
    """A glob as an escaped LIKE pattern; a class becomes `_` (any one character).

    Exact for `*` and `?`; with a class it selects a superset, which `glob_to_regex` narrows."""
    out = []
    for kind, text in parse_glob(pattern):
        if kind == "any":
            out.append("%")
        elif kind in ("one", "class"):
            out.append("_")
        else:
            out.append("\\" + text if text in "%_\\" else text)
    return "".join(out)


def glob_has_class(pattern: str) -> bool:
    return any(kind == "class" for kind, _ in parse_glob(pattern))


def glob_to_regex(pattern: str) -> str:
    """A glob as an anchored PostgreSQL regular expression (ARE) with fnmatch's meaning.

    Only ASCII punctuation is escaped (a backslash before a letter or digit is an ARE escape);
    inside a class, `\\ ] [ ^` are escaped and ranges (`a-z`) kept, as fnmatch does."""
    out = ["^(?:"]
    for kind, text in parse_glob(pattern):
        if kind == "any":
            out.append(".*")
        elif kind == "one":
            out.append(".")
        elif kind == "class":
            negate = text.startswith("!")
            body = "".join("\\" + ch if ch in "\\]^[" else ch for ch in (text[1:] if negate else text))
            out.append("[" + ("^" if negate else "") + body + "]")
        else:
            out.append("\\" + text if text.isascii() and not text.isalnum() else text)
    out.append(")$")
    return "".join(out)
