"""The agent questions of issue 10 on real local runs, each answer checked against the plain
Client API on the same runs: flows, run statistics, values across runs, diagnosis, a run's
tasks, both log streams."""

from __future__ import annotations

import statistics
from datetime import timezone
from typing import Any

import pytest
from helpers import client_run_state

import metaflow_agent as ma


@pytest.fixture
def client(local_runs, client_ns) -> Any:
    import metaflow

    client_ns(None)
    return metaflow


def _duration(run) -> float | None:
    finished = run.finished_at
    return (finished - run.created_at).total_seconds() if finished else None


def test_list_flows_equals_client(local_runs, client):
    got = ma.list_flows(namespace=None)
    names = {f.flow for f in got.flows}
    assert names == {f.id for f in client.Metaflow().flows}
    created = [f.created_at for f in got.flows]
    assert created == sorted(created, reverse=True)  # most recently run first
    for row in got.flows:
        latest = client.Flow(row.flow).latest_run
        assert row.latest_run == latest.pathspec
        assert row.status == client_run_state(latest)
        assert row.steps == len([s for s in latest if s.id != "_parameters"])
    assert not got.truncated and got.cost.metadata_requests == 0


def test_run_stats_equals_client(local_runs, client):
    runs = list(client.Flow("HelloFlow").runs())
    states = [client_run_state(r) for r in runs]
    got = ma.run_stats("HelloFlow", namespace=None)
    (stats,) = got.flows
    assert stats.examined == len(runs) and stats.complete
    assert stats.counts == {s: states.count(s) for s in ("running", "completed", "failed", "crashed", "unknown")}
    assert stats.success_rate == round(states.count("completed") / len(runs), 4)
    finished = sum(states.count(s) for s in ("completed", "failed", "crashed"))
    assert stats.finished_success_rate == round(states.count("completed") / finished, 4)
    durations = sorted(_duration(r) for r, s in zip(runs, states) if s == "completed")
    assert stats.duration_s["n"] == len(durations)
    assert stats.duration_s["min"] == pytest.approx(durations[0], abs=0.2)
    assert stats.duration_s["median"] == pytest.approx(statistics.median(durations), abs=0.2)
    assert stats.duration_s["max"] == pytest.approx(durations[-1], abs=0.2)


def test_run_stats_last_n_and_several_flows(local_runs, client):
    got = ma.run_stats(["HelloFlow", "ArtifactFlow"], last=2, per_step=True, namespace=None)
    assert [s.flow for s in got.flows] == ["HelloFlow", "ArtifactFlow"] and got.window == "last 2 runs"
    for stats in got.flows:
        newest = sorted(client.Flow(stats.flow).runs(), key=lambda r: r.created_at, reverse=True)[:2]
        assert stats.examined == 2
        assert sum(stats.counts.values()) == 2
        assert stats.counts["completed"] == sum(client_run_state(r) == "completed" for r in newest)
        assert set(stats.steps) == {s.id for r in newest for s in r if s.id != "_parameters"}
        assert all(v["runs"] >= 1 and "median_s" in v for v in stats.steps.values())


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_artifact_values_equal_client(local_runs, client, order):
    got = ma.artifact_values("ArtifactFlow", "score", runs=2, order=order, namespace=None)
    runs = sorted(client.Flow("ArtifactFlow").runs(), key=lambda r: r.created_at, reverse=order == "newest")
    assert [v.run for v in got.values] == [r.pathspec for r in runs[-2:]] if order == "oldest" else [r.pathspec for r in runs[:2]]
    for row in got.values:
        assert row.value == client.Run(row.run).data.score and row.note is None
        assert row.task == client.Run(row.run)["end"].task.pathspec
    big = ma.artifact_values("ArtifactFlow", "blob", runs=1, namespace=None).values[0]
    assert big.value is None and big.size > 1_000_000 and "too large" in big.note
    opaque = ma.artifact_values("ArtifactFlow", "opaque", runs=1, namespace=None).values[0]
    assert opaque.value is None and opaque.type == "__main__.Opaque" and "not a plain value" in opaque.note
    missing = ma.artifact_values("HelloFlow", "score", runs=1, namespace=None).values[0]
    assert missing.task is None and missing.value is None and missing.note


