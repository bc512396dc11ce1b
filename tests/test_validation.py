"""Every bad input ends in the right typed error, with a hint, before any storage is touched.

No real runs here: the configured local root is empty, so a function that read
anything before validating its input would raise NotFound instead.
"""

from __future__ import annotations

import pytest
from helpers import expect_error, raw_cursor

import metaflow_agent as ma

H = "HelloFlow/1"  # shapes only: nothing is read
T = "HelloFlow/1/start/2"


@pytest.fixture(autouse=True)
def empty_root(tmp_path, monkeypatch):
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path))


@pytest.fixture
def hello() -> str:
    return H


@pytest.fixture
def start_task() -> str:
    return T






# --- malformed pathspecs ------------------------------------------------------------
@pytest.mark.parametrize(
    "fn, value",
    [
        (ma.list_runs, "HelloFlow/1"),
        (ma.list_runs, "Hello-Flow"),
        (ma.list_runs, "1Flow"),
        (ma.list_runs, ""),
        (ma.list_runs, "   "),
        (ma.list_runs, None),
        (ma.list_runs, 42),
        (ma.run_summary, "HelloFlow"),
        (ma.run_summary, "HelloFlow/1/start"),
        (ma.run_summary, "HelloFlow/a b"),
        (ma.run_summary, "HelloFlow/1;rm"),
        (ma.run_summary, "HelloFlow//1"),
        (ma.failed_tasks, "HelloFlow/1/start/2"),
        (ma.task_logs, "HelloFlow/1/start"),
        (ma.task_logs, "HelloFlow/1/start/2/3"),
        (ma.task_logs, "HelloFlow/1/sta-rt/2"),
        (ma.task_logs, "HelloFlow/1/start/2 3"),
        (ma.list_artifacts, "HelloFlow/1"),
        (ma.list_artifacts, "HelloFlow/1/start/*"),
        (ma.search_artifacts, "HelloFlow/1"),
    ],
)
def test_malformed_pathspec(fn, value):
    kwargs = {"name": "x"} if fn is ma.search_artifacts else {}
    err = expect_error(ma.BadPathspec, fn, value, **kwargs)
    assert err.code == "bad_pathspec"


def test_malformed_pathspec_in_preview_and_compare(hello):
    expect_error(ma.BadPathspec, ma.artifact_preview, hello, "greeting")
    expect_error(ma.BadPathspec, ma.compare_runs, hello, "HelloFlow")
    expect_error(ma.BadPathspec, ma.compare_runs, "Hello Flow/1", hello)


def test_hint_shows_the_expected_form():
    err = expect_error(ma.BadPathspec, ma.task_logs, "HelloFlow/1/start")
    assert "MyFlow/12/train/345" in err.hint



# --- patterns ----------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "*start", "a{2,1}", "(?P<x", ""])
def test_bad_regex(start_task, pattern):
    err = expect_error(ma.BadPattern, ma.task_logs, start_task, grep=pattern)
    assert err.code == "bad_pattern"


def test_overlong_regex(start_task):
    expect_error(ma.BadPattern, ma.task_logs, start_task, grep="a" * 1001)


# --- limits ------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [0, -1, 10**9, 501, "5", 5.0, True, None])
def test_list_runs_limit_out_of_range(limit):
    err = expect_error(ma.BadLimit, ma.list_runs, "HelloFlow", limit=limit)
    assert "between 1 and 500" in err.hint


@pytest.mark.parametrize(
    "call",
    [
        lambda h, t: ma.failed_tasks(h, limit=0),
        lambda h, t: ma.failed_tasks(h, limit=10**6),
        lambda h, t: ma.failed_tasks(h, limit="all"),
        lambda h, t: ma.task_logs(t, tail=0),
        lambda h, t: ma.task_logs(t, tail=10**6),
        lambda h, t: ma.task_logs(t, head=-3),
        lambda h, t: ma.task_logs(t, head="10"),
        lambda h, t: ma.task_logs(t, grep="x", max_matches=0),
        lambda h, t: ma.task_logs(t, grep="x", max_matches=10**6),
        lambda h, t: ma.task_logs(t, grep="x", context=-1),
        lambda h, t: ma.task_logs(t, grep="x", context=1000),
        lambda h, t: ma.task_logs(t, grep="x", max_bytes=10),
        lambda h, t: ma.task_logs(t, tail=5, max_bytes=1 << 40),
        lambda h, t: ma.task_logs(t, attempt=-1),
        lambda h, t: ma.task_logs(t, attempt="0"),
        lambda h, t: ma.list_artifacts(t, limit=0),
        lambda h, t: ma.list_artifacts(t, limit=10**6),
        lambda h, t: ma.list_artifacts(t, attempt=1000),
        lambda h, t: ma.artifact_preview(t, "greeting", max_bytes=0),
        lambda h, t: ma.artifact_preview(t, "greeting", max_chars=5),
        lambda h, t: ma.search_artifacts("HelloFlow", name="x", limit=0),
        lambda h, t: ma.search_artifacts("HelloFlow", name="x", runs=0),
        lambda h, t: ma.search_artifacts("HelloFlow", name="x", runs=10**6),
    ],
)
def test_limits_out_of_range(hello, start_task, call):
    expect_error(ma.BadLimit, call, hello, start_task)



