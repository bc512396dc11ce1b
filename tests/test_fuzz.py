"""Property-based fuzzing of every public function on the real local runs.

For any arguments, a function either answers (a model whose JSON stays under a size
bound) or raises an `AgentError`, within a time limit per input. Arguments mix real
pathspecs and valid options with hostile values (huge strings, wrong types, forged
cursors, catastrophic regexes, escapes). Runs are derandomized, so a failure
reproduces; MFAGENT_FUZZ_EXAMPLES sets examples per function
(25 by default; raise it for a longer run; not METAFLOW_*: conftest clears those).
"""

from __future__ import annotations

import base64
import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import metaflow_agent as ma
from helpers import within

EXAMPLES = int(os.environ.get("MFAGENT_FUZZ_EXAMPLES", "25"))
TIME_LIMIT_S = 15.0
MAX_ANSWER = 2 << 20  # bytes of JSON

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.just("x" * 100_000),
    st.just("../../../../etc/passwd"),
    st.binary(max_size=16),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)

HOSTILE_PATTERNS = ["(a+)+$", "a{4294967296}", "(" * 999, "(a)\\1", "(?=x)", "[", "\\", "x" * 5000, ".*" * 400]


def _task_paths(root: str, run: str) -> list[str]:
    out = []
    base = Path(root) / ".metaflow" / run
    for step in sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")):
        ids = sorted((d.name for d in (base / step).iterdir() if d.name.isdigit()), key=lambda t: (len(t), t))
        out += [f"{run}/{step}/{t}" for t in ids[:2]]
    return out


def _pathspecs(runs: Any) -> dict[str, list[str]]:
    all_runs = [runs.wide, runs.retry, runs.crash, runs.log, runs.art_a, runs.art_b, runs.hello_failed, *runs.hello_ok]
    tasks = [t for r in (runs.log, runs.art_a, runs.retry, runs.crash) for t in _task_paths(runs.root, r)]
    return {
        "flow": sorted({r.split("/")[0] for r in all_runs}) + ["NoSuchFlow"],
        "run": all_runs + ["HelloFlow/999999"],
        "task": tasks + [f"{runs.log}/noisy/999999"],
    }


def _mutated(real: list[str]) -> st.SearchStrategy[str]:
    """Real pathspecs bent out of shape: extra parts, metadata files, traversal, unicode."""
    return st.builds(
        lambda p, suffix: p + suffix,
        st.sampled_from(real),
        st.sampled_from(["/", "//", "/_meta", "/_meta/_self.json", "/..", "/../..", "/0.data.json", "/ä", "\x00", " ", "/x" * 5]),
    )


