"""Restricted unpickling: an allow-list of globals, checked arguments, bounded work.

Every pickle this package reads (artifact previews, values across runs, task
exceptions, foreach frames) goes through `loads`. Plain `pickle.load` runs any
callable the pickle names; here a pickle may only name globals on the
allow-list, and each allowed global says what the pickle may do with it:

- *value*: appear as a value (a type in a dict, a defaultdict factory, ...);
- *call*: be called by REDUCE / INST / OBJ, with arguments a check accepts;
- *new*: be instantiated by NEWOBJ (``cls.__new__(cls, *args)``) or copyreg;
- *build*: its instances may take BUILD state a check accepts.

Why the pure-Python ``pickle._Unpickler`` and not the C one: the C unpickler
lets a subclass override only ``find_class``, so an allowed callable would run
with whatever arguments the pickle builds (``bytearray(10**12)``, a numpy shape
of 10**12, a tuple whose hash takes 10**25 steps) before any check could see
them. The Python unpickler dispatches each opcode through a table we extend,
so every call, instantiation, BUILD and hash is checked first. It is ~5x slower
(about 0.8 s per million opcodes), which the callers' byte caps bound.

Work is bounded besides: hashing (dict keys, set items, object-array elements)
is charged against a budget proportional to the input, tuples nested deeper
than `MAX_TUPLE_DEPTH` are refused (their hash and repr recurse in C), sizes an
allowed constructor is asked to allocate are capped, and pandas objects are
checked for internal consistency after loading (their Cython code trusts it).
"""

from __future__ import annotations

import _compat_pickle
import datetime
import importlib
import io
import pickle
import re
import struct
import sys
import zoneinfo
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._errors import AgentError, BackendError, NotAllowed, TooLarge

MAX_TUPLE_DEPTH = 200  # tuple hash/compare recurse on the C stack
_MAX_TEXT_DIGITS = 4300  # protocol-0 INT/LONG text (CPython's own int() limit)
_OPT_IN = "pass unsafe=True with METAFLOW_AGENT_UNSAFE_UNPICKLE=1 to load it in a sandboxed process"


class _Refuse(Exception):
    """Internal: a check refused an argument; becomes NotAllowed."""


Check = Callable[["_Ctx", tuple], None]


@dataclass(frozen=True)
class Allowed:
    """One allow-list entry: a global a pickle may name, and what it may do with it."""

    module: str  # as written in pickles ("*" in an extra: any module)
    name: str
    load: Callable[[], Any] | None = None  # the object; default: import module, walk name
    call: Check | None = None  # REDUCE / INST / OBJ with checked args
    new: Check | None = None  # NEWOBJ / copyreg.__newobj__ / _reconstructor
    build: Check | None = None  # BUILD on its instances
    impl: Callable[..., Any] | None = None  # called instead of the object (checked wrappers)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class _Ctx:
    """Caps and running totals of one load."""

    size: int
    max_elements: int = 0
    hash_budget: int = 0
    hashed: int = 0
    tuples: dict[int, tuple[tuple, int, int]] = field(default_factory=dict)  # id → (t, weight, depth)
    made: list[Any] = field(default_factory=list)  # pandas objects to verify after the load

    def __post_init__(self) -> None:
        self.max_elements = max(1 << 20, 16 * self.size)
        self.hash_budget = max(1 << 23, 8 * self.size)

    def tuple_cost(self, t: tuple) -> tuple[int, int]:
        """(elements a hash visits, nesting depth) of a tuple, memoised by identity."""
        hit = self.tuples.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1], hit[2]
        for c in t:
            if isinstance(c, tuple):
                break
        else:
            return len(t), 1  # flat: nothing to remember
        cap = self.hash_budget + 1
        todo: list[tuple[tuple, bool]] = [(t, False)]
        while todo:  # iterative post-order: deep tuples must not recurse here either
            node, done = todo.pop()
            if self._known(node):
                continue
            kids = [c for c in node if isinstance(c, tuple) and not self._known(c)]
            if not done and kids:
                if len(todo) > MAX_TUPLE_DEPTH * 4 + len(node):
                    raise TooLarge(f"a tuple is nested deeper than {MAX_TUPLE_DEPTH} levels", hint="such values cannot be read safely")
                todo.append((node, True))
                todo.extend((c, False) for c in kids)
                continue
            weight, depth = len(node), 1
            for c in node:
                if isinstance(c, tuple):
                    w, d = self.tuples[id(c)][1:]
                    weight, depth = min(cap, weight + w), max(depth, d + 1)
            if depth > MAX_TUPLE_DEPTH:
                raise TooLarge(f"a tuple is nested deeper than {MAX_TUPLE_DEPTH} levels", hint="such values cannot be read safely")
            self.tuples[id(node)] = (node, weight, depth)
        return self.tuples[id(t)][1:]

    def _known(self, t: tuple) -> bool:
        hit = self.tuples.get(id(t))
        return hit is not None and hit[0] is t

    def charge(self, items: Iterable[Any]) -> None:
        """Count the hashing these items cost; refuse past the budget."""
        for item in items:
            self.hashed += self.tuple_cost(item)[0] if isinstance(item, tuple) else 1
            if self.hashed > self.hash_budget:
                raise TooLarge(
                    f"hashing this pickle's keys would take more than {self.hash_budget} steps",
                    hint="the value shares one large tuple among many keys; it cannot be read safely",
                )


# --------------------------------------------------------------------------- checks
def _fail(msg: str) -> None:
    raise _Refuse(msg)


def _ints(value: Any, what: str, *, low: int = 0, high: int = 1 << 62) -> tuple[int, ...]:
    seq = value if isinstance(value, tuple) else (value,)
    if not all(type(v) is int and low <= v <= high for v in seq):
        _fail(f"{what} must be integers in [{low}, {high}]")
    return seq


def _product(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _no_args(ctx: _Ctx, args: tuple) -> None:
    if args:
        _fail("takes no arguments")


def _scalars(ctx: _Ctx, args: tuple, *, text: int = 256) -> None:
    """Only small plain scalars (and None)."""
    for a in args:
        if a is None or type(a) in (bool, float, complex):
            continue
        if type(a) is int and abs(a) < 1 << 64:
            continue
        if type(a) in (str, bytes) and len(a) <= text:
            continue
        _fail(f"argument of type {type(a).__name__} is not a small scalar")


def _str_state(ctx: _Ctx, state: Any) -> None:
    """A dict of plain attribute names: no dunders, so BUILD cannot swap a class or its methods."""
    if not isinstance(state, dict):
        _fail(f"state must be a dict, not {type(state).__name__}")
    for k in state:
        if type(k) is not str or k.startswith("__"):
            _fail(f"state key {k!r} is not a plain attribute name")


def _iterable_arg(ctx: _Ctx, args: tuple, *, hashed: bool, extra: int = 0) -> None:
    if len(args) > 1 + extra:
        _fail("too many arguments")
    if args and not isinstance(args[0], (list, tuple, set, frozenset)):
        _fail(f"expects a list or tuple, not {type(args[0]).__name__}")
    if args and hashed:
        ctx.charge(args[0])


def _set_call(ctx: _Ctx, args: tuple) -> None:
    _iterable_arg(ctx, args, hashed=True)


def _bytes_call(ctx: _Ctx, args: tuple) -> None:
    # bytearray(b"..."), bytearray("...", "latin-1"), bytes(): never a size
    if len(args) > 2 or (args and type(args[0]) not in (bytes, bytearray, str)):
        _fail("expects bytes or text, not a size")
    if len(args) == 2 and args[1] not in ("latin-1", "latin1", "utf-8", "utf8", "ascii"):
        _fail("unsupported encoding")
    if len(args) == 1 and type(args[0]) is str:
        _fail("text needs an encoding")


def _codecs_encode(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
        _fail("only _codecs.encode(text, 'latin1') as protocol 2 writes bytes")


def _complex_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) > 2 or not all(type(a) in (int, float) for a in args):
        _fail("expects two numbers")


def _slice_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) > 3 or not all(a is None or type(a) is int for a in args):
        _fail("expects integers or None")


