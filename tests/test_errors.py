"""Inputs that are well formed but name nothing, or cursors of another query: typed errors on real runs."""

from __future__ import annotations

import pytest
from helpers import expect_error, raw_cursor

import metaflow_agent as ma


@pytest.fixture
def hello(local_runs) -> str:
    return local_runs.hello_ok[0]


@pytest.fixture
def start_task(hello, local_runs) -> str:
    import os

    folder = os.path.join(local_runs.root, ".metaflow", hello, "start")
    (task,) = [n for n in os.listdir(folder) if not n.startswith("_")]
    return f"{hello}/start/{task}"


# --- unknown objects -------------------------------------------------------------------
def test_unknown_flow(local_runs):
    for fn, arg in ((ma.list_runs, "NoSuchFlow"), (ma.run_summary, "NoSuchFlow/1"), (ma.failed_tasks, "NoSuchFlow/1")):
        err = expect_error(ma.NotFound, fn, arg)
        assert err.code == "not_found"
    expect_error(ma.NotFound, ma.search_artifacts, "NoSuchFlow", name="x")
    expect_error(ma.NotFound, ma.task_logs, "NoSuchFlow/1/start/1")
    expect_error(ma.NotFound, ma.list_artifacts, "NoSuchFlow/1/start/1")


def test_unknown_run(hello):
    for fn in (ma.run_summary, ma.failed_tasks):
        err = expect_error(ma.NotFound, fn, "HelloFlow/999999")
        assert "list_runs" in err.hint
    expect_error(ma.NotFound, ma.compare_runs, hello, "HelloFlow/999999")
    expect_error(ma.NotFound, ma.compare_runs, "HelloFlow/999999", hello)
    expect_error(ma.NotFound, ma.task_logs, "HelloFlow/999999/start/1")
    expect_error(ma.NotFound, ma.list_artifacts, "HelloFlow/999999/start/1")


def test_unknown_step(hello):
    for fn in (ma.task_logs, ma.list_artifacts):
        err = expect_error(ma.NotFound, fn, f"{hello}/nostep/1")
        assert "step" in err.message
    expect_error(ma.NotFound, ma.artifact_preview, f"{hello}/nostep/1", "greeting")


def test_unknown_task(hello):
    for fn in (ma.task_logs, ma.list_artifacts):
        err = expect_error(ma.NotFound, fn, f"{hello}/start/999999")
        assert "task" in err.message
    expect_error(ma.NotFound, ma.artifact_preview, f"{hello}/start/999999", "greeting")


def test_unknown_artifact(start_task):
    err = expect_error(ma.NotFound, ma.artifact_preview, start_task, "no_such_artifact")
    assert "greeting" in err.hint  # the hint lists what is there
    expect_error(ma.BadInput, ma.artifact_preview, start_task, "")


def test_unknown_attempt(start_task):
    expect_error(ma.NotFound, ma.task_logs, start_task, attempt=7)
    expect_error(ma.NotFound, ma.list_artifacts, start_task, attempt=7)
    expect_error(ma.NotFound, ma.artifact_preview, start_task, "greeting", attempt=7)


# --- cursors -------------------------------------------------------------------------
def test_cursor_from_another_function(local_runs, hello, start_task):
    runs_cursor = ma.list_runs("HelloFlow", limit=1, namespace=None).next_cursor
    assert runs_cursor
    expect_error(ma.BadCursor, ma.failed_tasks, hello, cursor=runs_cursor)
    expect_error(ma.BadCursor, ma.list_artifacts, start_task, cursor=runs_cursor)
    expect_error(ma.BadCursor, ma.search_artifacts, "HelloFlow", name="x", cursor=runs_cursor)
    art_cursor = ma.list_artifacts(start_task, include_private=True, limit=1).next_cursor
    assert art_cursor
    expect_error(ma.BadCursor, ma.list_runs, "HelloFlow", cursor=art_cursor)
    expect_error(ma.BadCursor, ma.failed_tasks, hello, cursor=art_cursor)


def test_list_runs_cursor_from_other_filters(local_runs):
    cursor = ma.list_runs("HelloFlow", limit=1, namespace=None).next_cursor
    expect_error(ma.BadInput, ma.list_runs, "HelloFlow", limit=1, tags_any=["team:a"], namespace=None, cursor=cursor)
    expect_error(ma.BadInput, ma.list_runs, "HelloFlow", limit=1, cursor=raw_cursor({"k": "list_runs", "q": "nope", "ts": 1, "id": "1"}))


