"""Bounded rendering of values: a repr, a type-aware summary and a small JSON form.

`bounded_repr` walks values itself and stops at a depth, a number of items per
container and a total number of characters, so its work is proportional to
what it returns: the 586-byte list of 10**26 shared items renders at once.
Containers already on the current path print as `[...]` (cycles); shared ones
are rendered again but within the same budget. It never calls the `__repr__`
of a type it does not know: builtins, the standard library types the
unpickling allow-list admits, numpy and pandas are rendered by code here (or by
the library's own repr where that is bounded); anything else is
`<module.Class object>`. Container subclasses are read through the builtin
base's own methods, so an overridden `__iter__` does not run either.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import math
import pathlib
import sys
import uuid
import zoneinfo
from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any, Literal, TypedDict

DEFAULT_CHARS = 1000
DEFAULT_DEPTH = 6
DEFAULT_ITEMS = 20
_INT_DIGITS = 1000  # larger ints print as their size: str(int) is quadratic

# Types whose own repr is bounded by their size and runs only standard-library code.
_TRUSTED = (
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
    zoneinfo.ZoneInfo,
    uuid.UUID,
    pathlib.PurePath,
    range,
    slice,
    type(None),
    type(Ellipsis),
    type(NotImplemented),
)


class _Full(Exception):
    """The character budget is spent."""


def type_name(value: Any) -> str:
    """'numpy.ndarray' style name of a value's type (builtins unqualified)."""
    t = type(value)
    mod = t.__module__
    return t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def _lib(value: Any, name: str) -> Any:
    """numpy or pandas, only when already imported and the value comes from it."""
    mod = sys.modules.get(name)
    if mod is None or not type(value).__module__.startswith(name):
        return None
    return mod