def _range_call(ctx: _Ctx, args: tuple) -> None:
    if not 1 <= len(args) <= 3 or not all(type(a) is int for a in args) or (len(args) == 3 and args[2] == 0):
        _fail("expects 1-3 integers, step not 0")


def _type_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 1 or args[0] not in (None, Ellipsis, NotImplemented):
        _fail("only type(None), type(...) and type(NotImplemented)")


def _getattr_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 2 or (args[0], args[1]) != (zoneinfo.ZoneInfo, "_unpickle"):
        _fail("getattr is allowed only for ZoneInfo._unpickle")


def _safe_getattr(obj: Any, name: str) -> Any:
    return _zoneinfo_unpickle


_TZ_KEY = re.compile(r"^[A-Za-z0-9_+\-]{1,40}(/[A-Za-z0-9_+\-]{1,40}){0,3}$")


def _zoneinfo_unpickle(key: str, from_cache: int) -> zoneinfo.ZoneInfo:
    """ZoneInfo by key; reads only the system time-zone database."""
    return zoneinfo.ZoneInfo._unpickle(key, from_cache)  # type: ignore[attr-defined]  # private, but how ZoneInfo pickles itself


def _zoneinfo_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 2 or type(args[0]) is not str or not _TZ_KEY.match(args[0]) or type(args[1]) not in (int, bool):
        _fail("expects a time-zone key like 'Europe/Paris'")


def _reconstructor_call(ctx: _Ctx, args: tuple) -> None:
    # copyreg._reconstructor(cls, object, None): object.__new__(cls) for protocols 0-1
    if len(args) != 3 or args[1] is not object or args[2] is not None:
        _fail("only _reconstructor(cls, object, None)")


def _newobj_call(ctx: _Ctx, args: tuple) -> None:
    if not args:
        _fail("needs a class")


def _newobj_ex_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 3 or not isinstance(args[1], tuple) or args[2] != {}:
        _fail("only __newobj_ex__(cls, args, {})")


def _deque_call(ctx: _Ctx, args: tuple) -> None:
    _iterable_arg(ctx, args, hashed=False, extra=1)
    if len(args) == 2 and args[1] is not None:
        _ints(args[1], "maxlen")


_FACTORIES = (list, dict, set, frozenset, tuple, int, float, complex, str, bytes, bool, OrderedDict, Counter, deque)


def _defaultdict_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) > 1 or (args and args[0] is not None and args[0] not in _FACTORIES):
        _fail("the factory must be a plain container or number type")


def _counter_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) > 1 or (args and type(args[0]) is not dict):
        _fail("expects a dict")
    if args:
        ctx.charge(args[0])


def _dict_call(ctx: _Ctx, args: tuple) -> None:
    if args:
        _fail("takes no arguments (items follow as SETITEMS)")


_FRACTION = re.compile(r"^[+-]?\d{1,4300}(/\d{1,4300})?$")


def _fraction_call(ctx: _Ctx, args: tuple) -> None:
    # Fraction("1e999999999") would build a 10**999999999 integer
    if len(args) == 1 and type(args[0]) is str and _FRACTION.match(args[0]):
        return
    if len(args) == 2 and all(type(a) is int for a in args) and args[1] != 0:
        return
    _fail("expects 'n/d' or two integers")


def _decimal_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 1 or type(args[0]) not in (str, int, tuple):
        _fail("expects a string or a decimal tuple")
    if type(args[0]) is tuple:
        _scalars(ctx, args[0][:1] + args[0][2:])
        if len(args[0]) != 3 or type(args[0][1]) is not tuple or not all(type(d) is int for d in args[0][1]):
            _fail("malformed decimal tuple")


def _uuid_build(ctx: _Ctx, state: Any) -> None:
    _str_state(ctx, state)
    if set(state) - {"int", "is_safe"} or type(state.get("int")) is not int or not 0 <= state["int"] < 1 << 128:
        _fail("expects {'int': a 128-bit integer}")


def _path_call(ctx: _Ctx, args: tuple) -> None:
    if not all(type(a) is str for a in args) or sum(len(a) for a in args) > 1 << 16:
        _fail("expects path parts as text")


def _datetime_call(ctx: _Ctx, args: tuple) -> None:
    for a in args:
        if a is None or type(a) in (int, bytes, str, bool):
            continue
        if isinstance(a, datetime.tzinfo) and type(a) in (datetime.timezone, zoneinfo.ZoneInfo):
            continue
        _fail(f"unexpected argument of type {type(a).__name__}")


def _timezone_call(ctx: _Ctx, args: tuple) -> None:
    if not 1 <= len(args) <= 2 or type(args[0]) is not datetime.timedelta or (len(args) == 2 and type(args[1]) is not str):
        _fail("expects a timedelta and a name")


def _exception_wrapper_call(ctx: _Ctx, args: tuple) -> None:
    # MetaflowExceptionWrapper(exc) would call str(exc); pickles pass None
    if args not in ((), (None,)):
        _fail("expects None")


def _exception_wrapper_build(ctx: _Ctx, state: Any) -> None:
    _str_state(ctx, state)
    for v in state.values():
        if v is not None and type(v) is not str:
            _fail("expects text fields")


class MetaflowExceptionWrapper(Exception):
    """Stand-in for Metaflow's exception wrapper (a failed task's `_exception`): its text fields
    (type, exception, stacktrace), read without importing Metaflow (about 0.3 s in a fresh process)."""

    def __init__(self, exc: None = None) -> None:
        super().__init__()

    def __reduce__(self) -> tuple[Any, ...]:
        return MetaflowExceptionWrapper, (None,), self.__dict__

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        self.__dict__ = dict(state or {})

    def __str__(self) -> str:
        trace = self.__dict__.get("stacktrace")
        return str(trace) if trace else f"[no stacktrace]\n{self.__dict__.get('type')}: {self.__dict__.get('exception')}"

    __repr__ = __str__


