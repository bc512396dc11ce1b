"""Restricted unpickling: every allowed kind round-trips, every hostile pickle is refused
without side effects, and no allowed constructor can be made to allocate or hash forever."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import os
import pathlib
import pickle
import struct
import time
import uuid
import zoneinfo
from typing import Any

import pytest

from metaflow_agent._errors import AgentError, BackendError, NotAllowed, TooLarge
from metaflow_agent._unpickle import ForeachFrame, loads, needed_classes, refused_classes
from metaflow_agent._unpickle import MetaflowExceptionWrapper as StandIn

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


# --------------------------------------------------------------------------- round trips
def _values() -> dict[str, Any]:
    mi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["x", "y"])
    return {
        "scalars": [None, True, 1, -(2**70), 1.5, float("inf"), "text", b"raw", b"", complex(1, 2), Ellipsis, NotImplemented],
        "containers": {"l": [1, [2]], "t": (1, (2, 3)), "s": {1, 2}, "f": frozenset({"a"}), "d": {(1, "k"): {"n": None}}},
        "builtins": [bytearray(b"xy"), slice(1, 9, 2), range(2, 10, 3), type(None), int, float, str, dict],
        "collections": [
            collections.OrderedDict(a=1, b=2),
            collections.deque([1, 2], maxlen=5),
            collections.Counter("aab"),
            collections.defaultdict(list, a=[1]),
            collections.defaultdict(int),
        ],
        "dates": [
            datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
            datetime.datetime(2020, 1, 2, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
            datetime.date(2020, 1, 1),
            datetime.time(1, 2, 3),
            datetime.timedelta(days=1, seconds=2),
            datetime.timezone(datetime.timedelta(hours=2), "X"),
        ],
        "numbers": [decimal.Decimal("1.50"), decimal.Decimal("-1e999999"), fractions.Fraction(1, 3)],
        "ids": [uuid.UUID(int=12345), pathlib.PurePosixPath("/a/b"), pathlib.Path("/tmp/x"), pathlib.PureWindowsPath("c:/x")],
        "ndarray": np.arange(6.0).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
        "objarray": np.array([1, "a", None], dtype=object),
        "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        "strings": np.array(["ab", "c"]),
        "bytes_arr": np.array([b"x", b"yz"]),
        "datetimes": np.array(["2020-01-01"], dtype="M8[ns]"),
        "np_scalars": [np.float32(1.5), np.int64(3), np.bool_(True), np.str_("s"), np.datetime64("2020-01-01"), np.timedelta64(5, "s"), np.complex128(1 + 2j)],
        "dtypes": [np.dtype("int16"), np.dtype([("a", "i4")]), np.float64],
        "df": pd.DataFrame(
            {
                "a": [1, 2],
                "b": ["x", "y"],
                "c": pd.Categorical(["u", "v"]),
                "t": pd.to_datetime(["2020-01-01", "2021-01-01"]),
                "f": [1.0, None],
                "o": [[1], {"a": 2}],
                "i": pd.array([1, None], dtype="Int64"),
            }
        ),
        "series": pd.Series([1.0, 2.0], index=pd.Index(["a", "b"], name="k"), name="s"),
        "multi": pd.Series([1, 2], index=mi),
        "indexes": [pd.Index([1, 2, 3]), pd.RangeIndex(10), pd.DatetimeIndex(["2020-01-01"], tz="UTC"), pd.CategoricalIndex(["a", "b"]), mi],
        "ranges": [pd.date_range("2020", periods=3, freq="D"), pd.timedelta_range("1D", periods=2), pd.period_range("2020-01", periods=2, freq="M"), pd.interval_range(0, 3)],
        "pd_scalars": [pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2020-01-01", tz="Europe/Paris"), pd.Timestamp("2020-01-01"), pd.Timedelta("1D"), pd.NaT, pd.NA, pd.Period("2020-01", "M"), pd.Interval(0, 1)],
        "pd_arrays": [pd.Categorical(["a", "b", "a"], ordered=True), pd.array([True, None], dtype="boolean"), pd.array([1.5, None], dtype="Float64"), pd.array(["a", None], dtype="string")],
        "empty_frame": pd.DataFrame(index=range(5)),
        "category_series": pd.Series(["a", "b"], dtype="category"),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
        dtypes = (lambda x: list(x.dtypes) if isinstance(x, pd.DataFrame) else [x.dtype])  # noqa: E731
        return type(a) is type(b) and a.equals(b) and dtypes(a) == dtypes(b)
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return all(_same(x, y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist())) if a.dtype.hasobject else bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a) and getattr(a, "default_factory", 0) == getattr(b, "default_factory", 0)
    if isinstance(a, pd.api.extensions.ExtensionArray):
        return type(a) is type(b) and a.dtype == b.dtype and bool(a.equals(b))
    if a is pd.NaT or a is pd.NA:
        return b is a
    if isinstance(a, BaseException):  # Metaflow's exception wrapper is read as a stand-in of the same name and fields
        return type(a).__name__ == type(b).__name__ and vars(a) == vars(b) and str(a) == str(b)
    return type(a) is type(b) and bool(a == b)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(_values()))
def test_allowed_values_round_trip(kind: str, proto: int) -> None:
    value = _values()[kind]
    assert _same(value, loads(pickle.dumps(value, protocol=proto)))


def test_nested_list_bomb_loads_at_once() -> None:
    """The issue's 586-byte value is safe to load; only rendering it is costly (see _repr)."""
    a: Any = [0] * 10
    for _ in range(25):
        a = [a] * 10
    data = pickle.dumps(a, protocol=4)
    start = time.perf_counter()
    out = loads(data)
    assert time.perf_counter() - start < 0.5
    assert out[0][0] is out[0][1] and len(data) < 600


