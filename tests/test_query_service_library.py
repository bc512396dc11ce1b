"""The library answers the same with the query service as without it, on the same data.

The data: the dump the real metadata service wrote (shared/service-db), served two ways at the
dump's own clock: as the metadata service (the double, loaded row for row from the restored
database) for the library's own plans, and through the query service over the database itself.
The library is pointed at both in turn; states, counts and task lists must be equal, times equal
within what the plans' heartbeat approximation allows.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

import pytest
from qs_server import DUMP_NOW_S, ServiceProcess
from service_double import ServiceDouble

import metaflow_agent as ma
from metaflow_agent import _config

TABLES = {"flows": "flows_v3", "runs": "runs_v3", "steps": "steps_v3", "tasks": "tasks_v3", "metadata": "metadata_v3", "artifacts": "artifact_v3"}
DUMP_ROOT = "/data/metaflow/.metaflow"  # the datastore root the dump's runs recorded
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


def test_one_request_per_question_on_every_generation(at_dump, qs_at_dump, dump_double):
    """With the query service, each question is one request, on master and on 2.5.1 alike."""
    at_dump(qs_at_dump)
    ma.capabilities()  # the probe, once per process
    asks = {
        "10 latest failed runs": lambda: ma.list_runs("TrainFlow", status="failed", limit=10, namespace=None),
        "runs in a window": lambda: ma.list_runs("TrainFlow", since=0, namespace=None),
        "run summary": lambda: ma.run_summary("ShardFlow/14"),
        "failed tasks": lambda: ma.failed_tasks("ShardFlow/14"),
        "tasks of a run": lambda: ma.list_tasks("ShardFlow/14"),
        "runs counted by state": lambda: ma.run_stats("TrainFlow", namespace=None),
        "flows": lambda: ma.list_flows(namespace=None),
        "flows, one user's latest runs": lambda: ma.list_flows(namespace="user:capture"),
    }
    for ask in asks.values():  # once per process: each run's recorded datastore root (and, the
        ask()                  # dump shipping no datastore, a missing task's own root)
    spent = {what: ask().cost.metadata_requests for what, ask in asks.items()}
    assert spent == dict.fromkeys(asks, 1), (dump_double.mode, spent)


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


@pytest.mark.parametrize("run", ["ShardFlow/14", "CrashFlow/15", "TrainFlow/3", "LongFlow/17", "TrainFlow/1"])
def test_diagnose_run_same(at_dump, qs_at_dump, run):
    plans, served = both(at_dump, qs_at_dump, ma.diagnose_run, run, tasks=5, lines=0)
    assert (plans.status, plans.total_failures, plans.truncated) == (served.status, served.total_failures, served.truncated)
    assert [(f.pathspec, f.status, f.exception) for f in plans.failures] == [(f.pathspec, f.status, f.exception) for f in served.failures]
    # summary, tasks in problem states, the _parameters task listing; once per process the probe and
    # the run's recorded root; and, the dump shipping no datastore, the failed task's own root
    assert served.cost.metadata_requests <= 6 < plans.cost.metadata_requests


def test_run_stats_same(at_dump, qs_at_dump, dump_double):
    for flow in RUNS:
        plans, served = both(at_dump, qs_at_dump, ma.run_stats, flow, namespace=None)
        a, b = plans.flows[0], served.flows[0]
        assert (a.examined, a.counts, a.success_rate, a.finished_success_rate) == (b.examined, b.counts, b.success_rate, b.finished_success_rate), flow
        assert set(a.duration_s) == set(b.duration_s)
        for key in a.duration_s:
            assert _close(a.duration_s[key], b.duration_s[key], 20.0), (flow, key)


@pytest.mark.parametrize("namespace", [None, "user:capture", "user:nobody"])
def test_list_flows_same(at_dump, qs_at_dump, namespace):
    plans, served = both(at_dump, qs_at_dump, ma.list_flows, namespace=namespace)
    assert [(f.flow, f.latest_run, f.status, f.steps) for f in plans.flows] == [(f.flow, f.latest_run, f.status, f.steps) for f in served.flows]
    assert any(f.latest_run for f in served.flows) == (namespace != "user:nobody")


# --- artifact search ------------------------------------------------------------------------------
# The dump has no datastore, so each task attempt that has artifact rows gets the data.json Metaflow
# would have written beside them: the same names and sha; sizes and types are made up (derived from
# the sha: the rows carry neither), so that size and type filters select something.
TYPES = ("<class 'int'>", "<class 'float'>", "<class 'str'>", "<class 'numpy.ndarray'>", "<class 'pandas.core.frame.DataFrame'>")


def made_up_info(sha: str) -> dict[str, Any]:
    return {"size": int(sha[:4], 16), "type": TYPES[int(sha[4:6], 16) % len(TYPES)], "encoding": "pickle-v4"}


@pytest.fixture(scope="module")
def dump_datastore(tmp_path_factory, dump_rows) -> str:
    """A local datastore holding a data.json for every task attempt with artifact rows in the dump."""
    sysroot = tmp_path_factory.mktemp("dump-datastore")
    attempts: dict[tuple[str, int, str, int, int], dict[str, str]] = {}
    for a in dump_rows["artifacts"]:
        attempts.setdefault((a["flow_id"], a["run_number"], a["step_name"], a["task_id"], a["attempt_id"]), {})[a["name"]] = a["sha"]
    for (flow, run, step, task, attempt), objects in attempts.items():
        folder = sysroot / ".metaflow" / flow / str(run) / step / str(task)
        folder.mkdir(parents=True, exist_ok=True)
        index = {"objects": objects, "info": {n: made_up_info(sha) for n, sha in objects.items()}}
        (folder / f"{attempt}.data.json").write_text(json.dumps(index))
    return str(sysroot)


@pytest.fixture
def searching(at_dump, monkeypatch, dump_datastore):
    """`at_dump`, with the datastore that matches the dump's artifact rows."""
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", dump_datastore)
    # The dump's runs recorded the real service's root; its data.json files are built here.
    monkeypatch.setenv("METAFLOW_AGENT_DATASTORE_ROOT_MAP", json.dumps({DUMP_ROOT: os.path.join(dump_datastore, ".metaflow")}))
    return at_dump