@pytest.mark.parametrize("cursor", ["garbage!!", "", "e30", raw_cursor({"k": "failed_tasks", "i": 1}), raw_cursor(["list_runs"])])
def test_list_runs_foreign_or_corruptraw_cursor(cursor):
    err = expect_error(ma.BadCursor, ma.list_runs, "HelloFlow", cursor=cursor)
    assert "next_cursor" in err.hint



@pytest.mark.parametrize("state", [{"i": "abc"}, {"i": -5}, {"i": None}, {"i": True}, {}])
def test_offset_cursor_with_a_corrupt_position(hello, start_task, state):
    expect_error(ma.BadCursor, ma.failed_tasks, hello, cursor=raw_cursor({"k": "failed_tasks", **state}))
    expect_error(ma.BadCursor, ma.list_artifacts, start_task, cursor=raw_cursor({"k": "list_artifacts", **state}))



# --- enumerations and times ------------------------------------------------------------
@pytest.mark.parametrize("status", ["done", "FAILED", "success", "", 1])
def test_bad_status(status):
    err = expect_error(ma.BadInput, ma.list_runs, "HelloFlow", status=status)
    assert "completed" in err.hint


@pytest.mark.parametrize("value", ["yesterday", "3 fortnights", "24", "2026-13-45", "-1d", "1y", [], {}])
def test_bad_time(value):
    for kw in ("since", "until"):
        err = expect_error(ma.BadInput, ma.list_runs, "HelloFlow", **{kw: value})
        assert kw in err.message and "ISO-8601" in err.hint
    expect_error(ma.BadInput, ma.search_artifacts, "HelloFlow", name="x", since=value)


def test_bad_stream_and_modes(start_task):
    expect_error(ma.BadInput, ma.task_logs, start_task, stream="all")
    expect_error(ma.BadInput, ma.task_logs, start_task, tail=5, head=5)
    expect_error(ma.BadInput, ma.task_logs, start_task, tail=5, grep="x")


def test_bad_tags():
    expect_error(ma.BadInput, ma.list_runs, "HelloFlow", tags_any=[""])
    expect_error(ma.BadInput, ma.list_runs, "HelloFlow", tags_all=["ok", 3])


def test_search_needs_a_name():
    expect_error(ma.BadInput, ma.search_artifacts, "HelloFlow", name="")


# --- path escape -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda h: ma.run_summary("HelloFlow/.."),
        lambda h: ma.failed_tasks("HelloFlow/.."),
        lambda h: ma.run_summary("HelloFlow/."),
        lambda h: ma.task_logs(f"{h}/start/.."),
        lambda h: ma.task_logs(f"{h}/start/."),
        lambda h: ma.list_artifacts(f"{h}/start/.."),
        lambda h: ma.list_artifacts(f"{h}/start/."),
        lambda h: ma.artifact_preview(f"{h}/start/..", "greeting"),
        lambda h: ma.task_logs("HelloFlow/../start/1"),
        lambda h: ma.compare_runs(h, "HelloFlow/.."),
    ],
)
def test_path_escape(hello, call):
    err = expect_error(ma.PathEscape, call, hello)
    assert isinstance(err, ma.BadInput) and err.code == "path_escape"


# --- the tree ------------------------------------------------------------------------
def test_error_tree():
    for cls in (ma.BadPathspec, ma.BadPattern, ma.BadLimit, ma.BadCursor, ma.PathEscape):
        assert issubclass(cls, ma.BadInput)
    for cls in (ma.BadInput, ma.NotFound, ma.TooLarge, ma.BackendError):
        assert issubclass(cls, ma.AgentError)
    for cls in (ma.ServiceUnavailable, ma.ServiceProtocolError):
        assert issubclass(cls, ma.BackendError)
    codes = [c.code for c in (ma.AgentError, ma.BadInput, ma.BadPathspec, ma.BadPattern, ma.BadLimit, ma.BadCursor,
                              ma.PathEscape, ma.NotFound, ma.TooLarge, ma.BackendError, ma.ServiceUnavailable,
                              ma.ServiceProtocolError)]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("since", ["9999999999d", "3000000w", float("nan"), float("inf")])
def test_out_of_range_times_are_bad_time(since):
    with pytest.raises(ma.BadTime) as exc:
        ma.list_runs("HelloFlow", since=since)
    assert exc.value.hint


@pytest.mark.parametrize("cursor", [123, ["x"], "eyJrIjoibGlzdF9ydW5zIn0"])
def test_odd_cursors_are_bad_cursor_or_input(cursor):
    with pytest.raises(ma.BadInput) as exc:
        ma.list_runs("HelloFlow", cursor=cursor)
    assert exc.value.hint


@pytest.mark.parametrize("kwargs", [{"min_size": "10"}, {"max_size": -1}, {"type": ""}, {"min_size": True}])
def test_bad_search_filters(kwargs):
    with pytest.raises(ma.BadInput):
        ma.search_artifacts("ArtifactFlow", name="*", **kwargs)
