"""Master's list-query grammar: ``field:op=v1,v2`` filters, ``_tags``, ``_limit`` and ``_cursor``.

Pure functions over already-serialised rows; the routes in ``app.py`` decide which fields a
list accepts. Semantics follow what the captures show (and the public service code):

- a filter on an allowed field is ``field:op=v1,v2`` (ops ``eq ne lt le gt ge co sw ew li is``,
  ``op`` defaults to ``eq``; commas OR the values; ``null`` means IS NULL); unknown fields are
  ignored, an unknown op on a known field is a 400;
- ``_tags:any`` / ``_tags:all`` (default ``all``) look in ``tags`` + ``system_tags``;
- any filter, ``_limit`` or ``_cursor`` turns pagination on: page size ``min(int(_limit), 500)``
  or 50, keyset order descending, ``X-Limit`` always and ``X-Next-Cursor`` only with more rows;
- a cursor is base64 of ``json.dumps({...})``; an undecodable one is a 400 ``Invalid cursor``,
  ``_limit=notanumber`` raises ``ValueError`` (the caller turns it into master's 500).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "co", "sw", "ew", "li", "is")
RUN_STATUSES = ("running", "completed", "failed")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Row = dict[str, Any]


class BadQuery(Exception):
    """A 400 whose body is the JSON-encoded message string."""


class DatabaseError(Exception):
    """What PostgreSQL would reject (e.g. ``run_number:eq=abc``): the service answers 500."""


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    limit: int
    next_cursor: str | None


def split_field_op(key: str) -> tuple[str, str]:
    field, _, op = key.partition(":")
    return field, (op or "eq")


def validate_filters(
    query: Mapping[str, str], allowed: Sequence[str], numeric_ms: Iterable[str], statuses: bool = False
) -> None:
    """Raise ``BadQuery`` like master's ``_validate_*_filters``."""
    numeric = set(numeric_ms)
    for key, val in query.items():
        if key.startswith("_"):
            continue
        field, op = split_field_op(key)
        if field not in allowed:
            continue
        if op not in OPERATORS:
            raise BadQuery("unsupported operator '%s' for field '%s'" % (op, field))
        for v in val.split(","):
            if v == "null":
                continue
            if statuses and field == "status" and v not in RUN_STATUSES:
                raise BadQuery("unsupported status filter: %s" % v)
            if field in numeric:
                try:
                    int(v)
                except ValueError:
                    raise BadQuery(
                        "invalid %s: expected integer epoch milliseconds, got '%s'" % (field, v)
                    ) from None


Predicate = Callable[[Row], bool]


def _like(pattern: str, text: str) -> bool:
    """SQL ILIKE with ``%`` and ``_`` wildcards."""
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, re.IGNORECASE | re.DOTALL) is not None


def _coerce(column_value: Any, v: str) -> tuple[Any, Any]:
    """Compare like PostgreSQL would: integer columns need integer literals."""
    if isinstance(column_value, bool) or column_value is None:
        return column_value, v
    if isinstance(column_value, int):
        try:
            return column_value, int(v)
        except ValueError:
            raise DatabaseError('invalid input syntax for type bigint: "%s"' % v) from None
    if isinstance(column_value, (list, dict)):
        return json.dumps(column_value), v
    return str(column_value), v


def _one(op: str, column_value: Any, v: str) -> bool:
    if v == "null":
        return column_value is None
    if column_value is None:
        return False
    if op in ("co", "sw", "ew", "li"):
        pattern = {"co": "%{}%", "sw": "{}%", "ew": "%{}", "li": "{}"}[op].format(v)
        text = json.dumps(column_value) if isinstance(column_value, (list, dict)) else str(column_value)
        return _like(pattern, text)
    if op == "is":
        raise DatabaseError('syntax error at or near "%s"' % v)
    a, b = _coerce(column_value, v)
    return {
        "eq": a == b,
        "ne": a != b,
        "lt": a < b,
        "le": a <= b,
        "gt": a > b,
        "ge": a >= b,
    }[op]


def column_predicates(query: Mapping[str, str], allowed: Sequence[str]) -> list[Predicate]:
    """One predicate per allowed ``field:op`` key (values ORed), unknown fields dropped."""
    preds: list[Predicate] = []
    for key, val in query.items():
        if key.startswith("_"):
            continue
        field, op = split_field_op(key)
        if field not in allowed or op not in OPERATORS:
            continue
        values = val.split(",")
        preds.append(
            lambda row, f=field, o=op, vs=values: any(_one(o, row.get(f), v) for v in vs)
        )
    return preds


def tag_predicates(query: Mapping[str, str]) -> list[Predicate]:
    """``_tags[:any|all|likeany|likeall]`` over ``tags`` + ``system_tags``."""
    preds: list[Predicate] = []
    for key, val in query.items():
        field, _, op = key.partition(":")
        if field != "_tags":
            continue
        wanted = val.split(",")

        def all_tags(row: Row) -> list[str]:
            return list(row.get("tags") or []) + list(row.get("system_tags") or [])

        if op in ("likeany", "likeall"):
            combine = any if op == "likeany" else all
            preds.append(
                lambda row, w=wanted, c=combine: c(
                    _like("%{}%".format(t), json.dumps(all_tags(row))) for t in w
                )
            )
        else:
            combine = any if op == "any" else all
            preds.append(lambda row, w=wanted, c=combine: c(t in all_tags(row) for t in w))
    return preds


def encode_cursor(values: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(dict(values)).encode()).decode()


def decode_cursor(cursor: str, fields: Sequence[tuple[str, type]]) -> tuple[Any, ...]:
    """The keyset tuple of a cursor, or ``BadQuery('Invalid cursor')``."""
    try:
        data = json.loads(base64.b64decode(cursor.encode()).decode())
        return tuple(kind(data[name]) for name, kind in fields)
    except (ValueError, KeyError, binascii.Error, UnicodeError):
        raise BadQuery("Invalid cursor") from None


def page_size(raw: str | None) -> int:
    """Master: ``min(int(_limit), 500) if _limit else 50`` (``int('x')`` raises)."""
    return max(min(int(raw), MAX_LIMIT), 0) if raw else DEFAULT_LIMIT


def paginate(
    rows: Iterable[Row],
    key: Callable[[Row], tuple[Any, ...]],
    cursor_fields: Sequence[tuple[str, type]],
    cursor: str | None,
    limit: int,
) -> Page:
    """Keyset page of ``rows`` ordered by ``key`` descending, after ``cursor`` if any."""
    ordered = sorted(rows, key=key, reverse=True)
    if cursor:
        after = decode_cursor(cursor, cursor_fields)
        ordered = [r for r in ordered if key(r) < after]
    fetched = ordered[: limit + 1]
    page = fetched[:limit]
    next_cursor = None
    if len(fetched) > limit and page:
        last = key(page[-1])
        next_cursor = encode_cursor({name: last[i] for i, (name, _) in enumerate(cursor_fields)})
    return Page(page, limit, next_cursor)
