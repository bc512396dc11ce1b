"""task_logs on real local logs, checked against the Client's task.stdout/stderr.

The Client loads the whole log; here that is fine (it is the truth), the
library must not: tail reads a few KB of a ~10 MB log."""

from __future__ import annotations

import os
import re

import pytest

import metaflow_agent as ma

KB = 1024
MB = 1024 * KB


@pytest.fixture(scope="module")
def noisy(local_runs) -> str:
    return f"{local_runs.log}/noisy/{_only_task(local_runs.root, local_runs.log, 'noisy')}"


def _only_task(root: str, run: str, step: str) -> str:
    folder = os.path.join(root, ".metaflow", run, step)
    (task,) = [n for n in os.listdir(folder) if not n.startswith("_")]
    return task


@pytest.fixture(scope="module")
def client_stdout(noisy) -> list[str]:
    """The Client's whole stdout, each line cut as task_logs documents (500 chars + a marker)."""
    from metaflow import Task, namespace

    namespace(None)
    try:
        return [ln if len(ln) <= 500 else f"{ln[:500]}…[+{len(ln) - 500} chars]" for ln in Task(noisy).stdout.splitlines()]
    finally:
        from metaflow import default_namespace

        default_namespace()


def _texts(log: ma.TaskLog) -> list[str]:
    return [ln.text for ln in log.lines]


def _disk_size(root: str, pathspec: str, attempt: int, stream: str) -> int:
    base = os.path.join(root, ".metaflow", pathspec)
    return sum(
        os.path.getsize(os.path.join(base, f"{attempt}.{src}_{stream}.log"))
        for src in ("runtime", "task")
        if os.path.exists(os.path.join(base, f"{attempt}.{src}_{stream}.log"))
    )


# --- tail ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 50, 700])
def test_tail_equals_client(noisy, client_stdout, n):
    got = ma.task_logs(noisy, tail=n)
    assert got.mode == "tail" and got.stream == "stdout" and got.attempt == 0
    assert _texts(got) == client_stdout[-n:]
    assert all(ln.n is None and not ln.match for ln in got.lines)
    assert not got.truncated


def test_default_is_tail_50(noisy, client_stdout):
    got = ma.task_logs(noisy)
    assert got.mode == "tail" and _texts(got) == client_stdout[-50:]
    assert _texts(got)[-1] == "LAST LINE OF STDOUT"


def test_tail_reads_a_sliver_of_a_big_log(local_runs, noisy):
    got = ma.task_logs(noisy, tail=20)
    assert got.log_size == _disk_size(local_runs.root, noisy, 0, "stdout")
    assert got.log_size > 5 * MB
    assert got.bytes_read <= 128 * KB
    assert got.cost.datastore_bytes <= 128 * KB
    assert got.cost.metadata_requests == 0


def test_tail_over_the_byte_budget_says_truncated(noisy, client_stdout):
    got = ma.task_logs(noisy, tail=5000, max_bytes=64 * KB)
    assert got.truncated
    assert got.notes and "max_bytes" in got.notes[0]
    assert got.bytes_read <= 64 * KB
    assert 0 < len(got.lines) < 5000
    assert _texts(got) == client_stdout[-len(got.lines):]  # what it did return is the true tail


# --- head ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 5, 400])
def test_head_equals_client(noisy, client_stdout, n):
    got = ma.task_logs(noisy, head=n)
    assert got.mode == "head"
    assert _texts(got) == client_stdout[:n]
    assert [ln.n for ln in got.lines] == list(range(1, n + 1))
    assert got.bytes_read <= 128 * KB and not got.truncated


def test_head_over_the_byte_budget_says_truncated(noisy, client_stdout):
    got = ma.task_logs(noisy, head=5000, max_bytes=32 * KB)
    assert got.truncated and got.bytes_read <= 32 * KB
    assert _texts(got) == client_stdout[: len(got.lines)]


def test_small_log_head_and_tail_whole(local_runs, client_ns):
    from metaflow import Run

    client_ns(None)
    for task in Run(local_runs.retry)["work"]:
        lines = task.stdout.splitlines()
        assert lines, task.pathspec
        assert _texts(ma.task_logs(task.pathspec, head=100)) == lines
        assert _texts(ma.task_logs(task.pathspec, tail=100)) == lines


# --- grep ---------------------------------------------------------------------
def _expected_grep(lines: list[str], pattern: str, context: int, max_matches: int) -> list[tuple[int, str, bool]]:
    rx = re.compile(pattern)
    hits = [i for i, ln in enumerate(lines) if rx.search(ln)][:max_matches]
    keep: set[int] = set()
    for i in hits:
        keep.update(range(max(0, i - context), min(len(lines), i + context + 1)))
    return [(i + 1, lines[i], i in hits) for i in sorted(keep)]


@pytest.mark.parametrize(
    "pattern, context",
    [("ERROR", 0), ("ERROR", 1), ("ERROR", 3), (r"^line 00100[0-4] ", 2), ("LAST LINE", 2), (r"line 0599(98|99)", 1)],
)
def test_grep_equals_client(noisy, client_stdout, pattern, context):
    got = ma.task_logs(noisy, grep=pattern, context=context, max_matches=50)
    assert got.mode == "grep"
    assert [(ln.n, ln.text, ln.match) for ln in got.lines] == _expected_grep(client_stdout, pattern, context, 50)
    assert not got.truncated
    assert got.bytes_read == got.log_size  # scanned it all, within the default budget