class _Writer:
    def __init__(self, chars: int, depth: int, items: int) -> None:
        self.parts: list[str] = []
        self.used = 0
        self.chars, self.depth, self.items = chars, depth, items
        self.path: set[int] = set()
        self.cut = False  # anything left out (depth, items or characters)
        self.clipped = False  # the text itself was cut at the character budget

    def put(self, text: str) -> None:
        room = self.chars - self.used
        if len(text) > room:
            self.parts.append(text[: max(room, 0)])
            self.used = self.chars
            self.cut = self.clipped = True
            raise _Full
        self.parts.append(text)
        self.used += len(text)

    # -- dispatch
    def value(self, v: Any, level: int) -> None:
        t = type(v)
        if t is _Col:
            self.put("[")
            self.sequence(iter(v.values), v.total, level)
            self.put("]")
        elif t is bool or v is None:
            self.put(repr(v))
        elif isinstance(v, int) and not isinstance(v, bool) and _lib(v, "numpy") is None:
            self.int_(int.__index__(v) if t is not int else v)
        elif isinstance(v, float) and _lib(v, "numpy") is None:
            self.put(float.__repr__(v))
        elif t is complex:
            self.put(repr(v))
        elif isinstance(v, str) and _lib(v, "numpy") is None:
            self.text(str.__str__(v))
        elif isinstance(v, (bytes, bytearray)) and _lib(v, "numpy") is None:
            self.raw(v)
        elif isinstance(v, (list, tuple, set, frozenset, dict, deque)):
            self.container(v, level)
        elif isinstance(v, _TRUSTED):
            self.put(repr(v))
        elif t is decimal.Decimal:
            self.decimal_(v)
        elif t is fractions.Fraction:
            self.put("Fraction(")
            self.int_(v.numerator)
            self.put(", ")
            self.int_(v.denominator)
            self.put(")")
        elif isinstance(v, type):
            self.put(f"<class '{v.__module__}.{v.__qualname__}'>")
        elif _lib(v, "numpy") is not None:
            self.numpy_(v, level)
        elif _lib(v, "pandas") is not None:
            self.pandas_(v, level)
        elif type_name(v) == "metaflow.exception.MetaflowExceptionWrapper":
            state = vars(v) if isinstance(getattr(v, "__dict__", None), dict) else {}
            self.put("MetaflowExceptionWrapper(")
            self.mapping(((k, state[k]) for k in ("type", "exception") if k in state), len(state), level, kw=True)
            self.put(")")
        else:
            self.put(f"<{type_name(v)} object>")

    # -- scalars
    def int_(self, v: int) -> None:
        if v.bit_length() > _INT_DIGITS * 10 // 3:
            self.put(f"<int of about {int(v.bit_length() * math.log10(2)) + 1} digits>")
        else:
            self.put(int.__repr__(v))

    def text(self, s: str) -> None:
        room = max(self.chars - self.used, 0) + 2
        if len(s) > room:
            self.put(repr(s[:room]))
        else:
            self.put(repr(s))

    def raw(self, b: bytes | bytearray) -> None:
        room = max(self.chars - self.used, 0) + 2
        head = bytes(b[:room])
        self.put(("bytearray(" + repr(head) + ")") if isinstance(b, bytearray) else repr(head))

    def decimal_(self, v: decimal.Decimal) -> None:
        sign, digits, exp = v.as_tuple()
        if len(digits) > _INT_DIGITS:
            self.put(f"Decimal(<{len(digits)} digits, exponent {exp}>)")
        else:
            self.put(f"Decimal('{v}')")

    # -- containers
    def container(self, v: Any, level: int) -> None:
        base = next(b for b in type(v).__mro__ if b in (list, tuple, set, frozenset, dict, deque))
        if id(v) in self.path:
            self.put({list: "[...]", tuple: "(...)", dict: "{...}", deque: "deque([...])"}.get(base, "{...}"))
            return
        if level >= self.depth:
            self.put({list: "[…]", tuple: "(…)", dict: "{…}", deque: "deque([…])"}.get(base, "{…}"))
            self.cut = True
            return
        self.path.add(id(v))
        try:
            if base is dict:
                self.dict_(v, level)
            elif base is deque:
                self.put("deque([")
                self.sequence(deque.__iter__(v), deque.__len__(v), level)
                self.put("])")
            elif base in (set, frozenset):
                n = base.__len__(v)
                if n == 0:
                    self.put("set()" if base is set else "frozenset()")
                else:
                    self.put("{" if base is set else "frozenset({")
                    self.sequence(base.__iter__(v), n, level)
                    self.put("}" if base is set else "})")
            else:
                n = base.__len__(v)
                opener, closer = ("[", "]") if base is list else ("(", ",)" if n == 1 else ")")
                if base is tuple and type(v).__module__ == "metaflow_agent._unpickle":
                    opener = "ForeachFrame("
                self.put(opener)
                self.sequence(base.__iter__(v), n, level)
                self.put(closer)
        finally:
            self.path.discard(id(v))

    def dict_(self, v: Any, level: int) -> None:
        t = type(v)
        prefix = ""
        if t is OrderedDict:
            prefix = "OrderedDict("
        elif t is Counter:
            prefix = "Counter("
        elif t is defaultdict:
            factory = v.default_factory
            prefix = "defaultdict(" + (f"{factory.__qualname__}" if isinstance(factory, type) else "None") + ", "
        elif t is not dict:
            prefix = f"{type_name(v)}("
        self.put(prefix + "{")
        self.mapping(dict.items(v), dict.__len__(v), level)
        self.put("}" + (")" if prefix else ""))

    def sequence(self, it: Any, n: int, level: int) -> None:
        for i, item in enumerate(it):
            if i:
                self.put(", ")
            if i >= self.items:
                self.put(f"…+{n - i}")
                self.cut = True
                return
            self.value(item, level + 1)

    def mapping(self, pairs: Any, n: int, level: int, *, kw: bool = False) -> None:
        for i, (k, val) in enumerate(pairs):
            if i:
                self.put(", ")
            if i >= self.items:
                self.put(f"…+{n - i}")
                self.cut = True
                return
            if kw:
                self.put(f"{k}=")
            else:
                self.value(k, level + 1)
                self.put(": ")
            self.value(val, level + 1)

    # -- numpy and pandas: metadata plus the first items, converted to Python values
    def numpy_(self, v: Any, level: int) -> None:
        np = sys.modules["numpy"]
        if isinstance(v, np.ndarray):
            self.put(f"ndarray(shape={tuple(v.shape)}, dtype={_dtype_text(v.dtype)}")
            if v.size:
                self.put(", ")
                head = v.flat[: self.items + 1]  # copies only these items
                self.put("[")
                self.sequence(iter(_np_items(head)), v.size, level)
                self.put("]")
            self.put(")")
        elif isinstance(v, np.dtype):
            self.put(f"dtype({_dtype_text(v)})")
        elif isinstance(v, np.generic):
            if v.dtype.kind in "USVO":
                self.put(f"np.{type(v).__name__}(")
                self.value(v.item() if v.dtype.kind != "V" else v.tolist(), level + 1)
                self.put(")")
            else:
                self.put(repr(v))
        else:
            self.put(f"<{type_name(v)} object>")

    def pandas_(self, v: Any, level: int) -> None:
        pd = sys.modules["pandas"]
        n = self.items
        if isinstance(v, pd.DataFrame):
            rows, cols = v.shape
            self.put(f"DataFrame({rows} rows × {cols} columns")
            if cols:
                self.put(", columns={")
                head = v.iloc[: min(rows, 5), : n + 1]
                pairs = [(name, _Col(head.iloc[:, i], rows)) for i, name in enumerate(head.columns)]
                self.mapping(iter(pairs), cols, level)
                self.put("}")
            self.put(")")
        elif isinstance(v, pd.Series):
            self.put("Series(name=")
            self.value(v.name, level + 1)
            self.put(f", len={len(v)}, dtype={_dtype_text(v.dtype)}, index=")
            self.value(v.index, level + 1)
            self.put(", values=")
            self.value(_Col(v.iloc[: n + 1], len(v)), level)
            self.put(")")
        elif isinstance(v, pd.RangeIndex):
            self.put(f"RangeIndex(start={v.start}, stop={v.stop}, step={v.step})")
        elif isinstance(v, pd.Index):
            self.put(f"{type(v).__name__}(len={len(v)}, dtype={_dtype_text(v.dtype)}, [")
            self.sequence(iter(v[: n + 1].tolist()), len(v), level)
            self.put("])")
        elif isinstance(v, pd.Categorical):
            cats = v.categories
            self.put(f"Categorical(len={len(v)}, ordered={v.ordered}, categories=")
            self.value(cats, level + 1)
            self.put(", [")
            self.sequence(iter(v[: n + 1].tolist()), len(v), level)
            self.put("])")
        elif isinstance(v, pd.api.extensions.ExtensionArray):
            self.put(f"{type(v).__name__}(len={len(v)}, dtype={_dtype_text(v.dtype)}, [")
            self.sequence(iter(v[: n + 1].tolist()), len(v), level)
            self.put("])")
        elif isinstance(v, pd.CategoricalDtype):
            cats = v.categories
            self.put(f"CategoricalDtype(categories={0 if cats is None else len(cats)}, ordered={v.ordered})")
        elif isinstance(v, (pd.Timestamp, pd.Timedelta, pd.Period, pd.Interval, pd.api.extensions.ExtensionDtype)) or v is pd.NaT or v is pd.NA or isinstance(v, pd.offsets.BaseOffset):
            self.put(repr(v)[:200])
        else:
            self.put(f"<{type_name(v)} object>")


