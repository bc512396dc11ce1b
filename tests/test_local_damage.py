"""A damaged datastore item degrades only itself (issue 9, item 6).

A copy of the real test runs is damaged one item at a time: a truncated run record, corrupt
`data.json`s, a FIFO where a log or a run record belongs, a folder where a metadata file
belongs, a task folder linked out of the root, a `_meta` link loop. Questions over many items
skip the damaged one, count it and name it in `notes` (lists say `complete: false`), and
answer for every other item exactly as the plain Client API does on the undamaged runs; a
question about the damaged item itself raises `Damaged`. Nothing waits on a FIFO.

The Client reads the original root (Metaflow fixes its root at import); metaflow_agent reads
the damaged copy (it reads the environment at call time).
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import client_outcome, client_run_state, within

import metaflow_agent as ma

LIMIT_S = 10  # any answer here takes well under a second; a FIFO read would block forever


@dataclass
class Damage:
    sysroot: str
    truncated_run: str  # HelloFlow run whose _meta/_self.json is cut in half
    fifo_run: str  # HelloFlow run whose _meta/_self.json is a FIFO
    corrupt_task: str  # ArtifactFlow task whose 0.data.json is cut in half
    failed_corrupt: str  # a failed wide task whose 0.data.json is garbage (its exception cannot be read)
    fifo_log_task: str  # the failed HelloFlow task whose stdout log is a FIFO
    outside: str  # a completed wide task whose folder is a link out of the root
    inside: str  # a completed wide task whose folder is a link to a copy inside the root
    folder_file: str  # a completed wide task whose attempt_ok file is a folder
    loop: str  # a completed wide task whose _meta is a link to itself

    @property
    def skipped_wide(self) -> set[str]:
        return {self.outside, self.folder_file, self.loop}


def _cut(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def _fifo(path: str) -> None:
    os.remove(path)
    os.mkfifo(path)


@pytest.fixture(scope="module")
def damage(local_runs, tmp_path_factory) -> Damage:
    from metaflow import Run, metadata, namespace

    metadata(f"local@{local_runs.root}")  # the Client's provider is global: an earlier test may have left another
    namespace(None)
    base = tmp_path_factory.mktemp("damaged")
    for flow in ("HelloFlow", "WideFlow", "ArtifactFlow"):
        shutil.copytree(Path(local_runs.root) / ".metaflow" / flow, base / ".metaflow" / flow, symlinks=True)
    root = str(base / ".metaflow")
    truncated, fifo_run = local_runs.hello_ok[1], local_runs.hello_ok[2]
    _cut(f"{root}/{truncated}/_meta/_self.json")
    _fifo(f"{root}/{fifo_run}/_meta/_self.json")
    corrupt = f"{local_runs.art_a}/start/{_only_task(root, local_runs.art_a, 'start')}"
    _cut(f"{root}/{corrupt}/0.data.json")

    outcomes = {t.pathspec: client_outcome(t) for t in Run(local_runs.wide)["work"]}
    done = sorted((p for p, o in outcomes.items() if o is not None and o.outcome == "completed" and not o.failed_attempts),
                  key=lambda p: int(p.rsplit("/", 1)[1]))
    failed = sorted(p for p, o in outcomes.items() if o is not None and o.outcome == "failed")
    outside, inside, folder_file, loop = done[3], done[5], done[7], done[9]
    failed_corrupt = failed[0]
    Path(f"{root}/{failed_corrupt}/0.data.json").write_bytes(b"\x00\xff not json")
    away = tmp_path_factory.mktemp("outside-the-root") / "task"
    shutil.move(f"{root}/{outside}", away)
    os.symlink(away, f"{root}/{outside}")
    os.makedirs(f"{root}/_copies")
    shutil.move(f"{root}/{inside}", f"{root}/_copies/task")
    os.symlink(f"{root}/_copies/task", f"{root}/{inside}")
    ok_file = glob.glob(f"{root}/{folder_file}/_meta/sysmeta_attempt_ok_*.json")[0]
    os.remove(ok_file)
    os.mkdir(ok_file)
    shutil.rmtree(f"{root}/{loop}/_meta")
    os.symlink(f"{root}/{loop}/_meta", f"{root}/{loop}/_meta")

    hello_failed = Run(local_runs.hello_failed)
    failing = next(t.pathspec for s in hello_failed for t in s if (o := client_outcome(t)) is not None and o.outcome == "failed")
    _fifo(f"{root}/{failing}/0.runtime_stdout.log")
    return Damage(str(base), truncated, fifo_run, corrupt, failed_corrupt, failing, outside, inside, folder_file, loop)


def _only_task(root: str, run: str, step: str) -> str:
    (task,) = [n for n in os.listdir(f"{root}/{run}/{step}") if not n.startswith("_")]
    return task


@pytest.fixture
def damaged(damage, monkeypatch) -> Damage:
    """metaflow_agent reads the damaged copy in this test."""
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", damage.sysroot)
    return damage


def _call(fn, *args, **kwargs):
    return within(LIMIT_S, lambda: fn(*args, **kwargs), fn.__name__)


def _named(answer, *items: str) -> None:
    text = " ".join(answer.notes)
    assert "damaged item(s) skipped" in text, answer.notes
    for item in items:
        assert item in text, (item, answer.notes)


def _raises_damaged(fn, *args, **kwargs) -> ma.Damaged:
    with pytest.raises(ma.Damaged) as info:
        _call(fn, *args, **kwargs)
    err = info.value
    assert isinstance(err, ma.BackendError) and err.code == "damaged" and err.hint
    return err


# --- runs in scans -----------------------------------------------------------------------------
def test_run_listing_skips_damaged_records_and_equals_the_client_otherwise(damaged, local_runs, client_ns):
    from metaflow import Flow

    client_ns(None)
    got = _call(ma.list_runs, "HelloFlow", namespace=None, limit=100)
    truth = {r.pathspec: client_run_state(r) for r in Flow("HelloFlow").runs()}
    expected = {p: s for p, s in truth.items() if p not in (damaged.truncated_run, damaged.fifo_run)}
    assert {r.pathspec: r.status for r in got.runs} == expected
    assert got.complete is False
    _named(got, damaged.truncated_run, damaged.fifo_run)
    assert "2 damaged item(s) skipped" in " ".join(got.notes)
    assert "not valid JSON" in " ".join(got.notes) and "FIFO" in " ".join(got.notes)

    # By state, records are read only for runs in the answer: the damaged ones completed, so the
    # answer is whole without them.
    failed = _call(ma.list_runs, "HelloFlow", status="failed", namespace=None)
    assert [r.pathspec for r in failed.runs] == [local_runs.hello_failed] and failed.complete is True
    done = _call(ma.list_runs, "HelloFlow", status="completed", namespace=None)
    assert {r.pathspec for r in done.runs} == {p for p, s in expected.items() if s == "completed"} and done.complete is False
    _named(done, damaged.truncated_run, damaged.fifo_run)


def test_run_stats_leave_damaged_runs_out(damaged, local_runs):
    got = _call(ma.run_stats, "HelloFlow", namespace=None)
    (stats,) = got.flows
    assert stats.examined == len(local_runs.hello_ok) + 1 - 2
    assert stats.counts["completed"] == len(local_runs.hello_ok) - 2 and stats.counts["failed"] == 1
    assert stats.complete is False
    _named(got, damaged.truncated_run, damaged.fifo_run)


@pytest.mark.parametrize("which", ["truncated_run", "fifo_run"])
def test_questions_about_a_damaged_run_raise_damaged(damaged, local_runs, which):
    run = getattr(damaged, which)
    for fn in (ma.run_summary, ma.failed_tasks, ma.list_tasks, ma.diagnose_run):
        _raises_damaged(fn, run)
    _raises_damaged(ma.compare_runs, local_runs.hello_ok[0], run)


def test_list_flows_keeps_every_flow(damaged):
    got = _call(ma.list_flows, namespace=None)
    assert {"HelloFlow", "WideFlow", "ArtifactFlow"} <= {f.flow for f in got.flows}
    hello = next(f for f in got.flows if f.flow == "HelloFlow")
    assert hello.latest_run is not None and hello.status is not None


# --- tasks in run and task questions -----------------------------------------------------------
def test_run_summary_leaves_damaged_tasks_out_and_counts_the_rest_like_the_client(damaged, local_runs, client_outcomes):
    truth = client_outcomes(local_runs.wide)
    got = _call(ma.run_summary, local_runs.wide)
    _named(got, *damaged.skipped_wide)
    for step in got.steps:
        tasks = {p: o for p, o in ((o.pathspec, o) for o in truth[step.step].values()) if p not in damaged.skipped_wide}
        assert step.tasks == len(tasks), step.step
        assert step.completed == sum(o.outcome == "completed" for o in tasks.values()), step.step
        assert step.failed == sum(o.outcome == "failed" for o in tasks.values()), step.step
    assert got.status == "failed"


def test_failed_tasks_equal_the_client_and_name_the_damage(damaged, local_runs, client_outcomes):
    truth = client_outcomes(local_runs.wide)
    failed = {o.pathspec for tasks in truth.values() for o in tasks.values() if o.outcome == "failed"}
    got = _call(ma.failed_tasks, local_runs.wide, limit=1000)
    assert {t.pathspec for t in got.failed if t.status == "failed"} == failed
    assert got.complete is False
    _named(got, *damaged.skipped_wide)
    # The failed task whose data.json is garbage is still listed, without its exception, and named.
    (bad,) = [t for t in got.failed if t.pathspec == damaged.failed_corrupt]
    assert bad.status == "failed" and bad.exception_type is None
    assert f"shown without their damaged part: {damaged.failed_corrupt}" in " ".join(got.notes)
    others = [t for t in got.failed if t.status == "failed" and t.pathspec != damaged.failed_corrupt]
    assert others and all(t.exception_type == "ValueError" for t in others)


def test_list_tasks_leaves_damaged_tasks_out(damaged, local_runs, client_outcomes):
    truth = client_outcomes(local_runs.wide)
    expected = {o.pathspec: o.outcome for tasks in truth.values() for o in tasks.values() if o.pathspec not in damaged.skipped_wide}
    got = _call(ma.list_tasks, local_runs.wide, limit=5000)
    assert {t.pathspec: t.state for t in got.tasks} == expected
    assert got.complete is False
    _named(got, *damaged.skipped_wide)


def test_a_link_inside_the_root_is_followed(damaged, local_runs, client_ns):
    from metaflow import Task

    client_ns(None)
    got = _call(ma.list_artifacts, damaged.inside)
    assert {a.name: a.sha for a in got.artifacts} == {a.id: a.sha for a in Task(damaged.inside)}
    assert _call(ma.task_logs, damaged.inside, tail=5).lines


def test_questions_about_a_task_linked_out_of_the_root_raise_damaged(damaged):
    err = _raises_damaged(ma.task_logs, damaged.outside)
    assert "leaves the datastore root" in err.message
    _raises_damaged(ma.list_artifacts, damaged.outside)
    _raises_damaged(ma.artifact_preview, damaged.outside, "value")


def test_a_metadata_loop_harms_only_metadata(damaged, local_runs, client_ns):
    """The looping task's logs and artifacts are still read; its state is not (see the skips above)."""
    from metaflow import Task

    client_ns(None)
    got = _call(ma.list_artifacts, damaged.loop)
    assert {a.name: a.sha for a in got.artifacts} == {a.id: a.sha for a in Task(damaged.loop)}
    assert _call(ma.task_logs, damaged.loop, tail=5).lines
    summary = _call(ma.run_summary, local_runs.wide)
    assert "cannot be resolved" in " ".join(summary.notes)