def test_foreach_frames_from_any_module() -> None:
    data = (
        b"\x80\x04\x95<\x00\x00\x00\x00\x00\x00\x00]\x94\x8c\x08__main__\x94\x8c\x0cForeachFrame\x94\x93\x94"
        b"(\x8c\x04work\x94\x8c\x05items\x94K\xc8K\x01\x8c\x011\x94t\x94\x81\x94a."
    )
    (frame,) = loads(data)
    assert isinstance(frame, ForeachFrame) and tuple(frame) == ("work", "items", 200, 1, "1")


def test_metaflow_exception_wrapper() -> None:
    from metaflow.exception import MetaflowExceptionWrapper

    try:
        raise KeyError("boom")
    except KeyError as exc:
        wrapped = MetaflowExceptionWrapper(exc)
    for proto in PROTOCOLS:
        out = loads(pickle.dumps(wrapped, protocol=proto))
        assert type(out) is StandIn and out.type == "builtins.KeyError" and "boom" in out.stacktrace
        assert vars(out) == vars(wrapped) and str(out) == str(wrapped) and repr(out) == repr(wrapped)


# --------------------------------------------------------------------------- hostile pickles
class _Run:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> Any:
        return self.func, self.args


def _touch(marker: pathlib.Path) -> str:
    return f"touch {marker}"