class ForeachFrame(tuple):
    """Stand-in for Metaflow's foreach frame (a namedtuple in the flow's own module)."""

    _fields = ("step", "var", "num_splits", "index", "value")

    def __new__(cls, *fields: Any) -> ForeachFrame:
        return tuple.__new__(cls, fields)

    def __repr__(self) -> str:
        return "ForeachFrame(" + ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self)) + ")"


def _frame_new(ctx: _Ctx, args: tuple) -> None:
    if len(args) > 8:
        _fail("a foreach frame has at most 8 fields")
    ctx.charge(args)


# --------------------------------------------------------------------------- numpy checks
def _np() -> Any:
    import numpy

    return numpy


_DTYPE_CODE = re.compile(r"^[<>|=]?[A-Za-z]{1,2}\d{0,6}$")


def _dtype_call(ctx: _Ctx, args: tuple) -> None:
    if not 1 <= len(args) <= 3 or type(args[0]) is not str or not _DTYPE_CODE.match(args[0]):
        _fail("expects a dtype code like 'f8'")
    if not all(type(a) in (bool, int) for a in args[1:]):
        _fail("expects flags")


def _dtype_build(ctx: _Ctx, state: Any) -> None:
    np = _np()
    if not isinstance(state, tuple) or not 8 <= len(state) <= 9:
        _fail("expects numpy's dtype state tuple")
    version, endian, sub, names, fields, elsize, align, flags = state[:8]
    if type(version) is not int or type(endian) is not str or len(endian) != 1:
        _fail("malformed dtype state")
    _ints((elsize, align), "dtype sizes", low=-1, high=1 << 31)
    _ints(flags, "dtype flags", low=-(1 << 62))
    if sub is not None:
        if not (isinstance(sub, tuple) and len(sub) == 2 and isinstance(sub[0], np.dtype)):
            _fail("malformed subarray")
        shape = _ints(sub[1], "subarray shape", high=ctx.max_elements)
        if elsize >= 0 and _product(shape) * sub[0].itemsize != elsize:
            _fail("subarray size does not match the item size")
    if names is not None and (not isinstance(names, tuple) or not all(type(n) is str for n in names)):
        _fail("malformed field names")
    if fields is not None:
        if not isinstance(fields, dict) or names is None or set(fields) != set(names):
            _fail("malformed fields")
        for spec in fields.values():
            if not (isinstance(spec, tuple) and 2 <= len(spec) <= 3 and isinstance(spec[0], np.dtype) and type(spec[1]) is int):
                _fail("malformed field")
            if spec[1] < 0 or (elsize >= 0 and spec[1] + spec[0].itemsize > elsize):
                _fail("a field lies outside the item")
    if len(state) == 9 and state[8] is not None and not isinstance(state[8], (dict, tuple)):
        _fail("malformed dtype metadata")


def _array_shape(ctx: _Ctx, shape: Any) -> tuple[int, ...]:
    shape = _ints(shape, "array shape")
    if len(shape) > 32 or _product(shape) > ctx.max_elements:
        raise TooLarge(f"array shape {shape} has more than {ctx.max_elements} elements", hint="such a value cannot be read safely")
    return shape


def _reconstruct_call(ctx: _Ctx, args: tuple) -> None:
    np = _np()
    if len(args) != 3 or args[0] is not np.ndarray or type(args[2]) not in (bytes, str) or len(args[2]) > 4:
        _fail("expects (ndarray, shape, dtype code)")
    shape = _array_shape(ctx, args[1])
    try:
        item = np.dtype(args[2] if type(args[2]) is str else args[2].decode("ascii")).itemsize
    except (TypeError, ValueError, UnicodeDecodeError):
        _fail("bad dtype code")
    if _product(shape) * item > 8 * ctx.max_elements:
        raise TooLarge("array allocation over the cap", hint="such a value cannot be read safely")


def _ndarray_build(ctx: _Ctx, state: Any) -> None:
    np = _np()
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        _fail("expects numpy's array state tuple")
    shape, dtype, _fortran, data = state[-4:]
    shape = _array_shape(ctx, shape)
    if not isinstance(dtype, np.dtype) or type(_fortran) not in (bool, int):
        _fail("malformed array state")
    n = _product(shape)
    if dtype.hasobject:
        if type(data) is not list or len(data) != n:
            _fail("an object array needs a list of exactly its size")
        ctx.charge(x for x in data if isinstance(x, tuple))
    elif type(data) not in (bytes, bytearray) or len(data) != n * dtype.itemsize:
        _fail("array data does not match its shape and dtype")


def _scalar_call(ctx: _Ctx, args: tuple) -> None:
    np = _np()
    if not 1 <= len(args) <= 2 or not isinstance(args[0], np.dtype):
        _fail("expects (dtype, data)")
    if len(args) == 2 and not args[0].hasobject and (type(args[1]) is not bytes or len(args[1]) != args[0].itemsize):
        _fail("scalar data does not match its dtype")


def _frombuffer_call(ctx: _Ctx, args: tuple) -> None:
    np = _np()
    if len(args) != 4 or not isinstance(args[1], np.dtype) or args[1].hasobject or args[3] not in ("C", "F", "A", "K"):
        _fail("expects (buffer, dtype, shape, order)")
    if not isinstance(args[0], (bytes, bytearray, pickle.PickleBuffer)):
        _fail("expects an in-band buffer")
    shape = _array_shape(ctx, args[2])
    if memoryview(args[0]).nbytes != _product(shape) * args[1].itemsize:
        _fail("buffer does not match its shape and dtype")


# --------------------------------------------------------------------------- pandas checks
def _pd() -> Any:
    import pandas

    return pandas


_INDEX_KEYS = {"data", "name", "names", "levels", "codes", "sortorder", "start", "stop", "step", "dtype", "freq", "closed", "left", "right", "tz", "copy", "labels"}


def _index_call(ctx: _Ctx, args: tuple) -> None:
    pd = _pd()
    if len(args) != 2 or not (isinstance(args[0], type) and issubclass(args[0], pd.Index)) or type(args[1]) is not dict:
        _fail("expects (Index class, dict)")
    if args[0] not in _PD_INDEXES():
        _fail(f"{args[0].__name__} is not an allowed index class")
    d = args[1]
    if not set(d) <= _INDEX_KEYS:
        _fail(f"unexpected index fields {sorted(set(d) - _INDEX_KEYS)}")
    if args[0] is pd.RangeIndex or "start" in d:
        bounds = tuple(d.get(k, v) for k, v in (("start", 0), ("stop", 0), ("step", 1)))
        _ints(bounds, "range bounds", low=-(1 << 62))
        if bounds[2] == 0 or len(range(*bounds)) > ctx.max_elements:
            raise TooLarge("a RangeIndex is longer than the cap", hint="such a value cannot be read safely")
    data = d.get("data")
    if data is not None and not isinstance(data, (_np().ndarray, pd.api.extensions.ExtensionArray, pd.Index)):
        _fail(f"index data of type {type(data).__name__}")
    for k in ("levels", "codes", "names"):
        if k in d and not isinstance(d[k], (list, tuple)):
            _fail(f"index {k} must be a list")
    ctx.charge([d.get("name")])