def test_diagnose_names_the_damage_and_shows_the_rest(damaged, local_runs):
    got = _call(ma.diagnose_run, local_runs.wide, tasks=20)
    assert got.status == "failed" and got.failures
    _named(got, *damaged.skipped_wide)


# --- FIFOs: refused at once ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", [{"tail": 5}, {"head": 5}, {"grep": "x"}, {"stream": "both", "tail": 5}])
def test_a_fifo_log_is_refused_at_once(damaged, mode):
    err = _raises_damaged(ma.task_logs, damaged.fifo_log_task, **mode)
    assert "FIFO" in err.message


def test_diagnose_shows_a_task_whose_log_is_a_fifo(damaged, local_runs):
    got = _call(ma.diagnose_run, local_runs.hello_failed)
    (task,) = [f for f in got.failures if f.pathspec == damaged.fifo_log_task]
    assert task.status == "failed" and task.exception and "HELLO_END_FAIL" in task.exception and task.log == []
    assert "FIFO" in " ".join(got.notes)


# --- tasks in search ----------------------------------------------------------------------------
def test_search_skips_a_corrupt_index_and_finds_the_rest_like_the_client(damaged, local_runs, client_ns):
    from metaflow import Flow

    client_ns(None)
    got = _call(ma.search_artifacts, "ArtifactFlow", name="*", namespace=None, limit=1000)
    expected = {(t.pathspec, a.id) for run in Flow("ArtifactFlow") for step in run for t in step for a in t
                if not a.id.startswith("_") and t.pathspec != damaged.corrupt_task}
    assert {(h.task, h.name) for h in got.hits} == expected
    assert got.complete is False
    _named(got, damaged.corrupt_task)


