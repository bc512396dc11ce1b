"""The state rule on states that real test runs do not reach reliably: a retry pending or in
progress, a live task, a dead runtime, no proof either way. The metadata here is a small
in-memory table beside a datastore of the files the runtime would leave; the rules are the
library's own (`_outcomes.assess` over `_states`)."""

from __future__ import annotations

import pytest

from metaflow_agent._backend import Backend
from metaflow_agent._datastore import LocalDatastore
from metaflow_agent._outcomes import assess
from metaflow_agent._records import AttemptInfo, RunRecord, StepOutcomes, TaskDetail
from metaflow_agent.backends.base import MetadataBackend


class TableMeta(MetadataBackend):
    kind = "local"

    def __init__(self, attempts: dict[str, list[bool | None]], *, live: bool | None, fresh: set[str] = frozenset(),
                 end_ok: bool = False) -> None:
        self.attempts, self.live, self.fresh, self.end_ok = attempts, live, fresh, end_ok

    def list_flows(self): return ["F"]
    def check_flow(self, flow): ...
    def scan_runs(self, *a, **k): raise NotImplementedError
    def get_run(self, run): return RunRecord(run.flow, run.run, 0)
    def end_outcome(self, run): return (True, 1) if self.end_ok else (None, None)
    def run_liveness(self, run): return self.live
    def task_liveness(self, task): return True if task.task in self.fresh else (None if self.live is None else False)
    def finished_ms(self, run, outcomes): return 1
    def list_steps(self, run): return ["start", "work"] + (["end"] if self.end_ok else [])
    def list_tasks(self, step): return list(self.attempts) if step.step == "work" else ["1"]
    def failed_tasks_of(self, step): return self.step_outcomes(step.run_ps, [step.step])[0].failed
    def check_task(self, task): ...

    def step_outcomes(self, run, steps, *, times=False):
        out = {"start": StepOutcomes("start", {"1"}, {"1"}, set())}
        work = StepOutcomes("work", set(self.attempts), set(), set())
        for task, outcomes in self.attempts.items():
            work.ok |= {task} if True in outcomes else set()
            work.failed |= {task} if False in outcomes else set()
        out["work"] = work
        if self.end_ok:
            out["end"] = StepOutcomes("end", {"9"}, {"9"}, set())
        return [out[s] for s in steps if s in out]

    def task_detail(self, task):
        return TaskDetail([AttemptInfo(i, ok) for i, ok in enumerate(self.attempts.get(task.task, [True]))])


def TableBackend(tmp_path, attempts: dict[str, list[bool | None]], *, live: bool | None, fresh: set[str] = frozenset(),
                 ended: set[str] = frozenset(), end_ok: bool = False) -> Backend:
    """The in-memory metadata plus the datastore files the runtime would have left: a data
    index for every attempt that recorded an outcome, an exit record for `ended` tasks' last one."""
    for task, outcomes in attempts.items():
        folder = tmp_path / "F" / "1" / "work" / task
        folder.mkdir(parents=True, exist_ok=True)
        for n, ok in enumerate(outcomes):
            (folder / f"{n}.attempt.json").write_text('{"time": 0}')
            if ok is not None:
                (folder / f"{n}.data.json").write_text('{"objects": {}, "info": {}}')
        if task in ended:
            (folder / f"{len(outcomes) - 1}.runtime").write_text('{"return_code": -9, "killed": false, "success": false}')
    meta = TableMeta(attempts, live=live, fresh=fresh, end_ok=end_ok)
    return Backend(meta, store=LocalDatastore(str(tmp_path)))


@pytest.fixture
def limits(monkeypatch):
    """Retry limits as the run's graph info would give them (None: unreadable)."""
    def set_times(times):
        import metaflow_agent._outcomes as o

        value = None if times is None else {"start": 1, "work": 1 + times}
        monkeypatch.setattr(o, "_retry_limits", lambda *a: value)
    return set_times


def verdicts(backend):
    a = assess(backend, RunRecord("F", "1", 0))
    return a.state, {t: v for (_, t), v in a.verdicts.items()}


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


def test_retry_that_died_with_none_left_crashes_the_run(tmp_path, limits):
    """Attempt 0 raised, attempt 1 (the last allowed) was killed: the task crashed, the runtime stops."""
    limits(1)
    b = TableBackend(tmp_path, {"11": [False, None]}, live=True, ended={"11"})
    assert verdicts(b) == ("crashed", {"11": "crashed"})


def test_dead_attempt_with_retries_left_is_retrying(tmp_path, limits):
    limits(2)
    b = TableBackend(tmp_path, {"11": [None]}, live=True, ended={"11"})
    assert verdicts(b) == ("running", {"11": "running"})


def test_everything_unsettled_is_over_once_the_run_is_dead(tmp_path, limits):
    limits(3)
    b = TableBackend(tmp_path, {"11": [False], "12": [None]}, live=False)
    assert verdicts(b) == ("failed", {"11": "failed", "12": "crashed"})


def test_a_dead_run_without_a_failure_is_crashed(tmp_path, limits):
    limits(3)
    b = TableBackend(tmp_path, {"10": [True], "12": [None]}, live=False)
    assert verdicts(b) == ("crashed", {"12": "crashed"})


def test_without_proof_of_life_or_death_it_is_unknown(tmp_path, limits):
    limits(3)
    b = TableBackend(tmp_path, {"10": [True], "12": [None]}, live=None)
    assert verdicts(b) == ("unknown", {"12": "unknown"})


def test_completed_run_has_nothing_running(tmp_path, limits):
    limits(None)
    b = TableBackend(tmp_path, {"10": [False, True], "12": [None]}, live=True, fresh={"12"}, end_ok=True)
    assert verdicts(b) == ("completed", {"12": "crashed"})


def test_unknown_retry_limits_let_a_retry_follow_while_the_run_lives(tmp_path, limits):
    """Nothing says the @retry is used up, and the run is alive: the runtime may try again."""
    limits(None)
    b = TableBackend(tmp_path, {"11": [False]}, live=True)
    assert verdicts(b) == ("running", {"11": "retrying"})
    dead = TableBackend(tmp_path / "dead", {"11": [False]}, live=False)
    assert verdicts(dead) == ("failed", {"11": "failed"})
