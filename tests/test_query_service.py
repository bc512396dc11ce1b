"""The query service, as a real process over HTTP, on the real metadata service's database.

The dump (shared/service-db) was written by the real service (master) from real runs; its README
says what each run is. Every state is checked at the dump's own clock (`_now`), and against the
state rule evaluated in Python (`metaflow_agent._states`) on the raw rows.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import qs_reference
from qs_reference import python_states
from qs_server import DUMP_NOW_S

API = "/agent/v1"
MIGRATIONS = Path(__file__).resolve().parents[1] / "metaflow_agent_service" / "migrations"
NOW = {"_now": DUMP_NOW_S}

EXPECTED_RUNS = {
    **{("TrainFlow", n): "completed" for n in (1, 2, 4, 5, 7, 8, 9, 11, 12)},
    **{("TrainFlow", n): "failed" for n in (3, 6, 10)},
    ("ShardFlow", 13): "completed",
    ("ShardFlow", 14): "failed",
    ("CrashFlow", 15): "crashed",
    ("CrashFlow", 16): "crashed",
    ("LongFlow", 17): "running",
}
FLOWS = ("TrainFlow", "ShardFlow", "CrashFlow", "LongFlow")


def ok(reply, status: int = 200) -> Any:
    assert reply.status == status, reply.body
    return reply.body


def all_pages(server, path: str, params: dict[str, Any], *, max_pages: int = 200) -> tuple[list[dict[str, Any]], int]:
    """Every row of a paged list, following X-Next-Cursor; (rows, requests)."""
    rows: list[dict[str, Any]] = []
    params = dict(params)
    for n in range(1, max_pages + 1):
        reply = server.get(path, params)
        body = ok(reply)
        rows += body["data"]
        nxt = reply.headers.get("x-next-cursor")
        assert nxt == body["page"]["next_cursor"]
        assert reply.headers["x-limit"] == str(body["page"]["limit"])
        if not nxt:
            return rows, n
        params["_cursor"] = nxt
    raise AssertionError("cursor never ended")


# --- health, capabilities, auth --------------------------------------------------------------
def test_health_is_open_and_checks_the_database(qs_master):
    body = ok(qs_master.get(f"{API}/health", auth=False))
    assert body["status"] == "ok" and body["database"] == "ok"


def test_capabilities_list_routes_limits_and_indexes(qs_master, qs_251):
    caps = ok(qs_master.get(f"{API}/capabilities"))
    paths = {e["path"] for e in caps["endpoints"]}
    for p in ("/flows", "/flows/{flow_id}/runs", "/flows/{flow_id}/runs/{run}/tasks", "/flows/{flow_id}/runs/{run}/summary",
              "/stats/runs", "/flows/{flow_id}/artifacts", "/health", "/capabilities"):
        assert API + p in paths
    assert caps["read_only"] is True and caps["auth"] == "bearer" and caps["now_override"] is True
    assert caps["limits"]["runs"] == {"default": 50, "cap": 500}
    assert caps["database"]["goose_version"] == 20260706000003
    master = {n: i["present"] for n, i in caps["indexes"].items() if i["origin"] == "master"}
    assert len(master) == 5 and all(master.values())
    optional = {n: i for n, i in caps["indexes"].items() if i["origin"] == "optional"}
    assert optional and all(i["migration"].endswith(".sql") and i["present"] is False for i in optional.values())
    old = ok(qs_251.get(f"{API}/capabilities"))
    assert not any(i["present"] for n, i in old["indexes"].items() if i["origin"] == "master")
    assert old["auth"] == "none"


def test_bearer_token_is_required_when_configured(qs_master):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        reply = qs_master.get(f"{API}/flows", auth=False, headers=headers)
        assert reply.status == 401 and reply.body["error"] == "unauthorized"
    assert qs_master.get(f"{API}/capabilities", auth=False).status == 401
    assert qs_master.get(f"{API}/flows", NOW).status == 200


def test_unknown_route_is_a_json_404(qs_master):
    reply = qs_master.get(f"{API}/nope")
    assert reply.status == 404 and reply.body["error"] == "not_found"


# --- runs ----------------------------------------------------------------------------------
def test_run_states_at_the_dumps_clock(qs_master):
    got = {}
    for flow in FLOWS:
        rows, _ = all_pages(qs_master, f"{API}/flows/{flow}/runs", NOW)
        for r in rows:
            got[(flow, r["run_number"])] = r["state"]
            assert r["pathspec"] == f"{flow}/{r['run_number']}"
            if r["state"] == "running":
                assert r["finished_ms"] is None and r["duration_ms"] is None
            else:
                assert r["finished_ms"] > r["created_ms"] and r["duration_ms"] == r["finished_ms"] - r["created_ms"]
    assert got == EXPECTED_RUNS


def test_states_agree_with_the_python_rule_on_every_run_and_task(qs_master, service_db):
    runs, tasks, retried = python_states(service_db, DUMP_NOW_S)
    assert runs == EXPECTED_RUNS
    served_tasks, served_retried = {}, {}
    for (flow, number) in EXPECTED_RUNS:
        rows, _ = all_pages(qs_master, f"{API}/flows/{flow}/runs/{number}/tasks", {**NOW, "_limit": 1000})
        for t in rows:
            served_tasks[t["task_id"]] = t["state"]
            served_retried[t["task_id"]] = t["retried_ok"]
    assert served_tasks == tasks and served_retried == retried
    assert len(tasks) == 370 - 17  # every task but the _parameters pseudo-tasks


def test_run_durations_match_the_last_outcome_row(qs_master, service_db):
    async def last_rows():
        conn = await asyncpg.connect(service_db)
        try:
            return {(r["flow_id"], r["run_number"]): r["m"] for r in await conn.fetch(
                "SELECT flow_id, run_number, max(ts_epoch) AS m FROM metadata_v3 "
                "WHERE field_name IN ('attempt_ok', 'attempt-done') GROUP BY 1, 2")}
        finally:
            await conn.close()

    last = asyncio.run(last_rows())
    rows, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/runs", NOW)
    for r in rows:
        assert r["finished_ms"] == last[("TrainFlow", r["run_number"])]
    # README: ShardFlow 13 and 14 took 119 s and 120 s
    shard = {r["run_number"]: r["duration_ms"] for r in all_pages(qs_master, f"{API}/flows/ShardFlow/runs", NOW)[0]}
    assert round(shard[13] / 1000) == 119 and round(shard[14] / 1000) == 120


@pytest.mark.parametrize("state,flow,want", [
    ("failed", "TrainFlow", [10, 6, 3]),
    ("completed", "TrainFlow", [12, 11, 9, 8, 7, 5, 4, 2, 1]),
    ("crashed", "CrashFlow", [16, 15]),
    ("running", "LongFlow", [17]),
    ("failed,crashed", "CrashFlow", [16, 15]),
    ("running", "TrainFlow", []),
])
def test_runs_filtered_by_state(qs_master, state, flow, want):
    rows, _ = all_pages(qs_master, f"{API}/flows/{flow}/runs", {**NOW, "state": state})
    assert [r["run_number"] for r in rows] == want


def test_runs_filtered_by_tags_user_and_time(qs_master):
    def numbers(**params):
        return [r["run_number"] for r in all_pages(qs_master, f"{API}/flows/TrainFlow/runs", {**NOW, **params})[0]]

    assert numbers(tags_any="team:a") == [11, 9, 7, 5, 3, 1]
    assert numbers(tags_any="team:a,team:b") == list(range(12, 0, -1))
    assert numbers(tags_all="team:b,user:capture") == [12, 10, 8, 6, 4, 2]
    assert numbers(tags_all="team:a,team:b") == []
    assert numbers(user="capture") == list(range(12, 0, -1))
    assert numbers(user="someone") == []
    created = {r["run_number"]: r["created_ms"] for r in all_pages(qs_master, f"{API}/flows/TrainFlow/runs", NOW)[0]}
    assert numbers(since=created[5], until=created[8]) == [8, 7, 6, 5]
    assert numbers(since=created[11], state="completed") == [12, 11]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created[9] // 1000 + 1)) + "Z"
    assert numbers(since=iso) == [12, 11, 10]


def test_runs_paging_follows_cursors_newest_first(qs_master):
    rows, requests = all_pages(qs_master, f"{API}/flows/TrainFlow/runs", {**NOW, "_limit": 5})
    assert [r["run_number"] for r in rows] == list(range(12, 0, -1)) and requests == 3
    failed, requests = all_pages(qs_master, f"{API}/flows/TrainFlow/runs", {**NOW, "state": "failed", "_limit": 1})
    assert [r["run_number"] for r in failed] == [10, 6, 3] and requests == 3


def test_state_filter_scan_budget_resumes_with_a_cursor(qs_251):
    """With a budget of 3 runs per request, a short page says so and its cursor resumes the scan."""
    first = ok(qs_251.get(f"{API}/flows/TrainFlow/runs", {**NOW, "state": "failed"}))
    assert [r["run_number"] for r in first["data"]] == [10]  # runs 12, 11, 10 examined
    assert first["page"]["budget_hit"] is True and first["page"]["scanned"] == 3 and first["page"]["next_cursor"]
    rows, requests = all_pages(qs_251, f"{API}/flows/TrainFlow/runs", {**NOW, "state": "failed"})
    assert [r["run_number"] for r in rows] == [10, 6, 3] and requests == 4


def test_same_answers_on_a_251_schema_without_the_cursor_indexes(qs_master, qs_251):
    for flow in FLOWS:
        for params in ({}, {"state": "failed,crashed"}, {"tags_any": "team:a", "_limit": 4}):
            a, _ = all_pages(qs_master, f"{API}/flows/{flow}/runs", {**NOW, **params})
            b, _ = all_pages(qs_251, f"{API}/flows/{flow}/runs", {**NOW, **params})
            assert a == b, (flow, params)
    for path in ("/flows/ShardFlow/runs/14/tasks", "/flows/ShardFlow/runs/13/summary", "/flows"):
        assert ok(qs_master.get(API + path, NOW))["data" if "summary" not in path else "steps"] == \
            ok(qs_251.get(API + path, NOW))["data" if "summary" not in path else "steps"]


def test_a_later_clock_makes_the_running_run_crashed(qs_master, qs_plain):
    later = ok(qs_master.get(f"{API}/flows/LongFlow/runs/17", {"_now": DUMP_NOW_S + 3600}))["data"]
    assert later["state"] == "crashed" and later["finished_ms"] is not None
    # Without the test clock the database's now() decides: the dump is in the past by then.
    assert ok(qs_plain.get(f"{API}/flows/LongFlow/runs/17"))["data"]["state"] == "crashed"
    within = ok(qs_master.get(f"{API}/flows/LongFlow/runs/17", {"_now": 1796061091 + 100}))["data"]
    assert within["state"] == "unknown"  # a heartbeat 60-360 s old proves nothing either way


def test_one_run_by_number(qs_master):
    run = ok(qs_master.get(f"{API}/flows/ShardFlow/runs/14", NOW))["data"]
    assert run["state"] == "failed" and run["user"] == "capture" and run["heartbeat_s"] == 1796060625


# --- tasks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("run,state,want", [
    ("ShardFlow/14", "failed", [359, 360, 361]),
    ("ShardFlow/13", "failed", []),
    ("ShardFlow/13", "retried_ok", [100]),
    ("CrashFlow/15", "crashed", [364]),
    ("CrashFlow/16", "crashed", [367]),
    ("LongFlow/17", "running", [370]),
    ("TrainFlow/3", "failed", [13]),
    ("TrainFlow/6", "failed", [27]),
    ("TrainFlow/10", "failed", [45]),
    ("ShardFlow/14", "failed,crashed,running,unknown", [359, 360, 361]),
])
def test_tasks_by_state(qs_master, run, state, want):
    flow, number = run.split("/")
    body = ok(qs_master.get(f"{API}/flows/{flow}/runs/{number}/tasks", {**NOW, "state": state}))
    assert [t["task_id"] for t in body["data"]] == want
    assert body["run"]["state"] == EXPECTED_RUNS[(flow, int(number))]


def test_failed_task_attempts_and_timing(qs_master):
    body = ok(qs_master.get(f"{API}/flows/ShardFlow/runs/14/tasks", {**NOW, "state": "failed"}))
    for t in body["data"]:
        assert t["step"] == "work" and t["attempt_count"] == 2
        assert [(a["attempt"], a["ok"]) for a in t["attempts"]] == [(0, False), (1, False)]
        assert t["started_ms"] == t["attempts"][0]["started_ms"] and t["finished_ms"] == t["attempts"][1]["finished_ms"]
        assert t["duration_ms"] == t["finished_ms"] - t["started_ms"] > 0
        assert t["pathspec"] == f"ShardFlow/14/work/{t['task_id']}"
    retried = ok(qs_master.get(f"{API}/flows/ShardFlow/runs/13/tasks", {**NOW, "state": "retried_ok"}))["data"][0]
    assert retried["state"] == "completed" and retried["retried_ok"] is True
    assert [(a["attempt"], a["ok"]) for a in retried["attempts"]] == [(0, False), (1, True)]
    crashed = ok(qs_master.get(f"{API}/flows/CrashFlow/runs/15/tasks", {**NOW, "state": "crashed"}))["data"][0]
    assert crashed["attempts"] == [{"attempt": 0, "ok": None, "started_ms": crashed["started_ms"], "finished_ms": None}]
    assert crashed["finished_ms"] is None and crashed["duration_ms"] is None


def test_tasks_paging_and_step_filter(qs_master):
    rows, requests = all_pages(qs_master, f"{API}/flows/ShardFlow/runs/13/tasks", {**NOW, "_limit": 50})
    ids = [t["task_id"] for t in rows]
    assert ids == list(range(57, 210)) and requests == 4  # 153 tasks (the _parameters task 56 left out)
    work, _ = all_pages(qs_master, f"{API}/flows/ShardFlow/runs/13/tasks", {**NOW, "step": "work", "_limit": 1000})
    assert [t["task_id"] for t in work] == list(range(58, 208))
    assert ok(qs_master.get(f"{API}/flows/ShardFlow/runs/13/tasks", {**NOW, "step": "nope"}))["data"] == []


# --- run summary -------------------------------------------------------------------------------
def test_summary_of_a_wide_run_with_a_retry(qs_master):
    body = ok(qs_master.get(f"{API}/flows/ShardFlow/runs/13/summary", NOW))
    steps = {s["step"]: s for s in body["steps"]}
    assert [s["step"] for s in body["steps"]] == ["start", "work", "join", "end"]
    assert steps["work"]["tasks"] == 150
    assert steps["work"]["counts"] == {"completed": 150, "failed": 0, "crashed": 0, "running": 0, "unknown": 0, "retried_ok": 1}
    assert steps["work"]["slowest"][0]["task_id"] == 100  # the retried shard took longest
    assert len(steps["work"]["slowest"]) == 3
    assert body["totals"]["tasks"] == 153 and body["totals"]["counts"]["completed"] == 153
    assert body["run"]["state"] == "completed"
    for s in body["steps"]:
        assert s["duration_ms"] == s["finished_ms"] - s["started_ms"] >= 0


def test_summary_of_failed_crashed_and_running_runs(qs_master):
    failed = {s["step"]: s for s in ok(qs_master.get(f"{API}/flows/ShardFlow/runs/14/summary", NOW))["steps"]}
    assert failed["work"]["counts"]["failed"] == 3 and failed["work"]["counts"]["completed"] == 147
    assert set(failed) == {"start", "work"}
    crashed = ok(qs_master.get(f"{API}/flows/CrashFlow/runs/16/summary", {**NOW, "slowest": 0}))
    boom = {s["step"]: s for s in crashed["steps"]}["boom"]
    assert boom["counts"]["crashed"] == 1 and boom["finished_ms"] is None and boom["slowest"] == []
    running = {s["step"]: s for s in ok(qs_master.get(f"{API}/flows/LongFlow/runs/17/summary", NOW))["steps"]}
    assert running["nap"]["counts"]["running"] == 1 and running["nap"]["finished_ms"] is None


# --- run statistics --------------------------------------------------------------------------
def test_run_stats_over_the_last_n_runs(qs_master):
    body = ok(qs_master.get(f"{API}/stats/runs", {**NOW, "flows": "TrainFlow", "last": 100}))
    train = body["flows"][0]
    assert train["runs_examined"] == 12 and body["runs_examined"] == 12
    assert train["counts"] == {"completed": 9, "failed": 3, "running": 0, "crashed": 0, "unknown": 0}
    assert train["success_rate"] == 0.75 and train["success_rate_finished"] == 0.75
    runs, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/runs", NOW)
    durations = sorted(r["duration_ms"] for r in runs if r["state"] == "completed")
    d = train["duration_ms"]
    assert (d["min"], d["max"], d["of"]) == (durations[0], durations[-1], 9)
    assert d["p50"] == statistics.median(durations)
    assert d["p90"] == pytest.approx(statistics.quantiles(durations, n=10, method="inclusive")[-1])
    last5 = ok(qs_master.get(f"{API}/stats/runs", {**NOW, "flows": "TrainFlow", "last": 5}))["flows"][0]
    assert last5["runs_examined"] == 5 and last5["counts"]["failed"] == 1  # runs 12..8 hold failed run 10


def test_run_stats_over_several_flows_and_a_window(qs_master):
    body = ok(qs_master.get(f"{API}/stats/runs", {**NOW, "flows": ",".join(FLOWS), "since": 0}))
    assert body["total"]["runs_examined"] == 17
    assert body["total"]["counts"] == {"completed": 10, "failed": 4, "crashed": 2, "running": 1, "unknown": 0}
    assert body["total"]["success_rate_finished"] == pytest.approx(10 / 16)
    by_flow = {f["flow_id"]: f for f in body["flows"]}
    assert by_flow["LongFlow"]["success_rate_finished"] is None and by_flow["CrashFlow"]["counts"]["crashed"] == 2
    assert not any(f["truncated"] for f in body["flows"])
    none = ok(qs_master.get(f"{API}/stats/runs", {**NOW, "flows": "TrainFlow", "since": 1, "until": 2}))
    assert none["runs_examined"] == 0 and none["flows"][0]["success_rate"] is None
    typo = qs_master.get(f"{API}/stats/runs", {**NOW, "flows": "TrainFlow,Trainflow", "last": 5})
    assert typo.status == 404 and "'Trainflow'" in typo.body["message"]


def test_run_stats_per_step(qs_master):
    body = ok(qs_master.get(f"{API}/stats/runs", {**NOW, "flows": "TrainFlow", "last": 100, "per_step": "true"}))
    steps = {s["step"]: s for s in body["steps"]}
    assert [s["step"] for s in body["steps"]] == ["start", "train", "evaluate", "end"]
    assert steps["train"]["runs"] == 12 and steps["train"]["runs_with_failed_task"] == 2  # runs 3 and 10
    assert steps["evaluate"]["runs_with_failed_task"] == 1 and steps["end"]["runs"] == 9
    assert steps["train"]["duration_ms"]["of"] == 9


# --- flows and artifacts ---------------------------------------------------------------------
def test_flows_with_their_latest_run(qs_master):
    rows, requests = all_pages(qs_master, f"{API}/flows", {**NOW, "_limit": 1})
    assert requests == 4
    latest = {f["flow_id"]: (f["latest_run"]["run_number"], f["latest_run"]["state"]) for f in rows}
    assert latest == {"CrashFlow": (16, "crashed"), "LongFlow": (17, "running"), "ShardFlow": (14, "failed"), "TrainFlow": (12, "completed")}


def test_artifact_search_by_name_glob_and_prefix(qs_master):
    rows, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": "accuracy"})
    # accuracy is set in evaluate and carried to end: 9 completed runs x 2 + run 6's evaluate (which raised after setting it)
    assert len(rows) == 19 and {r["step"] for r in rows} == {"evaluate", "end"}
    assert [r["run_number"] for r in rows] == sorted((r["run_number"] for r in rows), reverse=True)
    first = rows[0]
    assert set(first) >= {"name", "run_number", "step", "task_id", "attempt", "sha", "type", "location", "ds_type", "tasks_before"}
    assert first["location"] == ":root:/data/metaflow/.metaflow" and first["ds_type"] == "local"
    prefix, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name_prefix": "accur"})
    assert prefix == rows
    for glob in ("acc?racy", "[a]cc*", "[!b-z]ccuracy", "a*y"):
        assert all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": glob})[0] == rows, glob
    assert all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": "acc"})[0] == []
    assert all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": "[b-z]ccuracy"})[0] == []


GLOBS = ["*", "[a-e]*", "[!_]*", "_task_?k", "*_*", "[[]x", "a[", "x]", "[]a]*", "[!]a]*", "%", "_*", "?", "[-a]*"]


@pytest.mark.parametrize("glob", GLOBS)
def test_artifact_search_globs_are_fnmatch(qs_master, service_db, glob):
    """Every name fnmatch matches, and only those, whatever LIKE and the regular expression make of it."""
    names = asyncio.run(_names(service_db, "TrainFlow"))
    want = sorted(n for n in names if fnmatch.fnmatchcase(n, glob))
    rows, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": glob, "include_private": "true", "_limit": 1000})
    assert sorted({r["name"] for r in rows}) == want


def _hit(row: dict[str, Any]) -> dict[str, Any]:
    """A hit without its place in the page (`tasks_before` counts from the page's first task)."""
    return {k: v for k, v in row.items() if k not in ("tasks_before", "empty_tasks_before")}


async def _names(dsn: str, flow: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["name"] for r in await conn.fetch("SELECT DISTINCT name FROM artifact_v3 WHERE flow_id = $1", flow)}
    finally:
        await conn.close()


def test_artifact_search_latest_attempt_and_private_names(qs_master, service_db):
    latest, _ = all_pages(qs_master, f"{API}/flows/ShardFlow/artifacts", {"name": "_task_ok", "include_private": "true"})
    every, _ = all_pages(qs_master, f"{API}/flows/ShardFlow/artifacts", {"name": "_task_ok", "include_private": "true", "attempts": "all"})
    by_task = defaultdict(list)
    for r in every:
        by_task[r["task_id"]].append(r["attempt"])
    assert sorted(by_task[100]) == [0, 1] and [r["attempt"] for r in latest if r["task_id"] == 100] == [1]
    assert len(every) - len(latest) == 4  # four tasks retried: 100, 359, 360, 361
    paged, requests = all_pages(qs_master, f"{API}/flows/ShardFlow/artifacts", {"name": "_task_ok", "include_private": "true",
                                                                                "attempts": "all", "_limit": 7})
    assert [_hit(r) for r in paged] == [_hit(r) for r in every] and requests == -(-len(every) // 7)
    assert all_pages(qs_master, f"{API}/flows/ShardFlow/artifacts", {"name": "_task_ok"})[0] == []  # Metaflow's own: asked for
    public = {n for n in asyncio.run(_names(service_db, "ShardFlow")) if not n.startswith("_")}
    assert public and {r["name"] for r in all_pages(qs_master, f"{API}/flows/ShardFlow/artifacts", {"name": "*"})[0]} == public


@pytest.mark.parametrize("flow,glob,private,runs,limit", [
    ("TrainFlow", "*", False, 5, 7),
    ("TrainFlow", "accuracy", False, 50, 4),
    ("TrainFlow", "[!a-l]*", True, 3, 10),
    ("ShardFlow", "*", True, 2, 250),
    ("ShardFlow", "shard", False, 1, 40),
    ("CrashFlow", "*", True, 50, 5),
    ("LongFlow", "*", False, 50, 1),
    ("TrainFlow", "nothing", False, 12, 3),
])
def test_artifact_search_pages_walk_like_the_library(qs_master, service_db, flow, glob, private, runs, limit):
    """Each page: the hits of the library's walk in its order, and what it covered: the runs and the
    tasks from the previous page's last hit (or the first task) through the next page's first hit
    (or the window's end), the tasks among them without artifact rows, each hit's place in that range."""
    numbers, walk, hits = qs_reference.artifact_walk(service_db, flow, runs,
                                                     lambda n: fnmatch.fnmatchcase(n, glob) and (private or not n.startswith("_")))
    params = {"name": glob, "runs": runs, "_limit": limit, **({"include_private": "true"} if private else {})}
    k, cursor = 0, None
    while True:
        body = ok(qs_master.get(f"{API}/flows/{flow}/artifacts", {**params, **({"_cursor": cursor} if cursor else {})}))
        mine = hits[k * limit:(k + 1) * limit]
        assert [(r["step"], r["task_id"], r["attempt"], r["name"]) for r in body["data"]] == [h[1:] for h in mine]
        start = hits[k * limit - 1][0] if k else 0
        after = hits[(k + 1) * limit][0] if (k + 1) * limit < len(hits) else len(walk) - 1
        assert body["page"]["scanned"] == (after - start + 1 if walk else 0)
        assert body["tasks_without_artifacts"] == sum(1 for w in walk[start:after + 1] if not w[3])
        first_run = walk[start][0] if k else numbers[0] if numbers else None
        last_run = walk[after][0] if (k + 1) * limit < len(hits) else numbers[-1] if numbers else None
        assert body["runs_searched"] == (numbers[numbers.index(first_run):numbers.index(last_run) + 1] if numbers else [])
        assert [r["tasks_before"] for r in body["data"]] == [h[0] - start for h in mine]
        assert [r["empty_tasks_before"] for r in body["data"]] == [sum(1 for w in walk[start:h[0]] if not w[3]) for h in mine]
        cursor = body["page"]["next_cursor"]
        assert (cursor is not None) == ((k + 1) * limit < len(hits))
        k += 1
        if cursor is None:
            break
    assert k == max(1, -(-len(hits) // limit))


def test_artifact_search_window_and_filters(qs_master):
    two = ok(qs_master.get(f"{API}/flows/TrainFlow/artifacts", {"name": "accuracy", "runs": 2}))
    assert two["runs_searched"] == [12, 11] and {r["run_number"] for r in two["data"]} == {12, 11}
    team_a, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": "accuracy", "tags_all": "team:a", "_limit": 2})
    assert {r["run_number"] for r in team_a} == {1, 5, 7, 9, 11}  # the odd runs; 3 failed before evaluate
    nobody = ok(qs_master.get(f"{API}/flows/TrainFlow/artifacts", {"name": "accuracy", "tags_all": "user:nobody"}))
    assert nobody["data"] == [] and nobody["runs_searched"] == [] and nobody["page"]["scanned"] == 0
    runs = ok(qs_master.get(f"{API}/flows/TrainFlow/runs", {**NOW, "_limit": 50}))["data"]
    created = {r["run_number"]: r["created_ms"] for r in runs}
    window, _ = all_pages(qs_master, f"{API}/flows/TrainFlow/artifacts", {"name": "*", "since": created[4], "until": created[9], "_limit": 5})
    assert {r["run_number"] for r in window} == {4, 5, 6, 7, 8, 9}  # both ends inclusive
    crashed = ok(qs_master.get(f"{API}/flows/CrashFlow/artifacts", {"name": "*"}))
    assert crashed["tasks_without_artifacts"] == 2 and crashed["runs_searched"] == [16, 15]  # tasks 364 and 367 were killed


def test_artifact_search_names_use_an_index(pg_cluster):
    """The hits statement reads artifact rows through an index with the name among its conditions:
    the primary key on the schema as the metadata service leaves it, migration 004's index once applied."""
    from pg import service_db_dump

    dsn = pg_cluster.create_db("metaflow_names", dump=service_db_dump())
    plan = asyncio.run(_hits_plan(dsn, "ShardFlow", {"name": "shard", "runs": "2"}))
    assert re.search(_BY_NAME.format(index="artifact_v3_pkey"), plan), plan
    pg_cluster.psql("metaflow_names", stdin=(MIGRATIONS / "004_artifact_names.sql").read_text())
    pg_cluster.psql("metaflow_names", "ANALYZE")
    plan = asyncio.run(_hits_plan(dsn, "ShardFlow", {"name": "shard", "runs": "2"}))
    assert re.search(_BY_NAME.format(index="artifact_v3_idx_agent_names"), plan), plan
    prefix = asyncio.run(_hits_plan(dsn, "ShardFlow", {"name_prefix": "sha", "runs": "2"}, seqscan=False))
    assert "artifact_v3_idx_agent_names on artifact_v3 a" in prefix and "~>=~ 'sha'" in prefix, prefix


# An index scan (plain, or the bitmap kind small tables get) whose conditions include the name.
_BY_NAME = r"(Index (Only )?Scan using {index} on artifact_v3 a|Bitmap Index Scan on {index})\b.*\n\s*Index Cond: .*\(name\)::text = 'shard'"


async def _hits_plan(dsn: str, flow: str, params: dict[str, str], *, seqscan: bool = True) -> str:
    """EXPLAIN of the statement that finds the hits (the service's own SQL, as it runs it)."""
    from metaflow_agent_service import queries as Q
    from metaflow_agent_service.config import Settings
    from metaflow_agent_service.db import init_connection
    from metaflow_agent_service.params import Query

    conn = await asyncpg.connect(dsn)
    plans: list[str] = []

    class Explaining:
        async def fetch(self, sql: str, *args: Any) -> Any:
            if "artifact_v3 a" in sql and "LATERAL" in sql:
                plans.append("\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args)))
            return await conn.fetch(sql, *args)

        async def fetchrow(self, sql: str, *args: Any) -> Any:
            return await conn.fetchrow(sql, *args)

        async def fetchval(self, sql: str, *args: Any) -> Any:
            return await conn.fetchval(sql, *args)

    try:
        await init_connection(conn)
        if not seqscan:  # a table this small is cheaper to read whole; ask what the index would do
            await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        await Q.search_artifacts(Q.Ctx(Explaining(), Settings(dsn=dsn)), flow, Query(params.items(), allowed=Q.ARTIFACTS_PARAMS))
    finally:
        await conn.close()
    assert len(plans) == 1
    return plans[0]


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path,params,param", [
    ("/flows/TrainFlow/runs", {"state": "done"}, "state"),
    ("/flows/TrainFlow/runs", {"_limit": "0"}, "_limit"),
    ("/flows/TrainFlow/runs", {"_limit": "501"}, "_limit"),
    ("/flows/TrainFlow/runs", {"_limit": "ten"}, "_limit"),
    ("/flows/TrainFlow/runs", {"_cursor": "garbage!"}, "_cursor"),
    ("/flows/TrainFlow/runs", {"since": "yesterday"}, "since"),
    ("/flows/TrainFlow/runs", {"since": "2000", "until": "1000"}, "since"),
    ("/flows/TrainFlow/runs", {"colour": "red"}, "colour"),
    ("/flows/TrainFlow/runs", {"user": "a b"}, "user"),
    ("/flows/TrainFlow/runs/3/tasks", {"state": "exploded"}, "state"),
    ("/flows/TrainFlow/runs/3/tasks", {"_limit": "1001"}, "_limit"),
    ("/flows/TrainFlow/runs/3/summary", {"slowest": "99"}, "slowest"),
    ("/stats/runs", {"last": "10"}, "flows"),
    ("/stats/runs", {"flows": "TrainFlow"}, "last"),
    ("/stats/runs", {"flows": "TrainFlow", "last": "0"}, "last"),
    ("/stats/runs", {"flows": ",".join(f"F{i}" for i in range(21)), "last": "1"}, "flows"),
    ("/stats/runs", {"flows": "TrainFlow", "last": "5", "per_step": "maybe"}, "per_step"),
    ("/flows/TrainFlow/artifacts", {}, "name"),
    ("/flows/TrainFlow/artifacts", {"name": "a", "name_prefix": "a"}, "name"),
    ("/flows/TrainFlow/artifacts", {"name": "[z-a]"}, "name"),
    ("/flows/TrainFlow/artifacts", {"name_prefix": "a*"}, "name_prefix"),
    ("/flows/TrainFlow/artifacts", {"name_prefix": "a["}, "name_prefix"),
    ("/flows/TrainFlow/artifacts", {"name": "x", "runs": "0"}, "runs"),
    ("/flows/TrainFlow/artifacts", {"name": "x", "runs": "501"}, "runs"),
    ("/flows/TrainFlow/artifacts", {"name": "x", "include_private": "maybe"}, "include_private"),
    ("/flows/TrainFlow/artifacts", {"name": "x", "runs_per_page": "5"}, "runs_per_page"),
    ("/flows/TrainFlow/artifacts", {"name": "x", "attempts": "some"}, "attempts"),
    ("/flows", {"_cursor": "eyJxIjoiMCIsImsiOlsxXX0"}, "_cursor"),
])
def test_bad_parameters_are_400_naming_the_parameter(qs_master, path, params, param):
    reply = qs_master.get(API + path, {**NOW, **params})
    assert reply.status == 400, reply.body
    assert reply.body["error"] == "bad_request" and reply.body["param"] == param and reply.body["message"]


def test_a_cursor_is_bound_to_its_query(qs_master):
    reply = qs_master.get(f"{API}/flows/TrainFlow/runs", {**NOW, "_limit": 2})
    cursor = reply.headers["x-next-cursor"]
    other = qs_master.get(f"{API}/flows/TrainFlow/runs", {**NOW, "_limit": 2, "state": "failed", "_cursor": cursor})
    assert other.status == 400 and "another query" in other.body["message"]
    assert qs_master.get(f"{API}/flows/ShardFlow/runs", {**NOW, "_cursor": cursor}).status == 400
    assert qs_master.get(f"{API}/flows/TrainFlow/runs", {**NOW, "_limit": 5, "_cursor": cursor}).status == 200  # the limit may change


def test_missing_things_are_404(qs_master):
    for path in ("/flows/NoSuchFlow/runs", "/flows/TrainFlow/runs/999", "/flows/TrainFlow/runs/999/tasks",
                 "/flows/TrainFlow/runs/abc/summary", "/flows/NoSuchFlow/artifacts?name=x"):
        base, _, query = path.partition("?")
        reply = qs_master.get(API + base, {**NOW, **dict(p.split("=") for p in query.split("&") if p)})
        assert reply.status == 404 and reply.body["error"] == "not_found" and reply.body["hint"], path


def test_now_override_needs_the_test_flag(qs_plain):
    reply = qs_plain.get(f"{API}/flows", NOW)
    assert reply.status == 400 and reply.body["param"] == "_now"


# --- read-only, timeouts ----------------------------------------------------------------------
def test_every_pooled_connection_is_read_only_and_time_limited(service_db):
    from metaflow_agent_service.config import Settings
    from metaflow_agent_service.db import create_pool, snapshot

    async def run():
        pool = await create_pool(Settings(dsn=service_db, statement_timeout_ms=300, pool_max=2))
        try:
            async with pool.acquire() as conn:  # outside any explicit transaction
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await conn.execute("INSERT INTO flows_v3 (flow_id, ts_epoch) VALUES ('Evil', 1)")
                assert await conn.fetchval("SHOW statement_timeout") == "300ms"
            async with snapshot(pool) as conn:
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await conn.execute("UPDATE runs_v3 SET tags = '[]'")
            async with snapshot(pool) as conn:
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await conn.execute("CREATE TABLE evil (x int)")
            async with snapshot(pool) as conn:
                with pytest.raises(asyncpg.QueryCanceledError):
                    await conn.execute("SELECT pg_sleep(2)")
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM flows_v3") == 4
        finally:
            await pool.close()

    asyncio.run(run())


def test_statement_timeout_is_a_504(qs_plain, service_db):
    """A query blocked past the timeout (here by a lock held elsewhere) ends as a JSON 504."""

    async def run():
        admin = await asyncpg.connect(service_db)
        try:
            tx = admin.transaction()
            await tx.start()
            await admin.execute("LOCK TABLE runs_v3 IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            reply = await asyncio.to_thread(qs_plain.get, f"{API}/flows/TrainFlow/runs")
            elapsed = time.monotonic() - started
            await tx.rollback()
            return reply, elapsed
        finally:
            await admin.close()

    reply, elapsed = asyncio.run(run())
    assert reply.status == 504 and reply.body["error"] == "query_timeout", reply.body
    assert 0.4 < elapsed < 5
    assert qs_plain.get(f"{API}/flows/TrainFlow/runs").status == 200  # the pool recovered


def test_a_lost_database_connection_is_a_json_503_then_recovers(qs_plain, service_db):
    """Connections killed under the service (a failover, a restart): JSON 503s, never a traceback."""

    async def kill() -> int:
        admin = await asyncpg.connect(service_db)
        try:
            return await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                        "WHERE application_name = $1", f"metaflow-agent-service:{qs_plain.port}")
        finally:
            await admin.close()

    assert asyncio.run(kill()) >= 1
    statuses = []
    for _ in range(10):
        reply = qs_plain.get(f"{API}/flows/TrainFlow/runs")
        statuses.append(reply.status)
        if reply.status == 503:
            assert reply.body["error"] == "database_unavailable" and reply.body["hint"]
        if reply.status == 200:
            break
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}


def test_the_failed_task_search_is_narrowed_only_because_the_rule_allows_it():
    """The narrowing to attempt_ok False rows is derived from the rule table, not assumed."""
    from metaflow_agent_service import sql as S

    assert S.latest_ok_domain("failed") == {False} and S.FAILED_NEEDS_A_FALSE_OK
    assert S.latest_ok_domain("completed") == {True}
    assert S.latest_ok_domain("crashed") == {None} and S.latest_ok_domain("running") == {False, None}


def test_glob_translation_agrees_with_the_library_on_random_globs(service_db):
    """The service's LIKE + regular expression, evaluated by PostgreSQL, against the library's RE2
    glob (`metaflow_agent._regex.compile_glob`, fnmatch's meaning) on random globs and names."""
    import random

    from metaflow_agent._errors import BadPattern
    from metaflow_agent._regex import compile_glob
    from metaflow_agent_service.params import glob_has_class, glob_to_like, glob_to_regex

    rng = random.Random(12)
    alphabet = ["a", "b", "_", "*", "?", "[", "]", "!", "-", "^", "\\", "%", ".", "(", "$", "A", "é",
                "[a-b]", "[!_]", "[]a]", "[!]b]", "[%_]", "[\\]", "[^a]", "[[]", "[a-]", "[.]"]
    names = sorted({"".join(rng.choice("ab_%.-[]^\\A(é$") for _ in range(rng.randint(1, 5))) for _ in range(300)})
    globs = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(400)]

    async def check() -> int:
        conn = await asyncpg.connect(service_db)
        compared = 0
        try:
            for glob in globs:
                try:
                    want = [n for n in names if compile_glob(glob).match(n)]
                except BadPattern:
                    continue  # the library refuses it before asking anyone
                like, regex = glob_to_like(glob), glob_to_regex(glob) if glob_has_class(glob) else None
                try:
                    got = await conn.fetchval("SELECT coalesce(array_agg(n ORDER BY n COLLATE \"C\"), '{}') FROM unnest($1::text[]) AS n "
                                              "WHERE n LIKE $2 AND ($3::text IS NULL OR n ~ $3)", names, like, regex)
                except asyncpg.InvalidRegularExpressionError as exc:
                    raise AssertionError(f"PostgreSQL refuses {glob!r} ({regex}), which the library accepts: {exc}") from None
                assert sorted(got) == sorted(want), (glob, like, regex)
                compared += 1
        finally:
            await conn.close()
        return compared

    assert asyncio.run(check()) > 350  # the rest the library refuses (a range like [b-a]), as PostgreSQL would