def test_questions_about_a_corrupt_index_raise_damaged(damaged):
    err = _raises_damaged(ma.list_artifacts, damaged.corrupt_task)
    assert "not valid JSON" in err.message
    _raises_damaged(ma.artifact_preview, damaged.corrupt_task, "small_int")


def test_every_function_answers_or_raises_typed_errors_on_the_damaged_copy(damaged, local_runs):
    """No untyped error and no hang anywhere: each function on each damaged item."""
    items = [damaged.outside, damaged.inside, damaged.folder_file, damaged.loop, damaged.corrupt_task, damaged.fifo_log_task,
             damaged.failed_corrupt]
    runs = [damaged.truncated_run, damaged.fifo_run, local_runs.wide, local_runs.hello_failed, local_runs.art_a]
    calls = [(ma.list_flows, (), {"namespace": None}), (ma.capabilities, (), {})]
    for flow in ("HelloFlow", "WideFlow", "ArtifactFlow"):
        calls += [(ma.list_runs, (flow,), {"namespace": None}), (ma.run_stats, (flow,), {"namespace": None, "per_step": True}),
                  (ma.search_artifacts, (flow,), {"name": "*", "namespace": None}),
                  (ma.artifact_values, (flow, "value"), {"namespace": None})]
    for run in runs:
        calls += [(fn, (run,), {}) for fn in (ma.run_summary, ma.failed_tasks, ma.list_tasks, ma.diagnose_run)]
        calls.append((ma.compare_runs, (run, local_runs.hello_ok[0]), {}))
    for task in items:
        calls += [(ma.task_logs, (task,), {}), (ma.list_artifacts, (task,), {}), (ma.artifact_preview, (task, "value"), {})]
    for fn, args, kwargs in calls:
        try:
            _call(fn, *args, **kwargs)
        except ma.AgentError as exc:
            assert exc.hint, (fn.__name__, args, exc)
