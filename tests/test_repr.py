"""Bounded repr, summary and small JSON form: bounded output, bounded work, no foreign code."""

from __future__ import annotations

import collections
import json
import pickle
import time
from typing import Any

import pytest

from metaflow_agent._repr import bounded_repr, small_json, summary
from metaflow_agent._unpickle import loads

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")


def _bomb() -> list[Any]:
    a: Any = [0] * 10
    for _ in range(25):
        a = [a] * 10
    return a


def test_issue_nested_list_renders_in_milliseconds() -> None:
    data = pickle.dumps(_bomb(), protocol=4)
    assert len(data) == 586  # the issue's value, byte for byte
    value = loads(data)
    start = time.perf_counter()
    text, cut = bounded_repr(value)
    assert time.perf_counter() - start < 0.05
    assert cut and len(text) <= 1000 and text.startswith("[[[[")


@pytest.mark.parametrize("chars", [1, 20, 100, 1000, 10_000])
def test_budget_holds_for_every_kind(chars: int) -> None:
    from tests.test_unpickle import _values

    values = _values()
    for name, value in [*values.items(), ("bomb", _bomb()), ("wide", list(range(10**6))), ("text", "x" * 10**6)]:
        text, _ = bounded_repr(value, max_chars=chars)
        assert len(text) <= chars, name
        assert "<render failed" not in text, (name, text)


def test_cycles_and_shared_references() -> None:
    a: list[Any] = [1]
    a.append(a)
    d: dict[str, Any] = {}
    d["self"] = d
    shared = [1, 2]
    assert bounded_repr(a) == ("[1, [...]]", False)
    assert bounded_repr(d) == ("{'self': {...}}", False)
    assert bounded_repr([shared, shared]) == ("[[1, 2], [1, 2]]", False)


def test_depth_and_items_limits() -> None:
    deep: Any = 0
    for _ in range(100):
        deep = [deep]
    text, cut = bounded_repr(deep, max_depth=3)
    assert text == "[[[[…]]]]" and cut
    text, cut = bounded_repr(list(range(100)), max_items=3)
    assert text == "[0, 1, 2, …+97]" and cut


class _Loud:
    calls = 0

    def __repr__(self) -> str:
        _Loud.calls += 1
        return "ran"

    __str__ = __repr__


class _SneakyList(list):
    def __iter__(self):  # type: ignore[no-untyped-def]
        _Loud.calls += 1
        return iter([])

    def __len__(self) -> int:
        _Loud.calls += 1
        return 0


def test_never_runs_foreign_code() -> None:
    _Loud.calls = 0
    text, _ = bounded_repr({"a": _Loud(), "b": _SneakyList([1, 2]), "c": (_Loud(),)})
    assert _Loud.calls == 0
    assert "ran" not in text and "_Loud object>" in text and "[1, 2]" in text


def test_numpy_summarised_without_building_it() -> None:
    big = np.zeros((4000, 4000))  # 128 MB: numpy's own repr would be cheap, ours must be too
    start = time.perf_counter()
    text, cut = bounded_repr(big, max_chars=300)
    assert time.perf_counter() - start < 0.05
    assert text.startswith("ndarray(shape=(4000, 4000), dtype=float64, [0.0, 0.0") and cut
    obj = np.empty(3, dtype=object)
    obj[0], obj[1], obj[2] = _bomb(), _Loud(), "s"
    text, _ = bounded_repr(obj, max_chars=300)
    assert len(text) <= 300 and _Loud.calls == 0


def test_pandas_summarised() -> None:
    df = pd.DataFrame({"a": range(10**6), "b": ["x"] * 10**6, "o": [_bomb()] * 10**6})
    start = time.perf_counter()
    text, cut = bounded_repr(df, max_chars=500)
    assert time.perf_counter() - start < 0.2
    assert text.startswith("DataFrame(1000000 rows × 3 columns, columns={'a': [0, 1, 2, 3, 4]") and cut
    assert bounded_repr(pd.Series([1.5], name="s"))[0] == "Series(name='s', len=1, dtype=float64, index=RangeIndex(start=0, stop=1, step=1), values=[1.5])"
    facts = summary(df)
    assert facts == {"python_type": "pandas.DataFrame", "shape": [10**6, 3], "columns": ["a", "b", "o"], "dtypes": {"a": "int64", "b": facts["dtypes"]["b"], "o": "object"}}


def test_huge_numbers() -> None:
    assert bounded_repr(10**5000)[0] == "<int of about 5001 digits>"
    assert bounded_repr(-(10**50))[0] == str(-(10**50))
    import decimal
    import fractions

    assert bounded_repr(decimal.Decimal("1e999999999"))[0] == "Decimal('1E+999999999')"
    assert bounded_repr(fractions.Fraction(10**5000, 3))[0].startswith("Fraction(<int of about")


def test_collections_look_like_python() -> None:
    assert bounded_repr(collections.OrderedDict(a=1))[0] == "OrderedDict({'a': 1})"
    assert bounded_repr(collections.defaultdict(list, a=[1]))[0] == "defaultdict(list, {'a': [1]})"
    assert bounded_repr(collections.deque([1, 2]))[0] == "deque([1, 2])"
    assert bounded_repr((1,))[0] == "(1,)"
    assert bounded_repr(set())[0] == "set()"
    assert bounded_repr(b"\x00" * 5000, max_chars=20)[0].startswith("b'\\x00")


def test_summary_is_bounded() -> None:
    facts = summary({i: i for i in range(10_000)})
    assert facts["len"] == 10_000 and len(facts["keys"]) == 50
    assert summary(_bomb())["item_types"] == ["list"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, {"kind": "json", "value": 1, "type": "int"}),
        (1.5, {"kind": "json", "value": 1.5, "type": "float"}),
        ("abc", {"kind": "json", "value": "abc", "type": "str"}),
        (None, {"kind": "json", "value": None, "type": "NoneType"}),
        ([1, "a", {"k": True}], {"kind": "json", "value": [1, "a", {"k": True}], "type": "list"}),
        ((1, 2), {"kind": "json", "value": [1, 2], "type": "tuple"}),
        (2**60, {"kind": "summary", "value": None, "type": "int"}),
        (float("nan"), {"kind": "summary", "value": None, "type": "float", "repr": "nan"}),
        ("x" * 500, {"kind": "summary", "value": None, "type": "str", "len": 500}),
        (list(range(100)), {"kind": "summary", "value": None, "type": "list", "len": 100}),
        ({1: 2}, {"kind": "summary", "value": None, "type": "dict", "len": 1}),
    ],
)
def test_small_json(value: Any, expected: dict[str, Any]) -> None:
    out = small_json(value)
    assert out == expected
    json.dumps(out, allow_nan=False)


def test_small_json_numpy_and_bomb() -> None:
    assert small_json(np.int64(5)) == {"kind": "json", "value": 5, "type": "numpy.int64"}
    assert small_json(np.zeros(3)) == {"kind": "summary", "value": None, "type": "numpy.ndarray", "len": 3}
    start = time.perf_counter()
    out = small_json(_bomb())
    assert out["kind"] == "summary" and time.perf_counter() - start < 0.01
