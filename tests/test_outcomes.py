"""The outcome rules on states that real test runs do not reach reliably: a retry
pending or in progress, a live task, a dead runtime. The backend here is a small
in-memory table; the rules are the library's own (`_outcomes.assess`)."""

from __future__ import annotations

import pytest

from metaflow_agent._backend import Backend
from metaflow_agent._datastore import LocalDatastore
from metaflow_agent._outcomes import assess
from metaflow_agent._records import AttemptInfo, RunRecord, StepOutcomes, TaskDetail
from metaflow_agent.backends.base import MetadataBackend


class TableMeta(MetadataBackend):
    kind = "local"

    def __init__(self, attempts: dict[str, list[bool | None]], *, live: bool, fresh: set[str] = frozenset(),
                 retry_times: int | None = None, end_ok: bool = False) -> None:
        self.attempts, self.live, self.fresh = attempts, live, fresh
        self.retry_times, self.end_ok = retry_times, end_ok

    def check_flow(self, flow): ...
    def scan_runs(self, *a, **k): raise NotImplementedError
    def get_run(self, run): return RunRecord(run.flow, run.run, 0)
    def quick_status(self, run): return None
    def run_live(self, run, outcomes): return self.live
    def task_fresh(self, task): return task.task in self.fresh
    def finished_ms(self, run, outcomes): return 1
    def list_steps(self, run): return ["start", "work"] + (["end"] if self.end_ok else [])
    def list_tasks(self, step): return list(self.attempts) if step.step == "work" else ["1"]
    def check_task(self, task): ...

    def step_outcomes(self, run, steps):
        out = [StepOutcomes("start", {"1"}, {"1"}, set())]
        work = StepOutcomes("work", set(self.attempts), set(), set())
        for task, outcomes in self.attempts.items():
            work.ok |= {task} if True in outcomes else set()
            work.failed |= {task} if False in outcomes else set()
        out.append(work)
        if self.end_ok:
            out.append(StepOutcomes("end", {"9"}, {"9"}, set()))
        return out

    def task_detail(self, task):
        return TaskDetail([AttemptInfo(i, ok) for i, ok in enumerate(self.attempts.get(task.task, [True]))])


def TableBackend(tmp_path, attempts: dict[str, list[bool | None]], *, live: bool, fresh: set[str] = frozenset(),
                 ended: set[str] = frozenset(), retry_times: int | None = None, end_ok: bool = False) -> Backend:
    """The in-memory metadata plus a datastore holding the runtime's exit records of `ended` tasks."""
    for task in ended:
        folder = tmp_path / "F" / "1" / "work" / task
        folder.mkdir(parents=True, exist_ok=True)
        n = len(attempts[task]) - 1
        (folder / f"{n}.runtime").write_text('{"return_code": -9, "killed": false, "success": false}')
    meta = TableMeta(attempts, live=live, fresh=fresh, retry_times=retry_times, end_ok=end_ok)
    return Backend(meta, store=LocalDatastore(str(tmp_path)))


@pytest.fixture
def limits(monkeypatch):
    """Retry limits as the run's graph info would give them."""
    def set_times(times):
        import metaflow_agent._outcomes as o

        value = None if times is None else {"start": 1, "work": 1 + times}
        monkeypatch.setattr(o, "max_attempts", lambda *a: value)
    return set_times


def verdicts(backend):
    a = assess(backend, RunRecord("F", "1", 0))
    return a.status, {t: v for (_, t), v in a.verdicts.items()}


def test_failed_attempt_with_retries_left_is_retrying(tmp_path, limits):
    limits(2)
    b = TableBackend(tmp_path, {"10": [True], "11": [False]}, live=True)
    assert verdicts(b) == ("running", {"11": "retrying"})


def test_failed_attempt_with_retries_exhausted_fails_the_run(tmp_path, limits):
    limits(1)
    b = TableBackend(tmp_path, {"10": [True], "11": [False, False]}, live=True)
    assert verdicts(b) == ("failed", {"11": "failed"})


def test_retry_in_progress_is_running_not_crashed(tmp_path, limits):
    limits(2)
    b = TableBackend(tmp_path, {"11": [False, None]}, live=True, fresh={"11"})
    assert verdicts(b) == ("running", {"11": "running"})


def test_retry_that_died_is_crashed(tmp_path, limits):
    limits(1)
    b = TableBackend(tmp_path, {"11": [False, None]}, live=True, ended={"11"})
    assert verdicts(b) == ("failed", {"11": "crashed"})


def test_everything_unsettled_is_over_once_the_run_is_dead(tmp_path, limits):
    limits(3)
    b = TableBackend(tmp_path, {"11": [False], "12": [None]}, live=False)
    assert verdicts(b) == ("failed", {"11": "failed", "12": "crashed"})


def test_completed_run_has_nothing_running(tmp_path, limits):
    limits(None)
    b = TableBackend(tmp_path, {"10": [False, True], "12": [None]}, live=True, fresh={"12"}, end_ok=True)
    assert verdicts(b) == ("completed", {"12": "crashed"})


def test_unknown_retry_limits_take_the_latest_attempt_at_its_word(tmp_path, limits):
    limits(None)
    b = TableBackend(tmp_path, {"11": [False]}, live=True)
    assert verdicts(b) == ("failed", {"11": "failed"})