def page_of(got: ma.ArtifactSearch) -> tuple[Any, ...]:
    """What must be equal either way: hits in order, runs searched, tasks scanned, flags."""
    return ([(h.task, h.name, h.size, h.type, h.sha) for h in got.hits], got.runs_searched, got.scanned,
            got.truncated, got.complete, got.next_cursor is not None)


def every_page(fn, **kwargs) -> list[ma.ArtifactSearch]:
    pages, cursor = [], None
    for _ in range(500):
        got = fn(**kwargs, cursor=cursor)
        pages.append(got)
        cursor = got.next_cursor
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ended")


def search_both(use, qs, **kwargs) -> tuple[list[ma.ArtifactSearch], list[ma.ArtifactSearch]]:
    use(None)
    plans = every_page(ma.search_artifacts, **kwargs)
    use(qs)
    served = every_page(ma.search_artifacts, **kwargs)
    return plans, served


SEARCHES = [
    pytest.param(dict(flow="TrainFlow", name="accuracy"), id="plain-name"),
    pytest.param(dict(flow="TrainFlow", name="acc?racy", limit=4), id="glob-?-paged"),
    pytest.param(dict(flow="TrainFlow", name="[a-e]*", limit=7), id="glob-class-paged"),
    pytest.param(dict(flow="TrainFlow", name="[!a-l]*", runs=3), id="glob-negated-class"),
    pytest.param(dict(flow="TrainFlow", name="*", runs=2, limit=5), id="star-every-page"),
    pytest.param(dict(flow="TrainFlow", name="_task_ok", include_private=True, limit=6), id="include-private"),
    pytest.param(dict(flow="TrainFlow", name="_*", runs=1), id="private-left-out"),
    pytest.param(dict(flow="TrainFlow", name="*", runs=50, limit=40), id="every-run"),
    pytest.param(dict(flow="TrainFlow", name="seed", runs=4), id="runs-4"),
    pytest.param(dict(flow="ShardFlow", name="*", include_private=True, limit=100), id="wide-retried-latest-attempt"),
    pytest.param(dict(flow="ShardFlow", name="s*", runs=1, limit=33), id="wide-one-run-paged"),
    pytest.param(dict(flow="CrashFlow", name="*", limit=3), id="crashed-tasks-no-data"),
    pytest.param(dict(flow="LongFlow", name="*"), id="running-task-no-data"),
    pytest.param(dict(flow="TrainFlow", name="*", min_size=30_000, limit=6), id="min-size"),
    pytest.param(dict(flow="TrainFlow", name="*", max_size=9_000, runs=5, limit=8), id="max-size"),
    pytest.param(dict(flow="TrainFlow", name="*", type="ndarray", limit=5), id="type"),
    pytest.param(dict(flow="ShardFlow", name="*", type="DataFrame", min_size=20_000, limit=50), id="type-and-size-wide"),
    pytest.param(dict(flow="TrainFlow", name="nothing-here"), id="no-hit"),
]


