"""The typed client (the provider's query_client): against the real service process, and on
answers of the wrong shape."""

from __future__ import annotations

from typing import Any, Mapping

import pytest
from qs_server import DUMP_NOW_S

from metaflow_agent._errors import BadInput, NotFound, ServiceProtocolError, ServiceUnavailable
from metaflow_extensions.agent.plugins.agent_metadata import query_client as C


def getter(server, *, now: bool = True, auth: bool = True):
    """A `get(path, params)` for the client, bound to the server's API root."""

    def get(path: str, params: Mapping[str, Any]) -> tuple[int, Mapping[str, str], Any]:
        reply = server.get(C.API_PREFIX + path, {**params, **({"_now": DUMP_NOW_S} if now else {})}, auth=auth)
        return reply.status, reply.headers, reply.body

    return get


def test_typed_records_from_every_endpoint(qs_master):
    get = getter(qs_master)
    runs = C.list_runs(get, "TrainFlow", states=["failed"])
    assert [r.run_number for r in runs.runs] == [10, 6, 3] and all(r.state == "failed" for r in runs.runs)
    assert runs.page.next_cursor is None and runs.as_of_s == DUMP_NOW_S
    assert C.get_run(get, "LongFlow", "17").state == "running"
    tasks = C.list_tasks(get, "ShardFlow", "14", states=["failed"])
    assert [t.task_id for t in tasks.tasks] == [359, 360, 361] and tasks.run.state == "failed"
    assert tasks.tasks[0].attempts == (C.Attempt(0, False, tasks.tasks[0].attempts[0].started_ms, tasks.tasks[0].attempts[0].finished_ms),
                                       C.Attempt(1, False, tasks.tasks[0].attempts[1].started_ms, tasks.tasks[0].attempts[1].finished_ms))
    retried = C.list_tasks(get, "ShardFlow", "13", states=["retried_ok"]).tasks
    assert [(t.task_id, t.state, t.retried_ok) for t in retried] == [(100, "completed", True)]
    summary = C.run_summary(get, "ShardFlow", "13", slowest=1)
    assert summary.total_tasks == 153 and summary.total_counts["retried_ok"] == 1
    assert [s.step for s in summary.steps] == ["start", "work", "join", "end"] and summary.steps[1].slowest[0].task_id == 100
    stats = C.run_stats(get, ["TrainFlow", "ShardFlow"], last=100, per_step=True)
    assert stats.runs_examined == 14 and stats.total.flow_id is None and stats.flows[0].counts["completed"] == 9
    assert stats.steps and {s.step for s in stats.steps} >= {"train", "work"}
    assert C.run_stats(get, ["TrainFlow"], last=3).steps is None
    flows = C.list_flows(get)
    assert {f.flow_id: f.latest_run.run_number for f in flows.flows if f.latest_run} == {"CrashFlow": 16, "LongFlow": 17, "ShardFlow": 14, "TrainFlow": 12}
    hits = C.search_artifacts(get, "TrainFlow", name="acc*", limit=5)
    assert len(hits.hits) == 5 and hits.page.next_cursor and all(h.name == "accuracy" for h in hits.hits)
    # runs 12, 11, 10 (failed in train: no accuracy) and 9, through 9/end's task: the first hit after the page
    assert hits.runs_searched == (12, 11, 10, 9) and hits.page.scanned == 14 and hits.tasks_without_artifacts == 0
    assert [h.tasks_before for h in hits.hits] == [2, 3, 6, 7, 12]
    more = C.search_artifacts(get, "TrainFlow", name="acc*", limit=5, cursor=hits.page.next_cursor)
    assert {h.pathspec for h in more.hits}.isdisjoint({h.pathspec for h in hits.hits})


def test_paging_with_the_client_matches_one_big_page(qs_master):
    get = getter(qs_master)
    seen, cursor = [], None
    while True:
        page = C.list_tasks(get, "ShardFlow", "13", limit=40, cursor=cursor)
        seen += [t.task_id for t in page.tasks]
        cursor = page.page.next_cursor
        if cursor is None:
            break
    assert seen == [t.task_id for t in C.list_tasks(get, "ShardFlow", "13", limit=1000).tasks]


def test_capabilities_and_probe(qs_master, qs_251):
    caps = C.probe(getter(qs_master, now=False))
    assert caps is not None and caps.service == C.SERVICE_NAME and caps.read_only
    assert C.API_PREFIX + "/stats/runs" in caps.paths and all(caps.indexes[n] for n in caps.indexes if n.startswith("runs_v3"))
    old = C.capabilities(getter(qs_251, now=False))
    assert old.indexes["runs_v3_idx_flow_ts_runnum_desc"] is False


def test_errors_map_to_the_library_tree(qs_master):
    get = getter(qs_master)
    with pytest.raises(BadInput) as bad:
        C.list_runs(get, "TrainFlow", states=["exploded"])
    assert "state" in bad.value.message and bad.value.hint
    with pytest.raises(NotFound):
        C.get_run(get, "TrainFlow", "999")
    with pytest.raises(ServiceUnavailable):
        C.list_flows(getter(qs_master, auth=False))


def _fake(status: int, body: Any):
    return lambda path, params: (status, {}, body)


@pytest.mark.parametrize("body", [
    [],  # a list where an object belongs
    {"flow_id": "F", "as_of_s": 1, "data": [{}], "page": {}},  # rows without fields
    {"flow_id": "F", "as_of_s": "now", "data": [], "page": {"limit": 1, "next_cursor": None, "truncated": False, "scanned": 0, "budget_hit": False}},
    {"flow_id": "F", "as_of_s": 1, "data": "rows", "page": {"limit": 1, "next_cursor": None, "truncated": False, "scanned": 0, "budget_hit": False}},
])
def test_wrong_shapes_raise_protocol_errors(body):
    with pytest.raises(ServiceProtocolError):
        C.list_runs(_fake(200, body), "F")


def test_an_unknown_state_or_a_bool_for_a_number_is_a_protocol_error(qs_master):
    good = qs_master.get(C.API_PREFIX + "/flows/TrainFlow/runs/3", {"_now": DUMP_NOW_S}).body
    odd = {"data": {**good["data"], "state": "exploded"}}
    with pytest.raises(ServiceProtocolError, match="state"):
        C.get_run(_fake(200, odd), "TrainFlow", "3")
    with pytest.raises(ServiceProtocolError, match="run_number"):
        C.get_run(_fake(200, {"data": {**good["data"], "run_number": True}}), "TrainFlow", "3")
    assert C.get_run(_fake(200, good), "TrainFlow", "3").state == "failed"


def test_probe_says_absent_for_other_servers_and_raises_when_refused():
    assert C.probe(_fake(404, None)) is None  # nothing at that path
    assert C.probe(_fake(200, "<html>")) is None  # a web page, not the service
    assert C.probe(_fake(200, {"service": "something-else"})) is None
    with pytest.raises(ServiceUnavailable):
        C.probe(_fake(401, {"error": "unauthorized", "message": "missing or wrong bearer token"}))
    with pytest.raises(ServiceUnavailable):
        C.probe(_fake(503, {"error": "database_unavailable", "message": "down"}))


def test_candidate_urls():
    assert C.candidate_urls({C.URL_ENV: "http://q:8089/agent/v1/", "METAFLOW_SERVICE_URL": "http://m"}) == ["http://q:8089/agent/v1"]
    assert C.candidate_urls({"METAFLOW_SERVICE_URL": "https://mf.example/api/"}) == ["https://mf.example/api/agent/v1"]
    assert C.candidate_urls({}) == []
