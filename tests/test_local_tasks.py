"""failed_tasks on real local runs, checked against attempt_ok metadata via the Client."""

from __future__ import annotations

import pytest

import metaflow_agent as ma


def _by_outcome(truth: dict, outcome: str) -> dict[str, object]:
    return {o.pathspec: o for tasks in truth.values() for o in tasks.values() if o.outcome == outcome}


def _retried(truth: dict) -> dict[str, object]:
    return {o.pathspec: o for tasks in truth.values() for o in tasks.values() if o.outcome == "completed" and o.failed_attempts}


def _all(run: str, **kw) -> ma.FailedTaskList:
    return ma.failed_tasks(run, limit=1000, **kw)


def test_wide_run_failures_equal_client(local_runs, client_outcomes):
    truth = client_outcomes(local_runs.wide)
    failed, crashed = _by_outcome(truth, "failed"), _by_outcome(truth, "crashed")
    assert failed, "the wide run must have failed tasks"
    got = _all(local_runs.wide)
    assert {t.pathspec for t in got.failed if t.status == "failed"} == set(failed)
    assert {t.pathspec for t in got.failed if t.status == "crashed"} == set(crashed)
    assert not [t for t in got.failed if t.status == "retried_ok"]
    assert got.total_failed == len(failed)
    assert got.total_crashed == len(crashed)
    assert got.total_retried_ok == 0
    assert not got.truncated and got.next_cursor is None
    for t in got.failed:
        o = failed.get(t.pathspec) or crashed[t.pathspec]
        assert t.attempts == o.attempts
        assert t.failed_attempts == o.failed_attempts
        assert t.step == "work" and t.pathspec.endswith(f"/work/{t.task_id}")
    # Listed in task order.
    ids = [int(t.task_id) for t in got.failed]
    assert ids == sorted(ids)


def test_wide_run_exceptions_equal_client(local_runs, client_ns):
    from metaflow import Task

    client_ns(None)
    got = [t for t in _all(local_runs.wide).failed if t.status == "failed"]
    for t in got:
        task = Task(t.pathspec)
        exc = task.exception
        assert t.exception_type == exc.type.split(".")[-1] == "ValueError"
        assert t.message == exc.exception
        # The foreach position recorded by the runtime, and the flow's own message.
        assert t.foreach_index == f"items={task.index}"
        assert t.message == f"WIDE_BOOM item={task.index}"
        assert t.return_code is None


def test_traceback_is_bounded_and_ends_with_the_exception(local_runs):
    for t in _all(local_runs.wide).failed:
        if t.status != "failed":
            continue
        assert t.traceback is not None
        assert len(t.traceback) <= 2000
        lines = t.traceback.splitlines()
        assert len(lines) <= 15
        assert lines[-1] == f"ValueError: {t.message}"
        assert any("wide_flow.py" in ln for ln in lines)


def test_crashed_ones_have_no_exception(local_runs):
    for t in _all(local_runs.wide).failed:
        if t.status == "crashed":
            assert t.exception_type is None
            assert t.message and "without recording an outcome" in t.message


def test_retried_task_is_retried_ok_not_failed(local_runs, client_outcomes, client_ns):
    from metaflow import Task

    truth = client_outcomes(local_runs.retry)
    retried = _retried(truth)
    assert len(retried) == 1
    assert not _by_outcome(truth, "failed") and not _by_outcome(truth, "crashed")
    got = ma.failed_tasks(local_runs.retry)
    assert got.total_failed == 0 and got.total_crashed == 0 and got.total_retried_ok == 1
    (t,) = got.failed
    o = retried[t.pathspec]
    assert t.status == "retried_ok"
    assert t.attempts == o.attempts == 2
    assert t.failed_attempts == o.failed_attempts == [0]
    # The exception of the failed attempt, not of the (successful) latest one.
    exc = Task(t.pathspec, attempt=0).exception
    assert t.exception_type == "RuntimeError" == exc.type.split(".")[-1]
    assert t.message == exc.exception
    assert t.foreach_index == "items=1"
    # And the run is completed, the step counts it as completed.
    summary = ma.run_summary(local_runs.retry)
    assert summary.status == "completed" and summary.first_failure is None
    work = next(s for s in summary.steps if s.step == "work")
    assert work.retried_ok == 1 and work.failed == 0 and work.completed == work.tasks


def test_include_retried_false_hides_it(local_runs):
    got = ma.failed_tasks(local_runs.retry, include_retried=False)
    # Hidden from the list, still counted: the agent learns a retry happened.
    assert got.failed == [] and got.total_retried_ok == 1 and not got.truncated


def test_sigkilled_task_is_crashed(local_runs, client_outcomes):
    truth = client_outcomes(local_runs.crash)
    crashed = _by_outcome(truth, "crashed")
    assert list(crashed) == [f"{local_runs.crash}/die/{next(iter(truth['die']))}"]
    got = ma.failed_tasks(local_runs.crash)
    (t,) = got.failed
    assert t.pathspec in crashed
    assert t.status == "crashed"
    assert t.return_code == -9
    assert t.attempts == 1 and t.failed_attempts == [0]
    assert t.exception_type is None and t.traceback is None
    assert "-9" in t.message
    assert got.total_crashed == 1 and got.total_failed == 0


def test_failed_end_step(local_runs, client_ns):
    from metaflow import Task

    client_ns(None)
    got = ma.failed_tasks(local_runs.hello_failed)
    (t,) = got.failed
    assert t.step == "end" and t.status == "failed"
    exc = Task(t.pathspec).exception
    assert t.exception_type == "KeyError"
    assert t.message == exc.exception
    assert "HELLO_END_FAIL" in t.message


def test_successful_run_has_none(local_runs):
    for ps in (*local_runs.hello_ok, local_runs.art_a, local_runs.log):
        got = ma.failed_tasks(ps)
        assert got.failed == [] and got.total_failed == got.total_crashed == got.total_retried_ok == 0


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_covers_every_failure_once(local_runs, limit):
    everything = [t.pathspec for t in _all(local_runs.wide).failed]
    seen, cursor, pages = [], None, 0
    while True:
        page = ma.failed_tasks(local_runs.wide, limit=limit, cursor=cursor)
        pages += 1
        assert len(page.failed) <= limit
        assert page.total_failed + page.total_crashed == len(everything)  # totals are for the run, not the page
        seen += [t.pathspec for t in page.failed]
        if not page.truncated:
            assert page.next_cursor is None
            break
        assert page.next_cursor
        cursor = page.next_cursor
    assert seen == everything
    assert pages == -(-len(everything) // limit)



def test_brief_detail_drops_only_the_tracebacks(local_runs):
    full, brief = ma.failed_tasks(local_runs.wide), ma.failed_tasks(local_runs.wide, detail="brief")
    assert any(t.traceback for t in full.failed)
    assert all(t.traceback is None for t in brief.failed)
    assert [t.model_copy(update={"traceback": None}) for t in full.failed] == brief.failed
    assert len(brief.model_dump_json()) < len(full.model_dump_json()) / 2
    with pytest.raises(ma.BadInput, match="detail"):
        ma.failed_tasks(local_runs.wide, detail="short")
