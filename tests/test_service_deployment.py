"""A service deployment end to end: real flows run against the metadata service
double (both generations) with an S3 datastore (moto on 127.0.0.1); our answers
must equal the plain Client API's on the same runs, with flat request counts."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from helpers import S3_ENV, TEST_USER, LocalRuns, run_flow
from service_double import ServiceDouble
from service_double.synth import register_simple_run, register_wide_run

import metaflow_agent as ma
from metaflow_agent._backend import reset_backends

MODES = ("master", "release")


@pytest.fixture(scope="session")
def double():
    with ServiceDouble(mode="master") as d:
        yield d


@dataclass
class ServiceRuns(LocalRuns):
    """The same kinds of runs, on the service deployment; one ran under TYPE agent."""

    agent_typed: str = ""


@pytest.fixture(scope="session")
def service_runs(s3_server, double) -> ServiceRuns:
    env = {"METAFLOW_DEFAULT_METADATA": "service", "METAFLOW_SERVICE_URL": double.url, "METAFLOW_DEFAULT_DATASTORE": "s3"}
    agent_env = {**env, "METAFLOW_DEFAULT_METADATA": "agent"}

    def small() -> list[str]:
        return [
            run_flow("retry_flow.py", env=env),
            run_flow("crash_flow.py", env=env),
            run_flow("artifact_flow.py", "--alpha", "0.5", "--big_mb", "1", env=env),
            run_flow("artifact_flow.py", "--alpha", "0.7", "--big_mb", "1", env=env),
            run_flow("hello_flow.py", "--tag", "team:a", env=env),
            run_flow("hello_flow.py", "--tag", "team:b", env=env),
            run_flow("hello_flow.py", "--tag", "team:b", "--fail_end", "true", env=env),
            run_flow("hello_flow.py", "--tag", "team:a", env=agent_env),
        ]

    with ThreadPoolExecutor(max_workers=3) as pool:
        wide = pool.submit(run_flow, "wide_flow.py", "--width", "30", "--failing", "3", "--max-workers", "6", env=env)
        log = pool.submit(run_flow, "log_flow.py", "--lines", "30000", env=env)
        retry, crash, art_a, art_b, h1, h2, hf, agent = pool.submit(small).result()
        root = S3_ENV["METAFLOW_DATASTORE_SYSROOT_S3"]
        return ServiceRuns(root, wide.result(), retry, crash, log.result(), art_a, art_b, [h1, h2, agent], hf, agent)


@pytest.fixture(params=MODES)
def service_env(request, monkeypatch, double, s3_server):
    """The test process configured like a user of this deployment, in one service generation."""
    double.mode = request.param
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", double.url)
    monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
    reset_backends()
    yield request.param
    double.mode = "master"
    reset_backends()


def client_outcomes(client, run_pathspec: str) -> dict[str, str]:
    """task pathspec -> failed / crashed / retried_ok / completed, by the Client's metadata."""
    out = {}
    for step in client.Run(run_pathspec):
        for task in step:
            attempts = {}
            for m in task.metadata:
                if m.name in ("attempt", "attempt_ok"):
                    attempts.setdefault(m.name, []).append(m.value)
            oks = attempts.get("attempt_ok", [])
            n_attempts = len(attempts.get("attempt", []))
            if "True" in oks:
                out[task.pathspec] = "retried_ok" if "False" in oks else "completed"
            elif len(oks) == n_attempts and oks:
                out[task.pathspec] = "failed"
            else:
                out[task.pathspec] = "crashed"
    return out


# --- parity with the Client API -------------------------------------------------------


def test_failed_tasks_match_client(service_runs, service_env, client):
    truth = client_outcomes(client, service_runs.wide)
    got = ma.failed_tasks(service_runs.wide, limit=100)
    assert {t.pathspec: t.status for t in got.failed} == {p: s for p, s in truth.items() if s != "completed"}
    assert got.total_failed >= 1
    for t in got.failed:
        if t.status == "failed":
            assert t.exception_type == "ValueError" and "WIDE_BOOM" in t.message
            assert t.foreach_index and t.foreach_index.startswith("items=")


