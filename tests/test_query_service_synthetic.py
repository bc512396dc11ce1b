"""The query service on synthetic rows shaped like the real dump's (benchmarks/query_service/generate.py):
more combinations than the dump holds — live runs, retried tasks in many runs, killed tasks, a
500-task run — every state checked against the Python rule."""

from __future__ import annotations

from collections import Counter

from qs_reference import python_states

from benchmarks.query_service.generate import NOW_S

API = "/agent/v1"
NOW = {"_now": NOW_S}


def _all(server, path, params):
    rows, params = [], dict(params)
    while True:
        reply = server.get(path, params)
        assert reply.status == 200, reply.body
        rows += reply.body["data"]
        if not reply.headers.get("x-next-cursor"):
            return rows
        params["_cursor"] = reply.headers["x-next-cursor"]


def test_every_state_agrees_with_the_python_rule(qs_synthetic, synthetic_db):
    runs, tasks, retried = python_states(synthetic_db, NOW_S)
    assert set(Counter(runs.values())) >= {"completed", "failed", "crashed", "running"}
    assert set(Counter(tasks.values())) >= {"completed", "failed", "crashed", "running"} and any(retried.values())
    served_runs = {}
    for flow in {f for f, _ in runs}:
        for r in _all(qs_synthetic, f"{API}/flows/{flow}/runs", {**NOW, "_limit": 500}):
            served_runs[(flow, r["run_number"])] = r["state"]
    assert served_runs == runs
    served_tasks, served_retried = {}, {}
    for (flow, number) in runs:
        for t in _all(qs_synthetic, f"{API}/flows/{flow}/runs/{number}/tasks", {**NOW, "_limit": 1000}):
            served_tasks[t["task_id"]], served_retried[t["task_id"]] = t["state"], t["retried_ok"]
    assert served_tasks == tasks and served_retried == retried


def test_failed_tasks_of_the_wide_run_in_one_request(qs_synthetic, synthetic_db):
    runs, tasks, _ = python_states(synthetic_db, NOW_S)
    (wide,) = [n for f, n in runs if f == "WideFlow"]
    reply = qs_synthetic.get(f"{API}/flows/WideFlow/runs/{wide}/tasks", {**NOW, "state": "failed"})
    assert reply.status == 200 and "x-next-cursor" not in reply.headers
    failed = reply.body["data"]
    assert len(failed) == 3 and all(t["attempt_count"] == 2 and t["state"] == "failed" for t in failed)
    wide_tasks = {t["task_id"] for t in _all(qs_synthetic, f"{API}/flows/WideFlow/runs/{wide}/tasks", {**NOW, "_limit": 1000})}
    assert len(wide_tasks) == 501  # start + 500 shards (no join: the run stopped; _parameters not listed)
    assert {t["task_id"] for t in failed} == {t for t in wide_tasks if tasks[t] == "failed"}
    summary = qs_synthetic.get(f"{API}/flows/WideFlow/runs/{wide}/summary", NOW).body
    work = {s["step"]: s for s in summary["steps"]}["work"]
    assert work["tasks"] == 500 and work["counts"]["failed"] == 3 and work["counts"]["retried_ok"] == 2


def test_statistics_match_the_run_states(qs_synthetic, synthetic_db):
    runs, _, _ = python_states(synthetic_db, NOW_S)
    body = qs_synthetic.get(f"{API}/stats/runs", {**NOW, "flows": "TrainFlow,ShardFlow,WideFlow", "since": 0}).body
    assert body["runs_examined"] == len(runs)
    assert body["total"]["counts"] == {s: Counter(runs.values())[s] for s in ("running", "completed", "failed", "crashed", "unknown")}
    train = [r for r in _all(qs_synthetic, f"{API}/flows/TrainFlow/runs", {**NOW, "_limit": 500, "state": "completed"})]
    by_flow = {f["flow_id"]: f for f in body["flows"]}
    assert by_flow["TrainFlow"]["duration_ms"]["max"] == max(r["duration_ms"] for r in train)
    assert by_flow["TrainFlow"]["duration_ms"]["min"] == min(r["duration_ms"] for r in train)
