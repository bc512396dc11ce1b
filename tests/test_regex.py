"""Linear-time user patterns: RE2 regexes with typed errors, globs equal to fnmatch, bounded lines."""

from __future__ import annotations

import fnmatch
import random
import time

import pytest

from metaflow_agent import _regex
from metaflow_agent._errors import BadPattern
from metaflow_agent._regex import LINE_CHARS, LineCutter, compile_glob, compile_pattern


@pytest.mark.parametrize(
    "pattern, needle",
    [
        (r"(a)\1", "backreferences"),
        (r"(?P<x>a)(?P=x)", "backreferences"),
        (r"(?=a)b", "lookahead"),
        (r"(?!a)b", "negative lookahead"),
        (r"(?<=a)b", "lookbehind"),
        (r"(?<!a)b", "lookbehind"),
        (r"(?>a)", "atomic"),
        ("a++", "possessive"),
        ("a{1001}", "up to 1000"),
        ("(" * 999, "parentheses"),
        ("a)", "parentheses"),
        ("[a", "character class"),
        (r"\Z", "\\z"),
        ("(?#c)", "comments"),
        ("x" * 1001, "shorter"),
        ("", "regular expression"),
        (None, "regular expression"),
        (5, "regular expression"),
        ("a\x00", "NUL"),
    ],
)
def test_bad_patterns_are_typed_with_hints(pattern: object, needle: str) -> None:
    with pytest.raises(BadPattern) as info:
        compile_pattern(pattern)
    assert needle in info.value.hint or needle in info.value.message


@pytest.mark.parametrize("pattern", [r"a{4294967296}", "a{1000}", "((((a))))" * 100, "(" * 499 + ")" * 499, r"\p{Greek}", "(?i)error"])
def test_odd_but_valid_patterns_never_leak_python_errors(pattern: str) -> None:
    compile_pattern(pattern)  # no OverflowError / RecursionError: RE2 parses these


def test_catastrophic_pattern_is_linear() -> None:
    p = compile_pattern("(a+)+$")
    line = "a" * 50_000 + "b"
    start = time.perf_counter()
    assert not p.search(line)
    assert time.perf_counter() - start < 0.1


def test_long_lines_are_matched_on_their_head() -> None:
    p = compile_pattern("needle")
    assert p.search("x" * 10 + "needle")
    assert not p.search("x" * LINE_CHARS + "needle")


def test_compile_cache_is_bounded() -> None:
    for i in range(_regex.CACHE_SIZE * 3):
        compile_pattern(f"p{i}")
    assert len(_regex._cache) == _regex.CACHE_SIZE
    assert compile_pattern("p1") is compile_pattern("p1")


def test_glob_equals_fnmatchcase() -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(5000):
        glob = "".join(rng.choice("ab*?[]!-\\.x") for _ in range(rng.randint(1, 8)))
        try:
            g = compile_glob(glob)
        except BadPattern:
            continue  # e.g. a reversed range [b-a]: fnmatch drops it, we refuse it
        for _ in range(5):
            name = "".join(rng.choice("ab]![-\\.x*?\n") for _ in range(rng.randint(0, 6)))
            assert g.match(name) == fnmatch.fnmatchcase(name, glob), (glob, name)
            checked += 1
    assert checked > 10_000


def test_glob_is_linear_and_capped() -> None:
    g = compile_glob("*a" * 40 + "b")
    start = time.perf_counter()
    assert not g.match("a" * 10_000)
    assert time.perf_counter() - start < 0.05
    with pytest.raises(BadPattern):
        compile_glob("x" * (_regex.MAX_GLOB + 1))
    with pytest.raises(BadPattern):
        compile_glob(None)


def test_line_cutter_bounds_one_line_without_newlines() -> None:
    cutter = LineCutter(cap=1024)
    chunk = b"x" * (1 << 20)
    start = time.perf_counter()
    for _ in range(64):  # 64 MiB, no newline
        assert cutter.feed(chunk) == []
        assert len(cutter.carry) <= 1024
    (line, dropped), = cutter.finish()
    assert time.perf_counter() - start < 1
    assert len(line) == 1024 and dropped == 64 * (1 << 20) - 1024 and cutter.cut == 1


def test_line_cutter_splits_like_splitlines() -> None:
    data = b"one\ntwo\n\nthree"
    cutter = LineCutter(cap=100)
    out = []
    for i in range(0, len(data), 3):
        out += cutter.feed(data[i : i + 3])
    out += cutter.finish()
    assert [line for line, _ in out] == data.split(b"\n")