@pytest.fixture
def marker(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "pwned"


def _refused(data: bytes, marker: pathlib.Path, exc: type[AgentError] = NotAllowed) -> AgentError:
    with pytest.raises(exc) as info:
        loads(data)
    assert not marker.exists(), "a refused pickle had a side effect"
    assert info.value.hint
    return info.value


def test_payload_really_runs_under_plain_pickle(marker: pathlib.Path) -> None:
    """Control: the payload used below does run under plain pickle, so the refusals mean something."""
    pickle.loads(pickle.dumps(_Run(os.system, _touch(marker))))
    assert marker.exists()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_os_system_via_reduce(proto: int, marker: pathlib.Path) -> None:
    err = _refused(pickle.dumps(_Run(os.system, _touch(marker)), protocol=proto), marker)
    assert err.name == "posix.system" and "posix.system" in err.message  # type: ignore[attr-defined]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_subprocess_via_reduce(proto: int, marker: pathlib.Path) -> None:
    import subprocess

    err = _refused(pickle.dumps(_Run(subprocess.check_call, ["touch", str(marker)]), protocol=proto), marker)
    assert "subprocess" in err.message


@pytest.mark.parametrize("name", ["eval", "exec", "__import__", "compile", "open", "breakpoint", "input", "vars", "globals", "setattr", "delattr"])
@pytest.mark.parametrize("proto", [0, 2, 4])
def test_dangerous_builtins(name: str, proto: int, marker: pathlib.Path) -> None:
    code = f"__import__('os').system('touch {marker}')"
    import builtins

    data = pickle.dumps(_Run(getattr(builtins, name), code), protocol=proto)
    err = _refused(data, marker)
    assert name in err.message


@pytest.mark.parametrize(
    "data",
    [
        # GLOBAL + REDUCE, protocol 0
        b"cos\nsystem\n(S'touch {m}'\ntR.",
        # INST
        b"(S'touch {m}'\nios\nsystem\n.",
        # OBJ
        b"(cos\nsystem\nS'touch {m}'\no.",
        # STACK_GLOBAL
        b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c{n}touch {m}\x85R.",
        # getattr on an allowed class, reaching for a subclass list
        b"c__builtin__\ngetattr\n(c__builtin__\nobject\nS'__subclasses__'\ntR)R.",
        # getattr(ZoneInfo, anything but _unpickle)
        b"cbuiltins\ngetattr\n(czoneinfo\nZoneInfo\nS'_weak_cache'\ntR.",
        # dotted name through an allowed class
        b"\x80\x04\x8c\x07pathlib\x8c\x0ePath.read_text\x93.",
        b"\x80\x04\x8c\x08builtins\x8c\x1eobject.__subclasses__.__call__\x93.",
        # copyreg with a forbidden base or a class not meant to be created
        b"ccopyreg\n_reconstructor\n(c__builtin__\nbytearray\nc__builtin__\nbytearray\nI1000000000000\ntR.",
        b"ccopyreg\n__newobj__\n(c__builtin__\nbytes\nI1000000000000\ntR.",
        b"ccopyreg\n_reconstructor\n(ccollections\nOrderedDict\nc__builtin__\nobject\nNtR.",
        # nested inside an allowed container
        b"\x80\x04](K\x01}\x8c\x01a(K\x01\x8c\x02os\x8c\x06system\x93\x8c{n}touch {m}\x85Rtse.",
        # defaultdict with a factory that is not a plain type
        b"ccollections\ndefaultdict\n(cnumpy\nndarray\ntR.",
        # reading and writing files
        b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
        b"cnumpy\nfromfile\n(S'/etc/passwd'\ntR.",
        b"cnumpy\nmemmap\n(S'{m}'\ntR.",
        b"cpandas\nread_pickle\n(S'/etc/passwd'\ntR.",
        b"cpandas.io.pickle\nread_pickle\n(S'/etc/passwd'\ntR.",
        b"cpandas\nread_csv\n(S'/etc/passwd'\ntR.",
        b"cio\nopen\n(S'{m}'\nS'w'\ntR.",
        b"coperator\nattrgetter\n(S'system'\ntR.",
        b"coperator\nmethodcaller\n(S'system'\nS'touch {m}'\ntR.",
        b"cfunctools\npartial\n(cos\nsystem\nS'touch {m}'\ntR)R.",
        b"ccodecs\nopen\n(S'{m}'\nS'w'\ntR.",
        # numpy/pandas internals not on the list
        b"cnumpy.testing\nassert_\n(I1\ntR.",
        b"cnumpy\nndarray\n(I1000000000000\ntR.",
        b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a;\x85\x81.",
        # the type of an allowed object as a class factory
        b"c__builtin__\ntype\n(S'X'\n(c__builtin__\nobject\nt}tR.",
        # extension registry, persistent ids
        b"\x80\x02\x82\x01.",
        b"\x80\x02P0\n.",
    ],
)
def test_handcrafted_opcodes(data: bytes, marker: pathlib.Path) -> None:
    cmd = f"touch {marker}"
    _refused(data.replace(b"{m}", str(marker).encode()).replace(b"{n}", bytes([len(cmd)])), marker)


def test_refusal_happens_before_a_later_payload(marker: pathlib.Path) -> None:
    """An allowed prefix does not let a forbidden suffix run."""
    data = pickle.dumps([1, 2, {"a": (3, _Run(os.system, _touch(marker)))}], protocol=4)
    err = _refused(data, marker)
    assert err.name == "posix.system"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data, exc",
    [
        (b"c__builtin__\nbytearray\n(I1000000000000\ntR.", NotAllowed),
        (b"cbuiltins\nbytes\n(I1000000000000\ntR.", NotAllowed),
        (b"c__builtin__\nset\n(c__builtin__\nrange\n(I1000000000000\ntRtR.", NotAllowed),
        (b"ccollections\ndeque\n(c__builtin__\nrange\n(I1000000000000\ntRtR.", NotAllowed),
        (b"ccollections\nCounter\n(c__builtin__\nrange\n(I1000000000000\ntRtR.", NotAllowed),
        (b"cfractions\nFraction\n(S'1e999999999'\ntR.", NotAllowed),
        (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000000000\ntS'b'\ntR.", TooLarge),
        (b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I100000\nI100000\ntS'd'\ntR.", TooLarge),
        (b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b".", BackendError),
        (b"I" + b"9" * 100_000 + b"\n.", TooLarge),
        (b"L" + b"9" * 100_000 + b"L\n.", TooLarge),
    ],
)
def test_allocation_bombs(data: bytes, exc: type[AgentError], marker: pathlib.Path) -> None:
    start = time.perf_counter()
    _refused(data, marker, exc)
    assert time.perf_counter() - start < 1


def _body(value: Any) -> bytes:
    return pickle.dumps(value, protocol=2)[2:-1]


def _tuple_bomb() -> tuple:
    a: Any = (0,) * 10
    for _ in range(25):
        a = (a,) * 10
    return a


@pytest.mark.parametrize(
    "wrap",
    [
        lambda body: b"\x80\x02}" + body + b"K\x01s.",  # dict key: SETITEM
        lambda body: b"\x80\x02}(" + body + b"K\x01u.",  # SETITEMS
        lambda body: b"\x80\x02(" + body + b"K\x01d.",  # DICT
        lambda body: b"\x80\x04\x8f(" + body + b"\x90.",  # ADDITEMS
        lambda body: b"\x80\x04(" + body + b"\x91.",  # FROZENSET
        lambda body: b"\x80\x02c__builtin__\nfrozenset\n]" + body + b"a\x85R.",  # frozenset([bomb])
    ],
)
def test_hash_bombs_refused_at_once(wrap: Any, marker: pathlib.Path) -> None:
    """A 600-byte tuple whose hash takes 10**25 steps never reaches hash()."""
    data = wrap(_body(_tuple_bomb()))
    assert len(data) < 700
    start = time.perf_counter()
    _refused(data, marker, TooLarge)
    assert time.perf_counter() - start < 1


def test_many_keys_sharing_one_large_tuple() -> None:
    """Each key is small enough alone; together their hashing is over the budget."""
    big = tuple(range(100_000))
    data = b"\x80\x02}(" + _body(big) + b"q\x00K\x01" + b"h\x00K\x01" * 200 + b"u."
    with pytest.raises(TooLarge):
        loads(data)


def test_deep_tuples_refused() -> None:
    with pytest.raises(TooLarge):
        loads(b"\x80\x02)" + b"\x85" * 100_000 + b".")


def test_deep_lists_are_fine() -> None:
    out = loads(b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b".")
    assert isinstance(out, list)


def test_zoneinfo_key_cannot_leave_the_database(marker: pathlib.Path) -> None:
    data = b"cbuiltins\ngetattr\n(czoneinfo\nZoneInfo\nS'_unpickle'\ntR(S'../../../etc/passwd'\nI1\ntR."
    _refused(data, marker)


def test_frame_state_cannot_swap_the_class(marker: pathlib.Path) -> None:
    good = pickle.dumps(pd.DataFrame({"a": [1]}), protocol=2)
    hostile = good.replace(b"X\x05\x00\x00\x00attrs", b"X\x09\x00\x00\x00__class__", 1)
    assert hostile != good
    err = _refused(hostile, marker)
    assert "__class__" in err.message


def test_block_placed_outside_the_columns() -> None:
    from pandas._libs.internals import BlockPlacement

    df = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
    blk = df._mgr.blocks[0]
    blk.mgr_locs = BlockPlacement(np.array([0, 7]))
    with pytest.raises(NotAllowed):
        loads(pickle.dumps(df, protocol=4))


def test_categorical_codes_out_of_range() -> None:
    cat = pd.Categorical(["a", "b"])
    cat._ndarray[:] = 50  # pandas would read category 50 of 2 without a bounds check
    with pytest.raises(NotAllowed):
        loads(pickle.dumps(cat, protocol=4))


def test_multiindex_codes_out_of_range() -> None:
    mi = pd.MultiIndex(levels=[["a"], [1]], codes=[[5], [0]], verify_integrity=False)
    with pytest.raises(NotAllowed):
        loads(pickle.dumps(mi, protocol=4))


def test_range_index_too_long() -> None:
    data = pickle.dumps(pd.RangeIndex(10), protocol=2).replace(b"K\n", b"J\x00\x00\x00\x7f", 1)
    with pytest.raises(TooLarge):
        loads(data)


def test_object_array_shape_must_match_its_list() -> None:
    arr = np.array([1, 2], dtype=object)
    data = pickle.dumps(arr, protocol=2)
    huge = data.replace(b"K\x02\x85", b"J\x00\xe1\xf5\x05\x85", 1)  # shape (100_000_000,), 2 items
    assert huge != data
    with pytest.raises(TooLarge):
        loads(huge)
    short = data.replace(b"K\x02\x85", b"M\xe8\x03\x85", 1)  # shape (1000,), 2 items
    with pytest.raises(NotAllowed):
        loads(short)


@pytest.mark.parametrize("data", [b"", b"\x80\x04", b"garbage", b"\x80\x02]q\x00(K\x01", b"\x80\x09.", b"h\x05."])
def test_malformed_pickles_are_typed(data: bytes) -> None:
    with pytest.raises(AgentError):
        loads(data)


# --------------------------------------------------------------------------- hints
def test_needed_and_refused_classes() -> None:
    data = pickle.dumps([np.arange(2), _Run(os.system, "true"), collections.OrderedDict()], protocol=4)
    needed = needed_classes(data)
    assert "posix.system" in needed and "collections.OrderedDict" in needed
    assert refused_classes(data) == ["posix.system"]
    assert refused_classes(pickle.dumps(pd.DataFrame({"a": [1]}))) == []
    assert "os.system" in needed_classes(b"cos\nsystem\n(S'x'\ntR.")
    assert needed_classes(b"garbage") == []


# --------------------------------------------------------------------------- real Metaflow data
def test_every_artifact_of_the_real_runs(local_runs: Any) -> None:
    """All artifacts the test flows wrote: equal to plain pickle where that works, foreach
    frames through the stand-in, and only the flow's own class (Opaque) refused."""
    import gzip
    import json as _json

    root = pathlib.Path(local_runs.root) / ".metaflow"
    seen: set[str] = set()
    counts = collections.Counter()
    for index in root.glob("*/*/*/*/*.data.json"):
        flow = index.relative_to(root).parts[0]
        for name, sha in _json.loads(index.read_text())["objects"].items():
            if sha in seen:
                continue
            seen.add(sha)
            blob = root / flow / "data" / sha[:2] / sha
            meta = blob.with_name(sha + "_meta")
            raw = blob.read_bytes()
            data = raw if meta.exists() and _json.loads(meta.read_text()).get("cas_raw") else gzip.decompress(raw)
            if b"ForeachFrame" in data:
                frames = loads(data)
                assert all(isinstance(f, ForeachFrame) for f in frames)
                counts["frames"] += 1
                continue
            try:
                plain = pickle.loads(data)  # our own test flows' data: trusted here
            except AttributeError:  # a class of the flow's own module
                with pytest.raises(NotAllowed) as info:
                    loads(data)
                assert info.value.name == "__main__.Opaque"  # type: ignore[attr-defined]
                counts["refused"] += 1
                continue
            assert _same(plain, loads(data)), name
            counts["equal"] += 1
    assert counts["equal"] > 100 and counts["frames"] > 10 and counts["refused"] >= 1, counts