def test_grep_error_lines(noisy):
    got = ma.task_logs(noisy, grep="ERROR", context=0)
    assert [ln.text for ln in got.lines] == ["ERROR something went wrong at line 1234", "ERROR something went wrong at line 30000"]
    assert all(ln.match for ln in got.lines)


def test_grep_max_matches_truncates(noisy, client_stdout):
    got = ma.task_logs(noisy, grep=r"^line \d+", context=0, max_matches=5)
    assert got.truncated
    assert any("max_matches" in n for n in got.notes)
    assert [(ln.n, ln.text) for ln in got.lines if ln.match] == [
        (i + 1, t) for i, t in enumerate(client_stdout) if re.search(r"^line \d+", t)
    ][:5]
    # It stopped early: far less than the whole log was read.
    assert got.bytes_read < got.log_size / 2


def test_grep_max_matches_with_context(noisy, client_stdout):
    got = ma.task_logs(noisy, grep="ERROR", context=2, max_matches=1)
    assert got.truncated
    assert [ln.text for ln in got.lines if ln.match] == ["ERROR something went wrong at line 1234"]
    i = client_stdout.index("ERROR something went wrong at line 1234")
    assert [ln.text for ln in got.lines] == client_stdout[i - 2 : i + 3]


def test_grep_byte_budget_stops_early_and_says_so(noisy, client_stdout):
    assert client_stdout[-1] == "LAST LINE OF STDOUT"
    got = ma.task_logs(noisy, grep="LAST LINE", max_bytes=1 * MB)
    assert got.truncated
    assert got.lines == []  # the match sits past the budget
    assert got.bytes_read <= 1 * MB < got.log_size
    assert got.cost.datastore_bytes <= 1 * MB + 64 * KB
    assert any("max_bytes" in n and "not scanned" in n for n in got.notes)
    # With enough budget it is found.
    full = ma.task_logs(noisy, grep="LAST LINE", max_bytes=64 * MB)
    assert [ln.text for ln in full.lines if ln.match] == ["LAST LINE OF STDOUT"] and not full.truncated


def test_grep_budget_still_returns_matches_before_the_cut(noisy, client_stdout):
    got = ma.task_logs(noisy, grep="ERROR", context=0, max_bytes=1 * MB)
    # line 1234 is within the first MB, line 30000 is not.
    assert [ln.text for ln in got.lines] == ["ERROR something went wrong at line 1234"]
    assert got.truncated


# --- streams and attempts -------------------------------------------------------
def test_stderr_stream(local_runs, noisy, client_ns):
    from metaflow import Task

    client_ns(None)
    truth = Task(noisy).stderr.splitlines()
    got = ma.task_logs(noisy, stream="stderr")
    assert got.stream == "stderr"
    assert _texts(got) == truth[-50:]
    assert "stderr marker" in _texts(got)
    assert got.log_size == _disk_size(local_runs.root, noisy, 0, "stderr")
    grep = ma.task_logs(noisy, stream="stderr", grep="marker")
    assert [ln.text for ln in grep.lines if ln.match] == ["stderr marker"]


def test_attempt_selection(local_runs, client_ns):
    from metaflow import Task

    client_ns(None)
    failed = ma.failed_tasks(local_runs.retry)
    ps = failed.failed[0].pathspec
    latest = ma.task_logs(ps)
    assert latest.attempt == 1 == Task(ps).current_attempt
    assert _texts(latest) == Task(ps).stdout.splitlines()
    for attempt in (0, 1):
        truth = Task(ps, attempt=attempt)
        out = ma.task_logs(ps, attempt=attempt)
        assert out.attempt == attempt
        assert _texts(out) == truth.stdout.splitlines()
        assert _texts(out) == [f"attempt {attempt} item 1"]
        err = ma.task_logs(ps, attempt=attempt, stream="stderr", tail=500)
        assert _texts(err) == truth.stderr.splitlines()
    # The first attempt's traceback is in its stderr.
    hit = ma.task_logs(ps, attempt=0, stream="stderr", grep="RETRY_BOOM", context=0)
    assert any(ln.match and "RuntimeError: RETRY_BOOM" in ln.text for ln in hit.lines)
    with pytest.raises(ma.NotFound) as exc:
        ma.task_logs(ps, attempt=2)
    assert exc.value.hint


def test_crashed_task_log(local_runs, client_ns):
    from metaflow import Run

    client_ns(None)
    (task,) = list(Run(local_runs.crash)["die"])
    got = ma.task_logs(task.pathspec)
    assert _texts(got) == task.stdout.splitlines()
    assert "about to be killed" in _texts(got)


def test_grep_matches_past_the_line_cut(noisy):
    """A match beyond the 500 characters returned of a line is still found."""
    got = ma.task_logs(noisy, grep="CUDA_OOM_MARKER", context=0)
    assert [ln.match for ln in got.lines] == [True]
    assert got.lines[0].text.startswith("LONG yyy") and got.lines[0].text.endswith("chars]")
    assert len(got.lines[0].text) < 600