@pytest.mark.parametrize("kwargs", SEARCHES)
def test_search_artifacts_same(searching, qs_at_dump, kwargs):
    plans, served = search_both(searching, qs_at_dump, namespace=None, **kwargs)
    assert [page_of(p) for p in plans] == [page_of(s) for s in served]
    assert all(s.notes[0].startswith("query service at") for s in served)
    assert sum(len(p.hits) for p in plans) == len({(h.task, h.name) for p in plans for h in p.hits})  # no hit twice


@pytest.mark.parametrize("namespace", ["user:capture", "team:a", "team:b", "user:nobody"])
def test_search_artifacts_namespace_same(searching, qs_at_dump, namespace):
    plans, served = search_both(searching, qs_at_dump, flow="TrainFlow", name="accuracy", namespace=namespace, limit=3)
    assert [page_of(p) for p in plans] == [page_of(s) for s in served]
    if namespace == "team:a":
        assert {r for p in served for r in p.runs_searched} == {"1", "3", "5", "7", "9", "11"}
    if namespace == "user:nobody":
        assert served[0].runs_searched == [] and served[0].hits == [] and served[0].complete


def test_search_artifacts_since_until_same(searching, qs_at_dump, dump_rows):
    """Both ends are inclusive, to the millisecond."""
    since, until = _iso(_ts(dump_rows, "TrainFlow", 4)), _iso(_ts(dump_rows, "TrainFlow", 9))
    plans, served = search_both(searching, qs_at_dump, flow="TrainFlow", name="*", since=since, until=until, runs=50,
                                namespace=None, limit=9)
    assert [page_of(p) for p in plans] == [page_of(s) for s in served]
    assert {r for p in served for r in p.runs_searched} == {"4", "5", "6", "7", "8", "9"}


def _ts(dump_rows, flow: str, run: int) -> int:
    return next(r["ts_epoch"] for r in dump_rows["runs"] if r["flow_id"] == flow and r["run_number"] == run)


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def test_search_artifacts_cut_pages_resume_the_same(searching, qs_at_dump):
    """A caller that shows part of a page (resume_cursor) gets the rest next, on either path."""
    kwargs = dict(flow="TrainFlow", name="*", runs=3, namespace=None, limit=10)
    for qs in (None, qs_at_dump):
        searching(qs)
        whole = [(h.task, h.name) for p in every_page(ma.search_artifacts, **kwargs) for h in p.hits]
        seen, cursor = [], None
        while True:
            page = ma.search_artifacts(**kwargs, cursor=cursor)
            keep = min(3, len(page.hits))
            seen += [(h.task, h.name) for h in page.hits[:keep]]
            cursor = ma.resume_cursor(page, keep) if keep else None
            if cursor is None:
                break
        assert seen == whole, qs


def test_search_artifacts_costs_less_through_the_service(searching, qs_at_dump):
    """The same question: requests and datastore reads with and without the query service."""
    kwargs = dict(flow="TrainFlow", name="accuracy", namespace=None, runs=10, limit=50)
    searching(None)
    plans = ma.search_artifacts(**kwargs)
    searching(qs_at_dump)
    ma.capabilities()  # the probe, once per process
    served = ma.search_artifacts(**kwargs)
    assert page_of(plans) == page_of(served)
    assert served.cost.metadata_requests <= 1 + len(served.runs_searched)  # first time: each run's recorded root
    served = ma.search_artifacts(**kwargs)  # remembered per process
    tasks = len({h.task for h in served.hits})
    assert served.cost.metadata_requests == 1
    assert served.cost.datastore_reads == tasks  # one data.json per task with a hit, no listing
    # the plans: the run listing, the steps of each run, the tasks of each step; a listing and a data.json per task
    assert plans.cost.metadata_requests >= 1 + len(plans.runs_searched) * 2
    assert plans.cost.datastore_reads == 2 * plans.scanned
    print(f"\nsearch_artifacts TrainFlow accuracy x10 runs: plans {plans.cost.metadata_requests} requests, "
          f"{plans.cost.datastore_reads} reads; query service {served.cost.metadata_requests} request, {served.cost.datastore_reads} reads")
    with_filter = dict(kwargs, name="*", min_size=60_000)
    searching(None)
    plans = ma.search_artifacts(**with_filter)
    searching(qs_at_dump)
    served = ma.search_artifacts(**with_filter)
    assert page_of(plans) == page_of(served)
    assert served.cost.datastore_reads <= plans.scanned < plans.cost.datastore_reads
    print(f"search_artifacts TrainFlow * min_size=60000: plans {plans.cost.metadata_requests} requests, {plans.cost.datastore_reads} reads; "
          f"query service {served.cost.metadata_requests} request(s), {served.cost.datastore_reads} reads")


