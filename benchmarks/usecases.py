"""The six agent questions, each answered three ways.

* `naive_*` — the Metaflow Client API code an agent would naturally write (the audit
  shows these functions verbatim and traces what they send).
* `ours_*` — the same question through `metaflow_agent`.
* `peer_*` — the peer `metaflow-mcp-server` 0.5.0's own tool function for it
  (imported from its package in its own virtual environment).

Every function takes the case's arguments and returns `(output_text, found)`:
the text an agent would receive, and a normalised set of what was found, so the
three answers can be compared.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from itertools import islice
from typing import Any

USE_CASES = (
    ("failed_tasks", "Failed tasks of a run, with their errors"),
    ("latest_failed_runs", "The 10 latest failed runs of a flow"),
    ("runs_in_range", "Runs created in a time window, with status"),
    ("log_tail", "Last 50 lines of a task's stdout"),
    ("artifact_metadata", "Names, sizes and types of a task's artifacts"),
    ("artifact_search", "Artifacts named `model` in the 10 latest runs, with size and type"),
)


def _dump(obj: Any) -> str:
    return json.dumps(obj, default=str, separators=(",", ":"))


def _local_dt(ms: int) -> datetime:
    """The Client's created_at is a naive local datetime."""
    return datetime.fromtimestamp(ms / 1000.0)


# --- the naive Client API code ---------------------------------------------------------
def naive_failed_tasks(run: str) -> list[dict]:
    from metaflow import Run

    failed = []
    for step in Run(run):
        for task in step:
            if not task.successful:
                failed.append({"task": task.pathspec, "finished": task.finished, "exception": repr(task.exception)})
    return failed


def naive_latest_failed_runs(flow: str, n: int = 10) -> list[dict]:
    """Failed, not crashed or still running: a run is failed when one of its tasks failed (its
    `_task_ok` is False); a killed or live run is not successful either, but no task of it failed."""
    from metaflow import Flow

    failed = []
    for run in Flow(flow).runs():
        if not run.successful and any("_task_ok" in t and t["_task_ok"].data is False for s in run for t in s):
            failed.append({"run": run.pathspec, "created_at": run.created_at})
            if len(failed) == n:
                break
    return failed


def naive_runs_in_range(flow: str, since: datetime, until: datetime) -> list[dict]:
    from metaflow import Flow

    return [
        {"run": run.pathspec, "created_at": run.created_at, "successful": run.successful}
        for run in Flow(flow)
        if since <= run.created_at <= until
    ]


def naive_log_tail(task: str, n: int = 50) -> list[str]:
    from metaflow import Task

    return Task(task).stdout.splitlines()[-n:]


def naive_artifact_metadata(task: str) -> list[dict]:
    from metaflow import Task

    return [{"name": a.id, "type": type(a.data).__name__, "size": sys.getsizeof(a.data)} for a in Task(task)]


def naive_artifact_search(flow: str, name: str, runs: int = 10) -> list[dict]:
    from metaflow import Flow

    hits = []
    for run in islice(Flow(flow), runs):
        for step in run:
            for task in step:
                for art in task:
                    if art.id == name:
                        hits.append({"task": task.pathspec, "type": type(art.data).__name__, "size": sys.getsizeof(art.data)})
    return hits


# --- adapters: (args) -> (text, found) ----------------------------------------------------
def _tail_id(pathspec: str) -> str:
    return pathspec.rsplit("/", 1)[-1]


def run_naive(case: str, a: dict[str, Any]) -> tuple[str, list]:
    if case == "failed_tasks":
        out = naive_failed_tasks(a["run"])
        return _dump(out), sorted(x["task"] for x in out)
    if case == "latest_failed_runs":
        out = naive_latest_failed_runs(a["flow"], 10)
        return _dump(out), [_tail_id(x["run"]) for x in out]
    if case == "runs_in_range":
        out = naive_runs_in_range(a["flow"], _local_dt(a["since_ms"]), _local_dt(a["until_ms"]))
        return _dump(out), sorted(_tail_id(x["run"]) for x in out)
    if case == "log_tail":
        out = naive_log_tail(a["task"], 50)
        return _dump(out), out[-1:]
    if case == "artifact_metadata":
        out = naive_artifact_metadata(a["task"])
        return _dump(out), sorted(x["name"] for x in out)
    if case == "artifact_search":
        out = naive_artifact_search(a["flow"], a["name"], 10)
        return _dump(out), sorted(x["task"] for x in out)
    raise ValueError(case)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc).isoformat()


def run_ours(case: str, a: dict[str, Any]) -> tuple[str, list]:
    import metaflow_agent as ma

    if case == "failed_tasks":
        r = ma.failed_tasks(a["run"])
        return r.model_dump_json(), sorted(t.pathspec for t in r.failed if t.status != "retried_ok")
    if case == "latest_failed_runs":
        r = ma.list_runs(a["flow"], status="failed", limit=10, namespace=None)
        return r.model_dump_json(), [x.run_id for x in r.runs]
    if case == "runs_in_range":
        r = ma.list_runs(a["flow"], since=_iso(a["since_ms"]), until=_iso(a["until_ms"]), limit=100, namespace=None)
        return r.model_dump_json(), sorted(x.run_id for x in r.runs)
    if case == "log_tail":
        r = ma.task_logs(a["task"], tail=50)
        return r.model_dump_json(), [ln.text for ln in r.lines][-1:]
    if case == "artifact_metadata":
        r = ma.list_artifacts(a["task"])
        return r.model_dump_json(), sorted(x.name for x in r.artifacts)
    if case == "artifact_search":
        r = ma.search_artifacts(a["flow"], name=a["name"], runs=10, namespace=None)
        return r.model_dump_json(), sorted(h.task for h in r.hits)
    raise ValueError(case)


def run_peer(case: str, a: dict[str, Any]) -> tuple[str, list]:
    from metaflow_mcp_server import server as peer

    if case == "failed_tasks":
        text = peer.get_run(a["run"], summary=True)
        body = json.loads(text)
        found = sorted(f"{a['run']}/{s['step']}/{t['id']}" for s in body.get("steps", []) for t in s.get("failed_tasks", []))
        return text, found
    if case == "latest_failed_runs":
        text = peer.search_runs(a["flow"], last_n=10, status="failed")
        return text, [r["id"] for r in json.loads(text).get("runs", [])]
    if case == "runs_in_range":
        text = peer.search_runs(a["flow"], last_n=100, created_after=_iso(a["since_ms"]), created_before=_iso(a["until_ms"]))
        return text, sorted(r["id"] for r in json.loads(text).get("runs", []))
    if case == "log_tail":
        text = peer.get_task_logs(a["task"], stderr=False, tail=50)
        lines = (json.loads(text).get("stdout") or "").splitlines()
        return text, lines[-1:]
    if case == "artifact_metadata":
        text = peer.list_artifacts(a["task"])
        return text, sorted(x["name"] for x in json.loads(text).get("artifacts", []))
    if case == "artifact_search":
        text = peer.search_artifacts(a["flow"], a["name"], last_n_runs=10)
        return text, sorted(m["task"] for m in json.loads(text).get("matches", []))
    raise ValueError(case)


RUNNERS = {"naive": run_naive, "ours": run_ours, "peer": run_peer}