class _Col:
    """A column head: rendered as its first items and the total length."""

    def __init__(self, series: Any, total: int) -> None:
        self.values = series.tolist()
        self.total = total


def _np_items(head: Any) -> list[Any]:
    if head.dtype.kind == "V":
        return [tuple(x) if isinstance(x, tuple) else x for x in head.tolist()]
    return list(head.tolist())


def _dtype_text(dtype: Any) -> str:
    text = str(dtype)
    return text if len(text) <= 120 else text[:117] + "..."


def bounded_repr(value: Any, *, max_chars: int = DEFAULT_CHARS, max_depth: int = DEFAULT_DEPTH, max_items: int = DEFAULT_ITEMS) -> tuple[str, bool]:
    """A repr cut at max_chars, max_depth and max_items per container; (text, truncated)."""
    w = _Writer(max(max_chars, 1), max(max_depth, 1), max(max_items, 1))
    try:
        w.value(value, 0)
    except _Full:
        pass
    except (RecursionError, MemoryError):
        w.cut = True
    except Exception as exc:  # a library's own accessor failed on odd data: say so, keep the rest
        w.cut = True
        w.parts.append(f"<render failed: {type(exc).__name__}>")
    text = "".join(w.parts)
    if w.clipped:
        text = text[: max(max_chars - 1, 0)] + "…"
    return text, w.cut