def _block_call(ctx: _Ctx, args: tuple) -> None:
    pd, np = _pd(), _np()
    if len(args) != 3 or args[2] not in (1, 2) or type(args[2]) is not int:
        _fail("expects (values, placement, ndim)")
    if not isinstance(args[0], (np.ndarray, pd.api.extensions.ExtensionArray)):
        _fail("block values must be an array")
    _placement(ctx, args[1])


def _placement(ctx: _Ctx, loc: Any) -> None:
    np = _np()
    if isinstance(loc, slice):
        _ints(tuple(x for x in (loc.start, loc.stop, loc.step) if x is not None), "slice bounds", low=-(1 << 62))
        if loc.step == 0 or len(range(*loc.indices(1 << 62))) > ctx.max_elements:
            raise TooLarge("a block placement is longer than the cap", hint="such a value cannot be read safely")
    elif not (isinstance(loc, np.ndarray) and loc.dtype.kind in "iu" and loc.ndim == 1):
        _fail("a block placement must be a slice or integer array")


def _locs(ctx: _Ctx, loc: Any) -> Any:
    """A block placement as an int array (after `_placement` bounded it)."""
    np = _np()
    _placement(ctx, loc)
    if isinstance(loc, slice):
        start, stop, step = loc.start or 0, loc.stop, loc.step or 1
        return np.arange(start, stop, step, dtype=np.int64)
    return loc


def _check_blocks(ctx: _Ctx, blocks: list[tuple[Any, Any]], axes: list[Any]) -> None:
    """Blocks must tile the axes exactly: pandas' Cython indexing trusts it."""
    np = _np()
    if len(axes) == 1:
        if len(blocks) != 1 or len(blocks[0][0]) != len(axes[0]):
            _fail("series values do not match the index")
        return
    n_items, n_rows = len(axes[0]), len(axes[1])
    seen = 0
    for values, loc in blocks:
        locs = _locs(ctx, loc)
        if len(locs) and (locs.min() < 0 or locs.max() >= n_items):
            _fail("a block is placed outside the columns")
        shape: tuple[int, ...] = tuple(getattr(values, "shape", ()))
        if len(shape) == 2:
            if tuple(shape) != (len(locs), n_rows):
                _fail("a block's shape does not match the axes")
        elif len(shape) != 1 or len(locs) != 1 or shape[0] != n_rows:
            _fail("a block's shape does not match the axes")
        seen += len(locs)
    if seen != n_items:
        _fail("blocks do not cover the columns exactly")
    if blocks:
        allocs = np.concatenate([_locs(ctx, loc) for _, loc in blocks])
        if len(np.unique(allocs)) != n_items:
            _fail("blocks overlap")


def _manager_call(ctx: _Ctx, args: tuple) -> None:
    pd = _pd()
    if len(args) != 2 or not isinstance(args[0], (tuple, list)) or not isinstance(args[1], list):
        _fail("expects (blocks, axes)")
    if not all(isinstance(ax, pd.Index) for ax in args[1]) or not 1 <= len(args[1]) <= 2:
        _fail("axes must be 1 or 2 indexes")
    from pandas.core.internals.blocks import Block

    if not all(isinstance(b, Block) for b in args[0]):
        _fail("blocks must be pandas blocks")
    _check_blocks(ctx, [(b.values, b.mgr_locs.as_array) for b in args[0]], args[1])


def _manager_build(ctx: _Ctx, state: Any) -> None:
    pd = _pd()
    if not (isinstance(state, tuple) and len(state) >= 4 and isinstance(state[3], dict) and isinstance(state[3].get("0.14.1"), dict)):
        _fail("expects a pandas >= 0.14.1 manager state")
    inner = state[3]["0.14.1"]
    axes, blocks = inner.get("axes"), inner.get("blocks")
    if not isinstance(axes, list) or not 1 <= len(axes) <= 2 or not all(isinstance(a, pd.Index) for a in axes):
        _fail("manager axes must be 1 or 2 indexes")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) and set(b) == {"values", "mgr_locs"} for b in blocks):
        _fail("manager blocks must be {values, mgr_locs} dicts")
    for b in blocks:
        if not isinstance(b["values"], (_np().ndarray, pd.api.extensions.ExtensionArray, pd.Index)):
            _fail("block values must be an array")
    _check_blocks(ctx, [(b["values"], b["mgr_locs"]) for b in blocks], axes)


_FRAME_KEYS = {"_mgr", "_typ", "_metadata", "attrs", "_attrs", "_flags", "_name", "name", "_item_cache", "_subtyp"}


def _frame_build(ctx: _Ctx, state: Any) -> None:
    from pandas.core.internals.managers import BaseBlockManager

    _str_state(ctx, state)
    if not set(state) <= _FRAME_KEYS or not isinstance(state.get("_mgr"), BaseBlockManager):
        _fail("expects a DataFrame/Series state with a block manager")
    if state.get("_typ") not in ("dataframe", "series"):
        _fail("unexpected _typ")
    flags = state.get("_flags", {})
    if not isinstance(flags, dict) or set(flags) - {"allows_duplicate_labels"}:
        _fail("unexpected flags")
    meta = state.get("_metadata", [])
    if not isinstance(meta, list) or not all(type(m) is str and not m.startswith("__") for m in meta):
        _fail("unexpected _metadata")
    for k in ("attrs", "_attrs"):
        if k in state and not isinstance(state[k], dict):
            _fail("attrs must be a dict")
    ctx.charge([state.get("_name"), state.get("name")])


def _backed_call(ctx: _Ctx, args: tuple) -> None:
    if len(args) != 3 or args[0] not in _PD_BACKED() or type(args[1]) is not int or args[2] is not None:
        _fail("expects (array class, checksum, None)")


def _backed_build(ctx: _Ctx, state: Any) -> None:
    pd, np = _pd(), _np()
    if isinstance(state, dict):
        _str_state(ctx, state)
        return
    if not (isinstance(state, tuple) and 2 <= len(state) <= 3 and isinstance(state[1], np.ndarray)):
        _fail("expects (dtype, ndarray[, attributes])")
    if not isinstance(state[0], (np.dtype, pd.api.extensions.ExtensionDtype)):
        _fail("expects a dtype")
    if len(state) == 3:
        _str_state(ctx, state[2])


def _masked_build(ctx: _Ctx, state: Any) -> None:
    np = _np()
    _str_state(ctx, state)
    data, mask = state.get("_data"), state.get("_mask")
    if not (isinstance(data, np.ndarray) and isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == data.shape):
        _fail("expects _data and a boolean _mask of the same shape")


def _categorical_dtype_build(ctx: _Ctx, state: Any) -> None:
    _str_state(ctx, state)
    cats = state.get("categories")
    if cats is not None and not isinstance(cats, _pd().Index):
        _fail("categories must be an Index")