def test_search_artifacts_cursor_stays_on_its_path(searching, qs_at_dump):
    searching(None)
    first = ma.search_artifacts("TrainFlow", name="*", namespace=None, runs=2, limit=5)
    searching(qs_at_dump)
    second = ma.search_artifacts("TrainFlow", name="*", namespace=None, runs=2, limit=5, cursor=first.next_cursor)
    assert second.notes[0].startswith("scanned")  # a cursor of the plans continues on the plans
    served = ma.search_artifacts("TrainFlow", name="*", namespace=None, runs=2, limit=5)
    searching(None)
    with pytest.raises(ma.BadCursor, match="query service"):
        ma.search_artifacts("TrainFlow", name="*", namespace=None, runs=2, limit=5, cursor=served.next_cursor)
    searching(qs_at_dump)
    with pytest.raises(ma.BadCursor):
        ma.search_artifacts("TrainFlow", name="acc*", namespace=None, runs=2, limit=5, cursor=served.next_cursor)


def test_search_artifacts_budget_is_said(searching, qs_at_dump, monkeypatch):
    """Past the data.json budget both paths stop, say so, and keep what they found in order; through
    the service the budget counts only tasks with a matching name, so it gets further."""
    kwargs = dict(flow="TrainFlow", name="*", min_size=60_000, runs=10, namespace=None, limit=50)
    searching(None)
    full = [(h.task, h.name) for h in ma.search_artifacts(**kwargs).hits]
    monkeypatch.setenv("METAFLOW_AGENT_SEARCH_TASKS_BUDGET", "5")
    for qs in (None, qs_at_dump):
        searching(qs)
        got = ma.search_artifacts(**kwargs)
        assert not got.complete and got.next_cursor is None and any("budget" in n for n in got.notes), got.notes
        assert [(h.task, h.name) for h in got.hits] == full[:len(got.hits)] and got.hits
        assert got.scanned >= 5
        if qs is not None:
            assert got.cost.datastore_reads == 5 and any("query service" in n for n in got.notes)


def test_search_artifacts_without_the_datastore_is_incomplete_both_ways(at_dump, qs_at_dump):
    """The database says which artifacts exist; without their data.json (another datastore root)
    neither path can say their size or type: no hits, and the answer says it is incomplete and why."""
    at_dump(None)
    plans = ma.search_artifacts("TrainFlow", name="accuracy", namespace=None, runs=3)
    at_dump(qs_at_dump)
    served = ma.search_artifacts("TrainFlow", name="accuracy", namespace=None, runs=3)
    assert plans.hits == served.hits == [] and not plans.complete and not served.complete
    assert plans.scanned == served.scanned and plans.runs_searched == served.runs_searched == ["12", "11", "10"]
    assert any("no data.json at /data/metaflow/.metaflow" in n for n in served.notes), served.notes
    assert served.cost.datastore_reads == 0  # the data.json reads failed: nothing was there to count


@pytest.mark.parametrize("cap,kwargs", [
    (3, dict(flow="TrainFlow", name="*", min_size=60_000, limit=9)),  # pages ending on a run's last hit: the next in the next run
    (4, dict(flow="TrainFlow", name="*", min_size=60_000, limit=5)),
    (7, dict(flow="TrainFlow", name="[a-m]*", type="int", limit=4)),
    (9, dict(flow="ShardFlow", name="*", max_size=9_000, limit=25)),
])
def test_search_artifacts_same_across_many_service_pages(searching, qs_at_dump, monkeypatch, cap, kwargs):
    """With small service pages, one answer spans many of them, and a page's runs may reach past the
    next page's start (its last hit ends a run): still the same pages, runs and counts."""
    from metaflow_agent import _artifacts

    monkeypatch.setattr(_artifacts, "SERVICE_PAGE_CAP", cap)
    monkeypatch.setattr(_artifacts, "SERVED_PAGES", 10_000)
    plans, served = search_both(searching, qs_at_dump, namespace=None, runs=50, **kwargs)
    assert [page_of(p) for p in plans] == [page_of(s) for s in served]
    assert sum(s.cost.metadata_requests for s in served) > len(served)  # several requests per answer


def test_search_artifacts_relative_window_pages_through_the_service(searching, qs_at_dump):
    """A relative window ('3650d') is resolved on the first page and carried by the cursor: the
    service's cursor stays bound to the same query while the clock moves."""
    kwargs = dict(flow="TrainFlow", name="*", runs=3, namespace=None, limit=6)
    searching(qs_at_dump)
    fixed = [(h.task, h.name) for p in every_page(ma.search_artifacts, **kwargs) for h in p.hits]
    relative = every_page(ma.search_artifacts, **kwargs, since="3650d")
    assert len(relative) > 2 and [(h.task, h.name) for p in relative for h in p.hits] == fixed