# --------------------------------------------------------------------------- summary
def summary(value: Any, *, max_keys: int = 50) -> dict[str, Any]:
    """Type-aware facts about a value (type, len, shape, dtype, columns, keys), bounded."""
    out: dict[str, Any] = {"python_type": type_name(value)}
    np, pd = _lib(value, "numpy"), _lib(value, "pandas")
    if np is not None and isinstance(value, np.ndarray):
        out.update(shape=list(value.shape), dtype=_dtype_text(value.dtype), nbytes=int(value.nbytes))
    elif pd is not None and isinstance(value, pd.DataFrame):
        out.update(shape=list(value.shape))
        cols = value.columns[:max_keys]
        out["columns"] = [bounded_repr(c, max_chars=80)[0] if not isinstance(c, str) else c[:80] for c in cols]
        out["dtypes"] = {out["columns"][i]: _dtype_text(value.dtypes.iloc[i]) for i in range(len(cols))}
    elif pd is not None and isinstance(value, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        out.update(len=len(value), dtype=_dtype_text(value.dtype))
    elif isinstance(value, dict):
        keys = list(_first(dict.__iter__(value), max_keys))
        out.update(len=dict.__len__(value), keys=[bounded_repr(k, max_chars=80)[0] for k in keys])
    elif isinstance(value, (list, tuple, deque)):
        base: Any = list if isinstance(value, list) else tuple if isinstance(value, tuple) else deque
        out["len"] = base.__len__(value)
        out["item_types"] = sorted({type_name(x) for x in _first(base.__iter__(value), 100)})
    elif isinstance(value, (set, frozenset)):
        kind: Any = set if isinstance(value, set) else frozenset
        out["len"] = kind.__len__(value)
    elif isinstance(value, (str, bytes, bytearray)):
        out["len"] = len(value)
    return out


def _first(it: Any, n: int) -> Any:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


# --------------------------------------------------------------------------- small JSON form
class SmallValue(TypedDict, total=False):
    """A value as JSON when small and plain; otherwise only its type and size."""

    value: Any
    type: str
    len: int
    repr: str
    kind: Literal["json", "summary"]


def small_json(value: Any, *, max_chars: int = 200, max_items: int = 20) -> SmallValue:
    """Numbers, short strings and short plain lists/dicts as JSON; else None plus type and size."""
    budget = [max_chars]
    try:
        out = _json(value, budget, max_items, 0)
        return {"kind": "json", "value": out, "type": type_name(value)}
    except _Full:
        pass
    info: SmallValue = {"kind": "summary", "value": None, "type": type_name(value)}
    facts = summary(value)
    if "len" in facts:
        info["len"] = facts["len"]
    elif "shape" in facts:
        info["len"] = facts["shape"][0] if facts["shape"] else 1
    if isinstance(value, float) and not math.isfinite(value):
        info["repr"] = repr(value)
    return info


def _json(v: Any, budget: list[int], items: int, level: int) -> Any:
    np = _lib(v, "numpy")
    if np is not None and isinstance(v, np.generic) and v.dtype.kind in "biuf":
        v = v.item()
    t = type(v)
    if v is None or t is bool:
        budget[0] -= 5
        out: Any = v
    elif t is int:
        if v.bit_length() > 53:
            raise _Full  # JSON readers lose precision beyond 2**53
        budget[0] -= len(str(v))
        out = v
    elif t is float:
        if not math.isfinite(v):
            raise _Full
        budget[0] -= len(repr(v))
        out = v
    elif t is str:
        budget[0] -= len(v) + 2
        out = v
    elif t in (list, tuple) and level < 3 and len(v) <= items:
        budget[0] -= 2
        out = [_json(x, budget, items, level + 1) for x in v]
    elif t is dict and level < 3 and len(v) <= items and all(type(k) is str for k in v):
        budget[0] -= 2
        out = {k: _json(x, budget, items, level + 1) for k, x in v.items() if _spend(budget, len(k) + 3)}
    else:
        raise _Full
    if budget[0] < 0:
        raise _Full
    return out


def _spend(budget: list[int], n: int) -> bool:
    budget[0] -= n
    if budget[0] < 0:
        raise _Full
    return True