def test_diagnose_failed_run(local_runs, client):
    got = ma.diagnose_run(local_runs.hello_failed)
    run = client.Run(local_runs.hello_failed)
    assert got.status == "failed" == client_run_state(run)
    assert got.parameters == {"fail_end": True}
    (failure,) = got.failures
    end = run["end"].task
    assert failure.pathspec == end.pathspec and failure.status == "failed"
    assert failure.exception.startswith("KeyError") and "HELLO_END_FAIL" in failure.exception
    assert end.exception.type.endswith("KeyError")  # the Client agrees
    assert any("HELLO_END_FAIL" in line for line in failure.log)
    assert len(got.model_dump_json()) <= 4096


def test_diagnose_wide_run_fits_its_budget(local_runs, client):
    got = ma.diagnose_run(local_runs.wide)
    assert got.status == "failed"
    assert got.total_failures == 4 and len(got.failures) == 3 and got.truncated
    assert all(f.status == "failed" and f.exception.startswith("ValueError: WIDE_BOOM") for f in got.failures)
    assert len(got.model_dump_json()) <= 4096
    small = ma.diagnose_run(local_runs.wide, max_bytes=1500)
    assert len(small.model_dump_json()) <= 1500 and small.truncated


def test_diagnose_crashed_run(local_runs):
    got = ma.diagnose_run(local_runs.crash)
    assert got.status == "crashed"
    (failure,) = got.failures
    assert failure.status == "crashed" and failure.return_code == -9 and failure.exception is None
    assert any("about to be killed" in line for line in failure.log)


def test_list_tasks_equal_client(local_runs, client_outcomes):
    truth = client_outcomes(local_runs.wide)
    got = ma.list_tasks(local_runs.wide, limit=1000)
    assert not got.truncated
    mine = {t.pathspec: t.state for t in got.tasks}
    theirs = {o.pathspec: o.outcome for step in truth.values() for o in step.values()}
    assert mine == theirs
    assert got.counts["failed"] == 4 and got.counts["completed"] == len(theirs) - 4
    page = ma.list_tasks(local_runs.wide, step="work", state="failed")
    assert {t.pathspec for t in page.tasks} == {p for p, s in theirs.items() if s == "failed"}
    retried = ma.list_tasks(local_runs.retry, step="work")
    assert [t.retried for t in retried.tasks].count(True) == 1 and all(t.state == "completed" for t in retried.tasks)
    assert all(t.duration_s is not None and t.duration_s >= 0 for t in retried.tasks)


def test_both_streams_merged_in_time_order(local_runs, client):
    """Labelled lines of stdout and stderr, in the order of their log timestamps: the Client's own order."""
    task = client.Run(local_runs.log)["noisy"].task
    merged = sorted([(ts, "stdout", line) for ts, line in task.loglines("stdout")] +
                    [(ts, "stderr", line) for ts, line in task.loglines("stderr")], key=lambda x: x[0])
    n = len(merged) - next(i for i, m in enumerate(merged) if m[1] == "stderr") + 3  # reach back past the stderr line
    want = [(stream, line if len(line) <= 500 else f"{line[:500]}…[+{len(line) - 500} chars]") for _, stream, line in merged[-n:]]
    got = ma.task_logs(task.pathspec, stream="both", tail=n, max_bytes=1 << 20)
    assert not got.truncated
    assert [(ln.stream, ln.text) for ln in got.lines] == want
    assert ("stderr", "stderr marker") in want  # both streams are in there
    assert all(ln.n is None for ln in got.lines)


def test_line_count_when_the_log_was_read_whole(local_runs, client):
    task = client.Run(local_runs.hello_failed)["end"].task
    got = ma.task_logs(task.pathspec, stream="stderr", tail=2)
    assert got.line_count == len(task.stderr.splitlines())  # a small log: read whole, counted
    big = ma.task_logs(client.Run(local_runs.log)["noisy"].task.pathspec, tail=2)
    assert big.line_count is None  # only its end was read


def test_run_rows_and_summary_carry_timing(local_runs, client):
    run = client.Run(local_runs.art_a)
    row = next(r for r in ma.list_runs("ArtifactFlow", namespace=None).runs if r.pathspec == run.pathspec)
    assert row.duration_s == pytest.approx(_duration(run), abs=0.2)
    summary = ma.run_summary(run.pathspec)
    assert summary.duration_s == pytest.approx(_duration(run), abs=0.2)
    assert summary.totals.tasks == sum(1 for s in run if s.id != "_parameters" for _ in s)
    finished = run.finished_at.astimezone(timezone.utc).timestamp()
    from datetime import datetime

    assert abs(datetime.fromisoformat(summary.finished_at.replace("Z", "+00:00")).timestamp() - finished) < 1.5