def test_run_summary_matches_client(service_runs, service_env, client):
    truth = client_outcomes(client, service_runs.wide)
    got = ma.run_summary(service_runs.wide)
    assert got.status == "failed"
    work = next(s for s in got.steps if s.step == "work")
    mine = {"completed": work.completed, "failed": work.failed, "crashed": work.crashed}
    theirs = {k: sum(1 for p, s in truth.items() if "/work/" in p and s == k) for k in mine}
    assert mine == theirs
    assert got.first_failure is not None


def test_retried_and_crashed(service_runs, service_env):
    retried = ma.failed_tasks(service_runs.retry)
    assert [(t.status, t.attempts, t.failed_attempts) for t in retried.failed] == [("retried_ok", 2, [0])]
    assert retried.total_failed == 0
    assert ma.run_summary(service_runs.retry).status == "completed"
    crashed = ma.failed_tasks(service_runs.crash)
    assert [(t.status, t.return_code) for t in crashed.failed] == [("crashed", -9)]
    # Its task died (SIGKILL) with no retry to come: the runtime stopped, nothing raised.
    assert ma.run_summary(service_runs.crash).status == "crashed"


def test_list_runs_match_client(service_runs, service_env, client):
    got = ma.list_runs("HelloFlow", namespace=None, limit=50)
    mine = {r.pathspec: r.status for r in got.runs}
    assert set(mine) == {r.pathspec for r in client.Flow("HelloFlow")}
    assert {p for p, s in mine.items() if s == "completed"} == {r.pathspec for r in client.Flow("HelloFlow") if r.successful}
    failed = ma.list_runs("HelloFlow", status="failed", namespace=None)
    assert [r.pathspec for r in failed.runs] == [service_runs.hello_failed]
    tagged = ma.list_runs("HelloFlow", tags_all=["team:a"], namespace=f"user:{TEST_USER}")
    assert {r.pathspec for r in tagged.runs} == {p for p in service_runs.hello_ok if "team:a" in client.Run(p).tags}
    page1 = ma.list_runs("HelloFlow", namespace=None, limit=2)
    page2 = ma.list_runs("HelloFlow", namespace=None, limit=2, cursor=page1.next_cursor)
    assert page1.truncated and not set(r.run_id for r in page1.runs) & set(r.run_id for r in page2.runs)


def test_logs_by_range_on_s3(service_runs, service_env, client):
    task = next(iter(client.Run(service_runs.log)["noisy"]))
    full = [ln if len(ln) <= 500 else f"{ln[:500]}…[+{len(ln) - 500} chars]" for ln in task.stdout.splitlines()]
    got = ma.task_logs(task.pathspec, tail=20)
    assert [ln.text for ln in got.lines] == full[-20:]
    assert got.log_size > 2_000_000 and got.bytes_read <= 128 * 1024
    assert got.cost.datastore_bytes <= 128 * 1024
    grep = ma.task_logs(task.pathspec, grep="^ERROR", context=0)
    assert [ln.text for ln in grep.lines] == [ln for ln in full if ln.startswith("ERROR")]


def test_artifacts_on_s3(service_runs, service_env, client):
    task = next(iter(client.Run(service_runs.art_a)["start"]))
    got = ma.list_artifacts(task.pathspec)
    assert {a.name for a in got.artifacts} == {a.id for a in task}  # the Client hides _private ones too
    shas = {a.id: a.sha for a in task}
    assert all(a.sha == shas[a.name] for a in got.artifacts)
    blob = next(a for a in got.artifacts if a.name == "blob")
    assert blob.size > 1_000_000 and blob.type == "bytes"
    assert got.cost.datastore_bytes < 16 * 1024
    preview = ma.artifact_preview(task.pathspec, "config")
    assert preview.summary["keys"] == ["'lr'", "'layers'", "'name'"]
    with pytest.raises(ma.TooLarge):
        ma.artifact_preview(task.pathspec, "blob", max_bytes=1000)
    diff = ma.compare_runs(service_runs.art_a, service_runs.art_b)
    assert [(d.name, d.value_a, d.value_b) for d in diff.parameters if d.name == "alpha"] == [("alpha", 0.5, 0.7)]


