"""The local section's questions, answered four ways: naive Client API code, metaflow_agent, the
peer metaflow-mcp-server 0.5.0 and the file-system floor.

Every runner takes the case's arguments and returns `(answer_text, found)`: the text an agent
would receive and a normalised summary of what was found, compared across the four.

    found per question
    failed_tasks        sorted pathspecs of the failed tasks (a task that succeeded on retry is not one)
    run_summary         [step, tasks, completed] per step
    latest_failed_runs  run ids, newest first
    runs_in_range       sorted [run id, completed?]
    artifact_search     sorted pathspecs of the tasks holding the artifact
    log_tail            the 50 lines' text
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

QUESTIONS = (
    ("failed_tasks", "tasks", "Failed tasks of a run, with their errors"),
    ("run_summary", "tasks", "Run summary: status, per-step counts, first failure"),
    ("latest_failed_runs", "runs", "The 10 latest failed runs of a flow"),
    ("runs_in_range", "runs", "Runs created in a time window, with status"),
    ("artifact_search", "runs", "Artifacts named `model` in the 10 latest runs"),
    ("log_tail", "tasks", "Last 50 lines of a task's stdout (a 4.7 MB log)"),
)


def _dump(obj: Any) -> str:
    return json.dumps(obj, default=str, separators=(",", ":"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc).isoformat()


def case_args(question: str, world: dict[str, Any]) -> dict[str, Any]:
    """The question's arguments on a world (its manifest)."""
    if question in ("failed_tasks", "run_summary"):
        return {"run": world["run"]}
    if question == "log_tail":
        return {"task": world["log_task"]}
    if question == "runs_in_range":
        return {"flow": world["flow"], "since_ms": world["since_ms"], "until_ms": world["until_ms"]}
    if question == "artifact_search":
        return {"flow": world["flow"], "name": "model"}
    return {"flow": world["flow"]}


# --- naive Client API code (the service section's, plus a run summary) -----------------------
def naive_run_summary(run: str) -> dict[str, Any]:
    from metaflow import Run

    r = Run(run)
    steps, first = [], None
    for step in r:
        tasks = list(step)
        ok = 0
        for task in tasks:
            if task.successful:
                ok += 1
            elif first is None:
                first = {"task": task.pathspec, "exception": repr(task.exception)}
        steps.append({"step": step.id, "tasks": len(tasks), "completed": ok, "failed": len(tasks) - ok})
    return {"run": r.pathspec, "successful": r.successful, "finished": r.finished, "created_at": r.created_at,
            "finished_at": r.finished_at, "steps": steps, "first_failure": first}


def run_naive(q: str, a: dict[str, Any]) -> tuple[str, list]:
    from . import usecases as u

    if q == "run_summary":
        out = naive_run_summary(a["run"])
        return _dump(out), sorted([s["step"], s["tasks"], s["completed"]] for s in out["steps"])
    if q == "runs_in_range":
        res = u.naive_runs_in_range(a["flow"], u._local_dt(a["since_ms"]), u._local_dt(a["until_ms"]))
        return _dump(res), sorted([x["run"].rsplit("/", 1)[1], bool(x["successful"])] for x in res)
    if q == "log_tail":
        lines = u.naive_log_tail(a["task"], 50)
        return _dump(lines), lines
    if q == "latest_failed_runs":
        failed = u.naive_latest_failed_runs(a["flow"], 10)
        return _dump(failed), [x["run"].rsplit("/", 1)[1] for x in failed]
    return u.run_naive(q, a)


# --- metaflow_agent ------------------------------------------------------------------------------
def run_ours(q: str, a: dict[str, Any]) -> tuple[str, list]:
    import metaflow_agent as ma

    if q == "failed_tasks":
        r = ma.failed_tasks(a["run"])
        return r.model_dump_json(), sorted(t.pathspec for t in r.failed if t.status != "retried_ok")
    if q == "run_summary":
        s = ma.run_summary(a["run"])
        return s.model_dump_json(), sorted([x.step, x.tasks, x.completed] for x in s.steps)
    if q == "latest_failed_runs":
        runs = ma.list_runs(a["flow"], status="failed", limit=10, namespace=None)
        return runs.model_dump_json(), [x.run_id for x in runs.runs]
    if q == "runs_in_range":
        runs = ma.list_runs(a["flow"], since=_iso(a["since_ms"]), until=_iso(a["until_ms"]), limit=100, namespace=None)
        return runs.model_dump_json(), sorted([x.run_id, x.status == "completed"] for x in runs.runs)
    if q == "artifact_search":
        hits = ma.search_artifacts(a["flow"], name=a["name"], runs=10, namespace=None)
        return hits.model_dump_json(), sorted(h.task for h in hits.hits)
    if q == "log_tail":
        t = ma.task_logs(a["task"], tail=50)
        return t.model_dump_json(), [ln.text for ln in t.lines]
    raise ValueError(q)


# --- the peer: metaflow-mcp-server 0.5.0's own tool functions ------------------------------------
def run_peer(q: str, a: dict[str, Any]) -> tuple[str, list]:
    from metaflow_mcp_server import server as peer

    from . import usecases as u

    if q == "run_summary":
        text = peer.get_run(a["run"], summary=True)
        return text, sorted([s["step"], s["task_count"], s["successful_count"]] for s in json.loads(text).get("steps", []))
    if q == "runs_in_range":
        text = peer.search_runs(a["flow"], last_n=100, created_after=_iso(a["since_ms"]), created_before=_iso(a["until_ms"]))
        return text, sorted([r["id"], bool(r.get("successful"))] for r in json.loads(text).get("runs", []))
    if q == "log_tail":
        text = peer.get_task_logs(a["task"], stderr=False, tail=50)
        return text, (json.loads(text).get("stdout") or "").splitlines()
    return u.run_peer(q, a)


# --- the floor --------------------------------------------------------------------------------------
def floor_runner(root: str) -> Callable[[str, dict[str, Any]], tuple[str, list]]:
    from . import floor as f

    def run(q: str, a: dict[str, Any]) -> tuple[str, list]:
        out: Any = f.QUESTIONS[q](root, a)
        text = _dump(out)
        if q == "failed_tasks":
            return text, sorted(x["task"] for x in out["failed"])
        if q == "run_summary":
            return text, sorted([s["step"], s["tasks"], s["completed"]] for s in out["steps"])
        if q == "latest_failed_runs":
            return text, [x["run"].rsplit("/", 1)[1] for x in out]
        if q == "runs_in_range":
            return text, sorted([x["run"].rsplit("/", 1)[1], x["status"] == "completed"] for x in out)
        if q == "artifact_search":
            return text, sorted(x["task"] for x in out)
        if q == "log_tail":
            return text, out
        raise ValueError(q)

    return run