def _strategy(name: str, paths: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    kind = {"flow": "flow", "run": "run", "run_a": "run", "run_b": "run", "task": "task"}.get(name)
    if kind:
        return st.one_of(st.sampled_from(paths[kind]), st.sampled_from(paths[kind]), _mutated(paths[kind]), JUNK)
    if name == "grep":
        return st.one_of(st.sampled_from(["ERROR", "line", "^\\[", "(?i)warn|err"]), st.sampled_from(HOSTILE_PATTERNS), st.text(max_size=30), JUNK)
    if name == "name":
        return st.one_of(st.sampled_from(["config", "blob", "con*", "*", "[!a]*", "_exception"]), st.text(max_size=50), st.just("*" * 10_000), JUNK)
    if name == "cursor":
        forged = st.builds(
            lambda d: base64.urlsafe_b64encode(json.dumps(d, default=repr).encode()).decode().rstrip("="),
            st.fixed_dictionaries({"k": st.sampled_from(["list_runs", "failed_tasks", "list_artifacts", "search_artifacts"]), "q": st.text(max_size=12)}, optional={"i": JUNK, "pos": JUNK, "ts": JUNK, "id": JUNK}),
        )
        return st.one_of(st.none(), forged, st.text(max_size=60), JUNK)
    if name in ("since", "until"):
        return st.one_of(st.none(), st.sampled_from(["7d", "24h", "30m", "2020-01-01", "2026-11-01T00:00:00Z", "1e400", "9999999999w"]), JUNK)
    if name in ("tags_any", "tags_all"):
        return st.one_of(st.none(), st.lists(st.sampled_from(["team:a", "batch:0", "x" * 300]), max_size=4), JUNK)
    if name == "status":
        return st.one_of(st.none(), st.sampled_from(["running", "completed", "failed"]), JUNK)
    if name == "stream":
        return st.one_of(st.sampled_from(["stdout", "stderr"]), JUNK)
    if name in ("namespace", "user", "type"):
        return st.one_of(st.none(), st.sampled_from(["user:tester", "tester", "ndarray", "dict"]), JUNK)
    if name.startswith("include_"):
        return st.one_of(st.booleans(), JUNK)
    # limits, sizes, counts, attempts
    return st.one_of(st.none(), st.integers(min_value=-5, max_value=5000), st.sampled_from([0, 1, 10**9, 2**63]), JUNK)


def _kwargs(fn: Callable[..., Any], paths: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    required, optional = {}, {}
    for name, param in inspect.signature(fn).parameters.items():
        target = required if param.default is inspect.Parameter.empty else optional
        target[name] = _strategy(name, paths)
    return st.fixed_dictionaries(required, optional=optional)


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return within(TIME_LIMIT_S, lambda: fn(**kwargs), f"{fn.__name__}({_short(kwargs)})")


def _short(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}"[:120] for k, v in kwargs.items())


def _explicit(name: str, runs: Any, paths: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The issue's own inputs, tried first on every run (hypothesis @example)."""
    task = paths["task"][0]
    return {
        "list_runs": [{"flow": "F" * 100_000}, {"flow": "HelloFlow", "tags_any": 5}, {"flow": "HelloFlow", "since": 1e300}],
        "task_logs": [{"task": task, "grep": "a{4294967296}"}, {"task": task, "grep": "(" * 999}, {"task": task + "/_meta/_self.json"}],
        "failed_tasks": [{"run": runs.wide, "cursor": "eyJrIjoiZmFpbGVkX3Rhc2tzIiwicSI6IngiLCJpIjoxZTMwfQ"}],
        "search_artifacts": [{"flow": "ArtifactFlow", "name": "*" * 100_000}],
    }.get(name, [])


@pytest.mark.parametrize(
    "fn",
    ma.FUNCTIONS,
    ids=[fn.__name__ for fn in ma.FUNCTIONS],
)
def test_typed_errors_bounded_answers(fn: Callable[..., Any], local_runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", local_runs.root)
    paths = _pathspecs(local_runs)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,  # the time limit is enforced by _call, hangs included
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_kwargs(fn, paths))
    def check(kwargs: dict[str, Any]) -> None:
        _one(fn, kwargs)

    for kwargs in _explicit(fn.__name__, local_runs, paths):
        check = example(kwargs)(check)
    check()


def _one(fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """One input: an answer under the size bound, or an AgentError with a bounded hint."""
    try:
        result = _call(fn, kwargs)
    except ma.AgentError as exc:
        assert exc.message and exc.hint, f"{type(exc).__name__} without a hint: {exc}"
        return  # its length is test_error_text_is_bounded's business
    except Exception as exc:
        raise AssertionError(f"{fn.__name__}({_short(kwargs)}) raised untyped {type(exc).__name__}: {str(exc)[:300]}") from exc
    size = len(result.model_dump_json())
    assert size <= MAX_ANSWER, f"{fn.__name__} answered {size} bytes"


# --------------------------------------------------------------------------- error text
@pytest.mark.parametrize(
    "fn",
    ma.FUNCTIONS,
    ids=[fn.__name__ for fn in ma.FUNCTIONS],
)
def test_error_text_is_bounded(fn: Callable[..., Any]) -> None:
    """A huge argument is named in the error, not copied into it."""
    huge = "x" * 100_000
    params = inspect.signature(fn).parameters
    kwargs = {name: huge for name, p in params.items() if p.default is inspect.Parameter.empty}
    try:
        _call(fn, kwargs)
    except ma.AgentError as exc:
        assert len(str(exc)) < 2_000, f"{type(exc).__name__} text of {len(str(exc))} characters"