def _tz_build(ctx: _Ctx, state: Any) -> None:
    _str_state(ctx, state)
    tz = state.get("tz")
    if tz is not None and type(tz) not in (datetime.timezone, zoneinfo.ZoneInfo):
        _fail("unsupported time zone type")


def _timestamp_call(ctx: _Ctx, args: tuple) -> None:
    from pandas._libs.tslibs.offsets import BaseOffset

    for a in args:
        if a is None or type(a) in (int, bool, str) or type(a) in (datetime.timezone, zoneinfo.ZoneInfo) or isinstance(a, BaseOffset):
            continue
        _fail(f"unexpected argument of type {type(a).__name__}")


def _offset_call(ctx: _Ctx, args: tuple) -> None:
    for a in args:
        if a is None or type(a) in (int, bool, datetime.timedelta) or (type(a) is str and len(a) <= 64):
            continue
        _fail(f"unexpected offset argument of type {type(a).__name__}")


def _string_dtype_call(ctx: _Ctx, args: tuple) -> None:
    if not args or args[0] != "python":
        _fail("only the python string storage is allowed (pyarrow is not)")
    if len(args) == 2 and not (args[1] is _pd().NA or (type(args[1]) is float and args[1] != args[1])):
        _fail("unexpected na_value")


def _interval_call(ctx: _Ctx, args: tuple) -> None:
    _scalars(ctx, args[:2], text=64)
    if len(args) == 3 and args[2] not in ("left", "right", "both", "neither"):
        _fail("unexpected closed side")


# The pandas classes some checks accept as arguments (resolved once pandas is loaded).
def _PD_INDEXES() -> frozenset[type]:
    pd = _pd()
    return frozenset(
        [pd.Index, pd.RangeIndex, pd.MultiIndex, pd.CategoricalIndex, pd.DatetimeIndex, pd.TimedeltaIndex, pd.PeriodIndex, pd.IntervalIndex]
    )


def _PD_BACKED() -> frozenset[type]:
    pd = _pd()
    return frozenset([pd.Categorical, pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray, pd.arrays.PeriodArray, pd.arrays.StringArray])