def test_agent_type_runs_flows_and_serves_client(service_runs, double):
    """METAFLOW_DEFAULT_METADATA=agent ran a flow; the Client reads it through the same TYPE."""
    code = (
        "from metaflow import Run, namespace; namespace(None); r = Run('%s'); "
        "print(r.successful, r.finished, sorted(s.id for s in r))" % service_runs.agent_typed
    )
    env = {"METAFLOW_DEFAULT_METADATA": "agent", "METAFLOW_SERVICE_URL": double.url, "PATH": "/usr/bin:/bin"}
    import os

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True ['end', 'start']"
    from metaflow.plugins import METADATA_PROVIDERS

    assert "agent" in [p.TYPE for p in METADATA_PROVIDERS]


# --- request counts flat in the number of tasks and runs ---------------------------------


@pytest.fixture(scope="module")
def synth_wide(double):
    """Wide runs that finished an hour ago (stale heartbeats): their failures are final."""
    runs = {}
    real_clock = double.store.clock
    double.store.clock = lambda: real_clock() - 3600
    try:
        for width in (10, 1000):
            failed = {width - 1, width - 2, width // 2}
            runs[width] = "SynthWide/" + register_wide_run(double.url, "SynthWide", width, failed=failed, retried_ok={1}, crashed={3})
    finally:
        double.store.clock = real_clock
    return runs


@pytest.mark.parametrize("mode", MODES)
def test_failed_tasks_requests_flat_in_width(synth_wide, double, s3_server, monkeypatch, mode):
    double.mode = mode
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", double.url)
    monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")  # registered runs have no data: reads find nothing
    counts = {}
    for width, run in synth_wide.items():
        reset_backends()
        ma.capabilities()  # the one-time probe is not part of the query
        got = ma.failed_tasks(run, include_retried=False, limit=10)
        assert got.total_failed == 3 and got.total_crashed == 1
        counts[width] = got.cost.metadata_requests
    double.mode = "master"
    assert counts[10] == counts[1000], counts


@pytest.mark.parametrize("mode", MODES)
def test_latest_failed_runs_bounded(double, s3_server, monkeypatch, mode):
    flow = "SynthMany"
    if not double.store.list_runs(flow):
        real_clock = double.store.clock
        double.store.clock = lambda: real_clock() - 3600  # registered an hour ago: heartbeats are stale
        try:
            for i in range(120):
                register_simple_run(double.url, flow, end_ok=(i % 7 != 0))
        finally:
            double.store.clock = real_clock
    double.mode = mode
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", double.url)
    monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
    reset_backends()
    ma.capabilities()
    got = ma.list_runs(flow, status="failed", limit=10, namespace=None)
    double.mode = "master"
    assert len(got.runs) == 10 and all(r.status == "failed" for r in got.runs)
    if mode == "master":
        # one filtered listing; per failed run, one look at its newest metadata rows: its finish,
        # and the task whose latest attempt failed in a run no longer alive
        assert got.cost.metadata_requests == 1 + len(got.runs)
    else:
        # one listing; an end-step check per run examined; per failed run its steps, the
        # failed tasks of its newest step, where the run recorded its data (these registered
        # runs recorded none: asked on each call; a real run's root is remembered) and the
        # attempts of the task found
        assert got.cost.metadata_requests == 1 + got.scanned + 4 * len(got.runs)
        assert got.scanned < 120  # stopped once the page was full


def test_crash_after_a_failed_attempt_is_crashed(double, s3_server, monkeypatch):
    """Attempt 0 raised, the retry died without an outcome: the task is crashed, not failed."""
    real_clock = double.store.clock
    double.store.clock = lambda: real_clock() - 3600  # an old run: its heartbeat is stale
    try:
        run = "SynthRetryCrash/" + register_wide_run(double.url, "SynthRetryCrash", 4, failed={0}, failed_then_crashed={2})
    finally:
        double.store.clock = real_clock
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", double.url)
    monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
    reset_backends()
    got = ma.failed_tasks(run)
    assert sorted((t.status, t.attempts, t.failed_attempts) for t in got.failed) == [("crashed", 2, [0, 1]), ("failed", 2, [0, 1])]
    assert (got.total_failed, got.total_crashed) == (1, 1)


def test_finished_run_failures_cost_no_request_per_task(service_runs, service_env, monkeypatch):
    """Once a run's heartbeat is stale, its failures are settled from the outcome sets and
    the datastore: the metadata requests do not depend on how many tasks failed."""
    import time

    from metaflow_agent import _config

    later = time.time() + 3600
    monkeypatch.setattr(_config, "now_s", lambda: later)
    urls: list[str] = []
    hook = lambda kind, method, url, nbytes: urls.append(url) if kind == "request" else None  # noqa: E731
    ma.add_cost_hook(hook)
    try:
        got = ma.failed_tasks(service_runs.wide, limit=100)
    finally:
        ma.remove_cost_hook(hook)
    assert got.total_failed >= 1 and all(t.exception_type == "ValueError" for t in got.failed if t.status == "failed")
    assert all(t.foreach_index and t.foreach_index.startswith("items=") for t in got.failed)
    assert not [u for u in urls if "/tasks/" in u], urls


# --- the agent questions on a service deployment ------------------------------------------


def test_new_questions_match_client(service_runs, service_env, client, monkeypatch):
    """list_flows, run_stats, list_tasks, artifact_values and diagnose_run on the service path,
    against the Client on the same runs (both generations). The Client's states are those of
    finished runs: the clock is an hour on, so no run's heartbeat is fresh (a crashed run just
    made is `unknown` until its heartbeat is 360 s old, by the state rule)."""
    import time

    from helpers import client_run_state

    from metaflow_agent import _config

    later = time.time() + 3600
    monkeypatch.setattr(_config, "now_s", lambda: later)

    flows = ma.list_flows(namespace=None)
    assert {f.flow for f in flows.flows} >= {"HelloFlow", "WideFlow", "ArtifactFlow", "CrashFlow"}
    for row in flows.flows:
        if row.flow in ("HelloFlow", "WideFlow", "ArtifactFlow", "CrashFlow", "RetryFlow"):
            latest = client.Flow(row.flow).latest_run
            assert row.latest_run == latest.pathspec and row.status == client_run_state(latest), row
    stats = ma.run_stats("HelloFlow", namespace=None).flows[0]
    states = [client_run_state(r) for r in client.Flow("HelloFlow").runs()]
    assert stats.counts == {s: states.count(s) for s in ("running", "completed", "failed", "crashed", "unknown")}
    tasks = ma.list_tasks(service_runs.retry, step="work")
    assert len(tasks.tasks) == 3 and [t.retried for t in tasks.tasks].count(True) == 1
    assert all(t.state == "completed" for t in tasks.tasks)
    values = ma.artifact_values("ArtifactFlow", "score", runs=2, order="oldest", namespace=None)
    assert [v.value for v in values.values] == [client.Run(v.run).data.score for v in values.values]
    diagnosis = ma.diagnose_run(service_runs.hello_failed)
    assert diagnosis.status == "failed" and diagnosis.failures[0].exception.startswith("KeyError")
    assert len(diagnosis.model_dump_json()) <= 4096
    crashed = ma.diagnose_run(service_runs.crash)
    assert crashed.status == "crashed" and crashed.failures[0].return_code == -9
