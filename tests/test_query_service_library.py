"""The library answers the same with the query service as without it, on the same data.

The data: the dump the real metadata service wrote (shared/service-db), served two ways at the
dump's own clock: as the metadata service (the double, loaded row for row from the restored
database) for the library's own plans, and through the query service over the database itself.
The library is pointed at both in turn; states, counts and task lists must be equal, times equal
within what the plans' heartbeat approximation allows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from qs_server import DUMP_NOW_S, ServiceProcess
from service_double import ServiceDouble

import metaflow_agent as ma
from metaflow_agent import _config

TABLES = {"flows": "flows_v3", "runs": "runs_v3", "steps": "steps_v3", "tasks": "tasks_v3", "metadata": "metadata_v3", "artifacts": "artifact_v3"}
RUNS = {"TrainFlow": range(1, 13), "ShardFlow": (13, 14), "CrashFlow": (15, 16), "LongFlow": (17,)}
EXPECTED = {1: "completed", 3: "failed", 6: "failed", 10: "failed", 13: "completed", 14: "failed", 15: "crashed", 16: "crashed", 17: "running"}


@pytest.fixture(scope="module")
def dump_rows(pg_cluster, service_db) -> dict[str, list[dict[str, Any]]]:
    """Every row of the restored dump, as the service's JSON shapes (table columns)."""
    out = {}
    for name, table in TABLES.items():
        text = pg_cluster.psql("metaflow", f"SELECT coalesce(json_agg(t ORDER BY 1), '[]') FROM {table} t")
        out[name] = json.loads(text)
    return out


@pytest.fixture(scope="module", params=["master", "release"])
def dump_double(request, dump_rows):
    """The metadata service (double) holding exactly the dump's rows, its clock at the dump."""
    with ServiceDouble(mode=request.param, records=dump_rows, clock=lambda: DUMP_NOW_S) as double:
        yield double


@pytest.fixture(scope="module")
def qs_at_dump(service_db):
    server = ServiceProcess(service_db, ["--test-now", str(DUMP_NOW_S)]).start()
    yield server
    server.stop()


@pytest.fixture
def at_dump(monkeypatch, tmp_path, dump_double):
    """The library configured for the double, judging liveness at the dump's clock; `use(qs)` turns
    the query service on (its URL) or off (None)."""
    monkeypatch.setattr(_config, "now_s", lambda: float(DUMP_NOW_S))
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", dump_double.url)
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path))  # the datastore is not shipped
    (tmp_path / ".metaflow").mkdir()

    def use(qs: ServiceProcess | None) -> None:
        monkeypatch.setenv("METAFLOW_AGENT_QUERY_SERVICE_URL", qs.url + "/agent/v1" if qs else "off")
        ma.reset_backends()

    return use


def both(at_dump, qs, fn, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    at_dump(None)
    plans = fn(*args, **kwargs)
    at_dump(qs)
    served = fn(*args, **kwargs)
    return plans, served


def _close(a: float | None, b: float | None, tolerance: float) -> bool:
    return (a is None) == (b is None) and (a is None or abs(a - b) <= tolerance)


def test_the_service_is_found_and_used(at_dump, qs_at_dump):
    at_dump(qs_at_dump)
    caps = ma.capabilities()
    assert caps.query_service == qs_at_dump.url + "/agent/v1"
    got = ma.failed_tasks("ShardFlow/14")
    # Its one answer, plus (once per process) the probe, the run's recorded datastore root and,
    # its tasks being missing there (the datastore is not shipped), one task's own root.
    assert got.cost.metadata_requests <= 4
    again = ma.failed_tasks("ShardFlow/14")
    assert again.cost.metadata_requests == 1
    assert any("no files at /data/metaflow/.metaflow for 3 task(s)" in n for n in again.notes), again.notes


def test_list_runs_same(at_dump, qs_at_dump, dump_double):
    for flow in RUNS:
        plans, served = both(at_dump, qs_at_dump, ma.list_runs, flow, namespace=None, limit=50)
        assert [(r.run_id, r.status) for r in plans.runs] == [(r.run_id, r.status) for r in served.runs], flow
        for a, b in zip(plans.runs, served.runs):
            if a.duration_s is None and dump_double.mode == "release" and a.status != "completed":
                continue  # 2.5.1 cannot page a run's newest rows: a short failed run's end is not dated
            assert _close(a.duration_s, b.duration_s, 20.0), (flow, a, b)  # the plans date long runs by heartbeat
    for run, state in EXPECTED.items():
        flow = next(f for f, ids in RUNS.items() if run in ids)
        assert {r.run_id: r.status for r in ma.list_runs(flow, namespace=None, limit=50).runs}[str(run)] == state
    for status in ("failed", "crashed", "running", "completed"):
        plans, served = both(at_dump, qs_at_dump, ma.list_runs, "TrainFlow", status=status, namespace=None)
        assert [r.run_id for r in plans.runs] == [r.run_id for r in served.runs], status


@pytest.mark.parametrize("run", [f"{flow}/{r}" for flow, ids in RUNS.items() for r in ids])
def test_run_summary_and_tasks_same(at_dump, qs_at_dump, run):
    plans, served = both(at_dump, qs_at_dump, ma.run_summary, run)
    assert plans.status == served.status
    counts = list(ma.RunSummary.model_fields["totals"].annotation.model_fields)
    assert plans.totals.model_dump() == served.totals.model_dump()
    assert [(s.step, *(getattr(s, c) for c in counts)) for s in plans.steps] == [(s.step, *(getattr(s, c) for c in counts)) for s in served.steps]
    assert _close(plans.duration_s, served.duration_s, 20.0)
    assert (plans.first_failure is None) == (served.first_failure is None)
    if plans.first_failure:
        assert plans.first_failure.pathspec == served.first_failure.pathspec
    plans, served = both(at_dump, qs_at_dump, ma.failed_tasks, run)
    keys = ("pathspec", "status", "attempts", "failed_attempts")
    assert [[getattr(t, k) for k in keys] for t in plans.failed] == [[getattr(t, k) for k in keys] for t in served.failed]
    assert (plans.total_failed, plans.total_crashed, plans.total_retried_ok) == (served.total_failed, served.total_crashed, served.total_retried_ok)
    plans, served = both(at_dump, qs_at_dump, ma.list_tasks, run, limit=1000)
    assert [(t.pathspec, t.state, t.retried) for t in plans.tasks] == [(t.pathspec, t.state, t.retried) for t in served.tasks]
    assert plans.counts == served.counts


def test_run_stats_same(at_dump, qs_at_dump, dump_double):
    for flow in RUNS:
        plans, served = both(at_dump, qs_at_dump, ma.run_stats, flow, namespace=None)
        a, b = plans.flows[0], served.flows[0]
        assert (a.examined, a.counts, a.success_rate, a.finished_success_rate) == (b.examined, b.counts, b.success_rate, b.finished_success_rate), flow
        assert set(a.duration_s) == set(b.duration_s)
        for key in a.duration_s:
            assert _close(a.duration_s[key], b.duration_s[key], 20.0), (flow, key)


def test_list_flows_same(at_dump, qs_at_dump):
    plans, served = both(at_dump, qs_at_dump, ma.list_flows, namespace=None)
    assert [(f.flow, f.latest_run, f.status, f.steps) for f in plans.flows] == [(f.flow, f.latest_run, f.status, f.steps) for f in served.flows]
