"""Run and task states of local runs that are alive, then killed: proof from this host's
processes, not guesses from file times. A SIGKILLed run reads crashed at once, not running
for six minutes; a live run whose step is quiet reads running, not crashed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ROOT, LiveRun, start_live_run

import metaflow_agent as ma
from metaflow_agent import _liveness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live() -> LiveRun:
    run = start_live_run(ROOT / "live-runs")
    yield run
    run.kill()


@pytest.fixture
def in_root(monkeypatch):
    def use(root: str) -> None:
        monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", root)
        ma.reset_backends()
        _liveness.forget()
    return use


def test_a_live_run_is_running(live, in_root):
    in_root(live.root)
    listed = {r.pathspec: r for r in ma.list_runs("SleepFlow", namespace=None).runs}
    assert listed[live.run].status == "running" and listed[live.run].finished_at is None
    summary = ma.run_summary(live.run)
    assert summary.status == "running"
    nap = next(s for s in summary.steps if s.step == "nap")
    assert (nap.running, nap.crashed, nap.unknown) == (1, 0, 0)
    tasks = ma.list_tasks(live.run, state="running")
    assert [t.step for t in tasks.tasks] == ["nap"] and tasks.counts["completed"] == 1
    assert ma.failed_tasks(live.run).failed == []
    assert ma.diagnose_run(live.run).failures == []


def test_a_quiet_live_run_stays_running_however_old_its_files(live, in_root, monkeypatch):
    """Six hours later by the clock, the processes still prove it alive."""
    import time

    from metaflow_agent import _config

    in_root(live.root)
    later = time.time() + 6 * 3600
    monkeypatch.setattr(_config, "now_s", lambda: later)
    assert ma.run_summary(live.run).status == "running"


def test_a_killed_run_is_crashed_at_once(in_root):
    """SIGKILL of the runtime and its task: crashed on the next question, no heartbeat wait."""
    doomed = start_live_run(ROOT / "killed-runs")
    doomed.kill()
    in_root(doomed.root)
    summary = ma.run_summary(doomed.run)
    assert summary.status == "crashed"
    nap = next(s for s in summary.steps if s.step == "nap")
    assert nap.crashed == 1 and nap.running == 0
    failed = ma.failed_tasks(doomed.run)
    assert [(t.step, t.status) for t in failed.failed] == [("nap", "crashed")]
    assert ma.list_runs("SleepFlow", namespace=None).runs[0].status == "crashed"


def test_without_proof_from_processes_a_recent_run_is_unknown(live, in_root, monkeypatch):
    """METAFLOW_AGENT_LOCAL_LIVENESS=activity (flows run on another host): recent files prove
    nothing, so the state is unknown rather than running or crashed."""
    in_root(live.root)
    monkeypatch.setenv("METAFLOW_AGENT_LOCAL_LIVENESS", "activity")
    summary = ma.run_summary(live.run)
    assert summary.status == "unknown"
    assert next(s for s in summary.steps if s.step == "nap").unknown == 1


def test_process_table_names_the_live_task(live):
    _liveness.forget()
    table = _liveness.process_table()
    run_id = live.run.split("/")[1]
    assert table.readable and ("nap", ) == tuple({step for step, _ in table.tasks[run_id]})
    assert any(rt.script == "sleep_flow.py" for rt in table.runtimes)
    assert _liveness.on_local_fs(os.path.join(live.root, ".metaflow"))
    assert Path(live.root).exists()