# --------------------------------------------------------------------------- the allow-list
def _entries_std() -> list[Allowed]:
    b = "builtins"
    out = [
        Allowed(b, n)
        for n in ("int", "float", "bool", "str", "list", "tuple", "dict", "object", "Ellipsis", "NotImplemented", "bytes")
    ]
    out[-1] = Allowed(b, "bytes", call=_bytes_call)
    out += [
        Allowed(b, "bytearray", call=_bytes_call),
        Allowed(b, "set", call=_set_call),
        Allowed(b, "frozenset", call=_set_call),
        Allowed(b, "complex", call=_complex_call),
        Allowed(b, "slice", call=_slice_call),
        Allowed(b, "range", call=_range_call),
        Allowed(b, "type", call=_type_call),
        Allowed(b, "getattr", call=_getattr_call, impl=_safe_getattr),
        Allowed("_codecs", "encode", call=_codecs_encode),
        Allowed("copyreg", "_reconstructor", call=_reconstructor_call),
        Allowed("copyreg", "__newobj__", call=_newobj_call),
        Allowed("copyreg", "__newobj_ex__", call=_newobj_ex_call),
        Allowed("collections", "OrderedDict", call=_dict_call),
        Allowed("collections", "Counter", call=_counter_call),
        Allowed("collections", "defaultdict", call=_defaultdict_call),
        Allowed("collections", "deque", call=_deque_call),
        Allowed("datetime", "datetime", call=_datetime_call),
        Allowed("datetime", "date", call=_datetime_call),
        Allowed("datetime", "time", call=_datetime_call),
        Allowed("datetime", "timedelta", call=_datetime_call),
        Allowed("datetime", "timezone", call=_timezone_call),
        Allowed("decimal", "Decimal", call=_decimal_call),
        Allowed("fractions", "Fraction", call=_fraction_call),
        Allowed("uuid", "UUID", new=_no_args, build=_uuid_build),
        Allowed("zoneinfo", "ZoneInfo"),
        Allowed("zoneinfo", "ZoneInfo._unpickle", load=lambda: _zoneinfo_unpickle, call=_zoneinfo_call),
        Allowed("metaflow_agent._unpickle", "_zoneinfo_unpickle", load=lambda: _zoneinfo_unpickle, call=_zoneinfo_call),
        Allowed("metaflow.exception", "MetaflowExceptionWrapper", load=lambda: MetaflowExceptionWrapper, call=_exception_wrapper_call,
                build=_exception_wrapper_build),
        Allowed("*", "ForeachFrame", load=lambda: ForeachFrame, new=_frame_new, call=_frame_new),
    ]
    out += [Allowed("pathlib", n, call=_path_call) for n in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")]
    return out


def _entries_numpy() -> list[Allowed]:
    np = _np()
    core = "numpy._core" if "numpy._core.multiarray" in sys.modules or _has("numpy._core.multiarray") else "numpy.core"
    out = [
        Allowed("numpy", "ndarray", build=_ndarray_build),
        Allowed("numpy", "dtype", call=_dtype_call, build=_dtype_build),
        Allowed(core + ".multiarray", "_reconstruct", call=_reconstruct_call),
        Allowed(core + ".multiarray", "scalar", call=_scalar_call),
        Allowed(core + ".numeric", "_frombuffer", call=_frombuffer_call),
    ]
    # numpy scalar types and dtype classes, as values only (np.float64 in a dict)
    kinds = {t for t in np.sctypeDict.values() if isinstance(t, type)}
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:
        kinds |= {t for t in vars(dtypes_mod).values() if isinstance(t, type) and issubclass(t, np.dtype)}
    out += [Allowed(t.__module__, t.__qualname__, load=_const(t)) for t in kinds]
    return out


def _entries_pandas() -> list[Allowed]:
    pd = _pd()
    from pandas._libs.tslibs import offsets

    def at(path: str) -> Callable[[], Any]:
        mod, _, name = path.rpartition(".")
        return lambda: getattr(importlib.import_module(mod), name)

    out = [
        Allowed("pandas", "DataFrame", new=_no_args, build=_frame_build),
        Allowed("pandas", "Series", new=_no_args, build=_frame_build),
        Allowed("pandas.core.internals.managers", "BlockManager", call=_manager_call, new=_no_args, build=_manager_build),
        Allowed("pandas.core.internals.managers", "SingleBlockManager", new=_no_args, build=_manager_build),
        Allowed("pandas._libs.internals", "_unpickle_block", call=_block_call),
        Allowed("pandas.core.indexes.base", "_new_Index", call=_index_call),
        Allowed("pandas.core.indexes.datetimes", "_new_DatetimeIndex", call=_index_call),
        Allowed("pandas.core.indexes.timedeltas", "_new_TimedeltaIndex", call=_index_call),
        Allowed("pandas.core.indexes.interval", "_new_IntervalIndex", call=_index_call),
        Allowed("pandas.core.indexes.period", "_new_PeriodIndex", call=_index_call),
        Allowed("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked", call=_backed_call),
        Allowed("pandas._libs.tslibs.timestamps", "_unpickle_timestamp", call=_timestamp_call),
        Allowed("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle", call=_timestamp_call),
        Allowed("pandas._libs.tslibs.nattype", "_nat_unpickle", call=_any_args_none),
        Allowed("pandas", "NA"),
        Allowed("pandas", "NaT"),
        Allowed("pandas", "Timestamp"),
        Allowed("pandas", "Timedelta"),
        Allowed("pandas", "Interval", call=_interval_call),
        Allowed("pandas", "Period", call=_timestamp_call),
        Allowed("pandas", "PeriodDtype", call=_offset_call),
        Allowed("pandas", "StringDtype", call=_string_dtype_call),
        Allowed("pandas", "CategoricalDtype", new=_no_args, build=_categorical_dtype_build),
        Allowed("pandas", "DatetimeTZDtype", new=_no_args, build=_tz_build),
        Allowed("pandas", "IntervalDtype", new=_no_args, build=_str_state),
    ]
    for name in _PD_INDEX_NAMES:
        out.append(Allowed("pandas", name))
    for cls in _PD_BACKED():
        out.append(Allowed(cls.__module__, cls.__qualname__, load=_const(cls), build=_backed_build))
    for name in ("IntegerArray", "FloatingArray", "BooleanArray"):
        out.append(Allowed("pandas.arrays", name, new=_no_args, build=_masked_build))
    for name in ("Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype", "BooleanDtype"):
        out.append(Allowed("pandas", name, new=_no_args, build=_str_state))
    simple_offsets = {
        "Day", "Hour", "Minute", "Second", "Milli", "Micro", "Nano", "MonthEnd", "MonthBegin", "BusinessMonthEnd", "BusinessMonthBegin",
        "YearEnd", "YearBegin", "BYearEnd", "BYearBegin", "QuarterEnd", "QuarterBegin", "BQuarterEnd", "BQuarterBegin",
        "SemiMonthEnd", "SemiMonthBegin", "Week", "WeekOfMonth", "LastWeekOfMonth", "BusinessDay", "Easter",
    }
    out += [Allowed("pandas._libs.tslibs.offsets", n, call=_offset_call) for n in sorted(simple_offsets) if hasattr(offsets, n)]
    del pd, at
    return out


def _any_args_none(ctx: _Ctx, args: tuple) -> None:
    if not all(a is None for a in args):
        _fail("expects None")


_PD_INDEX_NAMES = ("Index", "RangeIndex", "MultiIndex", "CategoricalIndex", "DatetimeIndex", "TimedeltaIndex", "PeriodIndex", "IntervalIndex")


def _const(obj: Any) -> Callable[[], Any]:
    """A loader for an object already in hand."""
    return lambda: obj


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@dataclass
class _Family:
    """The resolved entries of one library: by (module, name) as written and by identity."""

    by_name: dict[tuple[str, str], tuple[Allowed, Any]]
    by_id: dict[int, tuple[Allowed, Any]]


_FAMILY_ENTRIES: dict[str, Callable[[], list[Allowed]]] = {"std": _entries_std, "numpy": _entries_numpy, "pandas": _entries_pandas}
_families: dict[str, _Family | None] = {}


def _resolve(entry: Allowed) -> Any:
    if entry.load is not None:
        return entry.load()
    obj: Any = importlib.import_module(entry.module)
    for part in entry.name.split("."):
        obj = getattr(obj, part)
    return obj


def _family(name: str) -> _Family | None:
    """Resolve a library's entries once (None when the library is not installed)."""
    if name in _families:
        return _families[name]
    try:
        entries = _FAMILY_ENTRIES[name]()
    except ImportError:
        _families[name] = None
        return None
    fam = _Family({}, {})
    for entry in entries:
        try:
            obj = _resolve(entry)
        except (ImportError, AttributeError):
            continue  # not in this version of the library
        fam.by_name[(entry.module, entry.name)] = (entry, obj)
        fam.by_id.setdefault(id(obj), (entry, obj))
    _families[name] = fam
    return fam


_MODULE_ALIASES = {"pathlib._local": "pathlib"}  # Python 3.13 moved the concrete path classes


def _canonical(module: str, name: str) -> tuple[str, str]:
    """Python 2, Python 3.13 and numpy 1.x/2.x spellings of the same global."""
    module = _MODULE_ALIASES.get(module, module)
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return module, name


def _module_spellings(module: str) -> list[str]:
    if module.startswith("numpy.core"):
        return [module, "numpy._core" + module[len("numpy.core"):]]
    if module.startswith("numpy._core"):
        return [module, "numpy.core" + module[len("numpy._core"):]]
    return [module]


def _dict_attr(obj: Any, dotted: str) -> Any:
    """Walk a dotted name through __dict__ only (no module __getattr__, no lazy imports)."""
    for part in dotted.split("."):
        space = getattr(obj, "__dict__", None)
        if not isinstance(space, (dict, type(type.__dict__))) or part not in space:
            return None
        obj = space[part]
    return obj


def lookup(module: str, name: str, extra: Iterable[Allowed] = ()) -> tuple[Allowed, Any]:
    """The allow-list entry and object for a global, or NotAllowed naming it."""
    if type(module) is not str or type(name) is not str:
        raise NotAllowed("a pickle named a global with a non-text name", hint="the data is malformed or hostile")
    module, name = _canonical(module, name)
    for entry in extra:
        if entry.name == name and entry.module in (module, "*"):
            return entry, _resolve(entry)
    std = _family("std")
    assert std is not None
    hit = std.by_name.get((module, name)) or std.by_name.get(("*", name))
    if hit is not None:
        return hit
    top = module.partition(".")[0]
    fam = _family(top) if top in ("numpy", "pandas") else None
    if fam is not None and top == "pandas":
        _family("numpy")
    if fam is not None:
        for spelling in _module_spellings(module):
            hit = fam.by_name.get((spelling, name))
            if hit is not None:
                return hit
            mod = sys.modules.get(spelling)
            if mod is not None:
                obj = _dict_attr(mod, name)
                if obj is not None and id(obj) in fam.by_id and fam.by_id[id(obj)][1] is obj:
                    return fam.by_id[id(obj)]
    raise NotAllowed(
        f"the value needs {module}.{name}, which is not on the safe-unpickling allow-list",
        hint=f"only plain Python, numpy and pandas values are read by default; {_OPT_IN}",
        name=f"{module}.{name}",
    )


# --------------------------------------------------------------------------- the unpickler
_DICT_TYPES = (dict, OrderedDict, defaultdict, Counter)


_PyUnpickler: Any = pickle._Unpickler  # the pure-Python one (see the module docstring)


class SafeUnpickler(_PyUnpickler):
    """Unpickler that names only allowed globals and checks every call, BUILD and hash."""

    dispatch = dict(_PyUnpickler.dispatch)

    def __init__(self, data: bytes, *, allow_extra: Iterable[Allowed] = ()) -> None:
        super().__init__(io.BytesIO(data), fix_imports=True, encoding="latin1")
        self._size = len(data)
        self._extra = tuple(allow_extra)
        self._known: dict[int, tuple[Allowed, Any]] = {}
        self.ctx = _Ctx(len(data))

    # -- globals
    def find_class(self, module: str, name: str) -> Any:
        entry, obj = lookup(module, name, self._extra)
        self._known[id(obj)] = (entry, obj)
        return obj

    def _entry(self, obj: Any) -> Allowed | None:
        hit = self._known.get(id(obj))
        return hit[0] if hit is not None and hit[1] is obj else None

    def _refuse(self, obj: Any, what: str, why: str = "") -> NotAllowed:
        entry = self._entry(obj)
        label = entry.qualname if entry else f"a {type(obj).__module__}.{type(obj).__qualname__} value"
        return NotAllowed(
            f"the value asks to {what} {label}{': ' + why if why else ''}, which safe unpickling does not allow",
            hint=f"the data may be hostile or from a newer library version; {_OPT_IN}",
            name=entry.qualname if entry else "",
        )

    def _check(self, obj: Any, role: str, args: Any) -> Allowed:
        entry = self._entry(obj)
        check = getattr(entry, role) if entry is not None else None
        if entry is None or check is None:
            raise self._refuse(obj, {"call": "call", "new": "create", "build": "set the state of"}[role])
        try:
            check(self.ctx, args)
        except _Refuse as exc:
            raise self._refuse(obj, {"call": "call", "new": "create", "build": "set the state of"}[role], str(exc)) from None
        return entry

    def _note(self, value: Any) -> Any:
        """Remember a produced value that may itself be an allowed callable (getattr)."""
        if callable(value) and not isinstance(value, type):
            fam = _family("std")
            hit = fam.by_id.get(id(value)) if fam else None
            if hit is not None and hit[1] is value:
                self._known[id(value)] = hit
        mod = type(value).__module__
        if mod.startswith("pandas"):
            self.ctx.made.append(value)
        return value

    # -- calls
    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if type(args) is not tuple:
            raise NotAllowed("REDUCE arguments are not a tuple", hint="the data is malformed or hostile")
        entry = self._check(func, "call", args)
        if func is pickle_newobj:
            stack[-1] = self._newobj(args[0], args[1:], {})
            return
        if func is pickle_newobj_ex:
            stack[-1] = self._newobj(args[0], args[1], args[2])
            return
        if func is pickle_reconstructor:
            stack[-1] = self._newobj(args[0], (), {}, plain=True)
            return
        stack[-1] = self._note((entry.impl or func)(*args))

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _newobj(self, cls: Any, args: Any, kwargs: Any, *, plain: bool = False) -> Any:
        if not isinstance(args, tuple) or kwargs != {}:
            raise NotAllowed("NEWOBJ with keyword arguments", hint="the data is malformed or hostile")
        self._check(cls, "new", args)
        if not isinstance(cls, type):
            raise self._refuse(cls, "create")
        return self._note(object.__new__(cls) if plain else cls.__new__(cls, *args))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._newobj(cls, args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._newobj(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        args_t = tuple(args)
        if args_t or not isinstance(klass, type):
            entry = self._check(klass, "call", args_t)
            self.append(self._note((entry.impl or klass)(*args_t)))
        else:
            self.append(self._newobj(klass, (), {}))

    def load_build(self) -> None:
        state = self.stack[-1]
        inst = self.stack[-2]
        entry = None
        for klass in type(inst).__mro__:
            hit = _build_entry(klass, self._extra)
            if hit is not None and hit.build is not None:
                entry = hit
                break
        if entry is None or entry.build is None:
            raise NotAllowed(
                f"the value asks to set the state of a {type(inst).__module__}.{type(inst).__qualname__}, which safe unpickling does not allow",
                hint=f"the data may be hostile or from a newer library version; {_OPT_IN}",
                name=f"{type(inst).__module__}.{type(inst).__qualname__}",
            )
        try:
            entry.build(self.ctx, state)
        except _Refuse as exc:
            raise NotAllowed(
                f"the value sets a {entry.qualname} to a state safe unpickling does not accept: {exc}",
                hint=f"the data may be hostile or from a newer library version; {_OPT_IN}",
                name=entry.qualname,
            ) from None
        _PyUnpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    # -- containers: only real dicts/lists/sets take items, and every key is charged
    def load_setitem(self) -> None:
        target = self.stack[-3]
        if type(target) not in _DICT_TYPES:
            raise self._refuse(target, "set items on")
        self.ctx.charge([self.stack[-2]])
        _PyUnpickler.load_setitem(self)

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) not in _DICT_TYPES:
            raise self._refuse(target, "set items on")
        self.ctx.charge(items[0::2])
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.ctx.charge(items[0::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})

    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise self._refuse(target, "add items to")
        self.ctx.charge(items)
        target.update(items)

    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.ctx.charge(items)
        self.append(frozenset(items))

    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_append(self) -> None:
        target = self.stack[-2]
        if type(target) not in (list, deque):
            raise self._refuse(target, "append to")
        _PyUnpickler.load_append(self)

    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) not in (list, deque):
            raise self._refuse(target, "append to")
        target.extend(items)

    dispatch[pickle.APPENDS[0]] = load_appends

    # -- tuples: cost known when built, so hashing them later is charged exactly
    def _tupled(self) -> None:
        self.ctx.tuple_cost(self.stack[-1])

    def load_tuple(self) -> None:
        _PyUnpickler.load_tuple(self)
        self._tupled()

    def load_tuple1(self) -> None:
        _PyUnpickler.load_tuple1(self)
        self._tupled()

    def load_tuple2(self) -> None:
        _PyUnpickler.load_tuple2(self)
        self._tupled()

    def load_tuple3(self) -> None:
        _PyUnpickler.load_tuple3(self)
        self._tupled()

    dispatch[pickle.TUPLE[0]] = load_tuple
    dispatch[pickle.TUPLE1[0]] = load_tuple1
    dispatch[pickle.TUPLE2[0]] = load_tuple2
    dispatch[pickle.TUPLE3[0]] = load_tuple3

    # -- sizes the Python unpickler would allocate before reading
    def load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._size:
            raise BackendError("pickle is truncated (BYTEARRAY8 longer than the data)", hint="the data is malformed or hostile")
        data = self.read(n)
        if len(data) != n:
            raise BackendError("pickle is truncated", hint="the data is malformed or hostile")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def _digits(self) -> bytes:
        line = self.readline()
        if len(line) > _MAX_TEXT_DIGITS + 3:  # int() of long decimal text is quadratic
            raise TooLarge(f"an integer has more than {_MAX_TEXT_DIGITS} digits", hint="such a value cannot be read safely")
        return line

    def load_int(self) -> None:
        data = self._digits()
        self.append(False if data == b"00\n" else True if data == b"01\n" else int(data, 0))

    def load_long(self) -> None:
        val = self._digits()[:-1]
        self.append(int(val[:-1] if val.endswith(b"L") else val, 0))

    dispatch[pickle.INT[0]] = load_int
    dispatch[pickle.LONG[0]] = load_long

    # -- opcodes with no place in data we read
    def _refuse_op(self) -> None:
        raise NotAllowed(
            "the pickle uses persistent ids, extension codes or out-of-band buffers, which safe unpickling does not support",
            hint="the data was not written by Metaflow's artifact pickler",
        )

    for _op in (pickle.PERSID, pickle.BINPERSID, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_op[0]] = _refuse_op
    del _op


pickle_newobj: Any = None
pickle_newobj_ex: Any = None
pickle_reconstructor: Any = None


def _init_copyreg() -> None:
    import copyreg

    global pickle_newobj, pickle_newobj_ex, pickle_reconstructor
    pickle_newobj, pickle_newobj_ex, pickle_reconstructor = copyreg.__newobj__, copyreg.__newobj_ex__, copyreg._reconstructor  # type: ignore[attr-defined]  # copyreg internals pickles name


_init_copyreg()


def _build_entry(klass: type, extra: tuple[Allowed, ...]) -> Allowed | None:
    for entry in extra:
        if entry.build is not None and _resolve(entry) is klass:
            return entry
    mod = klass.__module__.partition(".")[0]
    for fam_name in ("std", mod) if mod in ("numpy", "pandas") else ("std",):
        fam = _family(fam_name)
        hit = fam.by_id.get(id(klass)) if fam else None
        if hit is not None and hit[1] is klass:
            return hit[0]
    return None


# --------------------------------------------------------------------------- after the load
def _verify_pandas(made: list[Any]) -> None:
    """pandas' Cython code trusts its invariants (codes in range, blocks fit axes): check them."""
    if not made:
        return
    pd, np = _pd(), _np()
    from pandas.core.internals.managers import BlockManager, SingleBlockManager

    for obj in made:
        if isinstance(obj, BlockManager) and not isinstance(obj, SingleBlockManager):
            obj._verify_integrity()
            n = len(obj.axes[0])
            for blk in obj.blocks:
                locs = blk.mgr_locs.as_array
                if len(locs) and (locs.min() < 0 or locs.max() >= n):
                    raise ValueError("block placement outside the columns")
        elif isinstance(obj, SingleBlockManager):
            if len(obj.blocks) != 1 or len(obj.blocks[0].values) != len(obj.axes[0]):
                raise ValueError("series values do not match the index")
        elif isinstance(obj, pd.MultiIndex):
            obj._verify_integrity()
        elif isinstance(obj, pd.Categorical):
            codes = obj._ndarray
            if codes.dtype.kind not in "iu" or (codes.size and (codes.min() < -1 or codes.max() >= len(obj.dtype.categories))):
                raise ValueError("categorical codes out of range")
        elif isinstance(obj, (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray)):
            if obj._ndarray.dtype.kind not in "Mm":
                raise ValueError("datetime array backed by a non-datetime ndarray")
        elif isinstance(obj, pd.arrays.PeriodArray):
            if obj._ndarray.dtype != np.dtype("i8"):
                raise ValueError("period array backed by a non-int64 ndarray")
        elif isinstance(obj, pd.arrays.StringArray):
            if obj._ndarray.dtype != object:
                raise ValueError("string array backed by a non-object ndarray")
        elif isinstance(obj, pd.DataFrame):
            if not isinstance(obj._mgr, BlockManager) or isinstance(obj._mgr, SingleBlockManager):
                raise ValueError("DataFrame without a block manager")
        elif isinstance(obj, pd.Series):
            if not isinstance(obj._mgr, SingleBlockManager):
                raise ValueError("Series without a single-block manager")


# --------------------------------------------------------------------------- API
def loads(data: bytes, *, allow_extra: Iterable[Allowed] = ()) -> Any:
    """Unpickle `data` through the allow-list; never runs code outside it.

    NotAllowed names the first class or call refused; TooLarge when a size or
    hashing cap is hit; BackendError when the data is not a valid pickle.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("loads expects bytes")
    data = bytes(data)
    unpickler = SafeUnpickler(data, allow_extra=allow_extra)
    try:
        value = unpickler.load()
        try:
            _verify_pandas(unpickler.ctx.made)
        except (ValueError, AssertionError, IndexError) as exc:
            raise NotAllowed(
                f"the value holds an inconsistent pandas object ({str(exc)[:200]})",
                hint="pandas would read out of bounds on it; the data is corrupt or hostile",
            ) from None
    except AgentError:
        raise
    except MemoryError:
        raise TooLarge("unpickling ran out of memory", hint="the value is too large to read here") from None
    except RecursionError:
        raise TooLarge("the value is nested too deeply to read", hint="such values cannot be read safely") from None
    except Exception as exc:
        raise BackendError(f"not a readable pickle: {type(exc).__name__}: {str(exc)[:200]}", hint="the data may be corrupt, truncated or from an incompatible library version") from None
    return value


def needed_classes(data: bytes, *, limit: int = 50) -> list[str]:
    """The globals a pickle names ("module.name"), without running or importing anything."""
    from pickletools import genops

    found: list[tuple[str, str]] = []
    strings: list[Any] = []  # a shadow of the stack: text values, None for anything else
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                mod, _, qual = str(arg).partition(" ")
                found.append((mod, qual))
            if name == "STACK_GLOBAL":
                pair = strings[-2:] if len(strings) >= 2 else [None, None]
                found.append((pair[0], pair[1]) if isinstance(pair[0], str) and isinstance(pair[1], str) else ("?", "?"))
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = strings[-1] if strings else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                strings.append(memo.get(int(arg or 0)))
            elif name not in ("PROTO", "FRAME", "STOP"):
                strings.append(None)
            if len(set(found)) >= limit:
                break
    except Exception:  # a truncated pickle still tells what it named so far
        pass
    out: list[str] = []
    for mod, qual in found:
        item = ".".join(_canonical(mod, qual))
        if item not in out:
            out.append(item)
    return out


def refused_classes(data: bytes, *, allow_extra: Iterable[Allowed] = ()) -> list[str]:
    """Which of the globals a pickle names are outside the allow-list (for hints)."""
    extra = tuple(allow_extra)
    out = []
    for qual in needed_classes(data):
        for module, name in _splits(qual):
            try:
                lookup(module, name, extra)
                break
            except NotAllowed:
                continue
        else:
            out.append(qual)
    return out


def _splits(qual: str) -> list[tuple[str, str]]:
    """Every (module, name) reading of a dotted name, longest module first."""
    parts = qual.split(".")
    return [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]


def _iter_entries() -> Iterator[Allowed]:
    for fam in ("std", "numpy", "pandas"):
        f = _family(fam)
        if f is not None:
            for entry, _ in f.by_name.values():
                yield entry
