"""The file-system floor: the least work that answers each local question.

Plain `os.scandir` and `open` of exactly the files an answer needs, in Python, with no
Metaflow import, so the benchmark can say how far a contender is from what the files allow.
Each function returns what metaflow_agent's answer carries (ids, statuses, counts, the
exception's type and message, sizes and types), decided by the same rules:

- a task's outcome is its latest `attempt_ok` (one `_meta` listing + one read per task;
  an earlier attempt's file is read only when the listing shows more than one);
- local run ids are creation times in microseconds, so the flow folder's listing orders
  runs and bounds a time window before any run record is read;
- a run is completed when its end task's latest attempt succeeded, failed when a task's latest
  attempt failed, and crashed (killed, lost) when neither and nothing happened for `DEAD_AFTER_S`
  (the newest outcome it recorded): the state rule of `metaflow_agent._states`, with quiet time
  standing in for the process table (the worlds' runs are long dead).

    python -m benchmarks.floor ROOT QUESTION JSON-ARGS     # one answer as JSON (the cold-CLI floor)
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import sys
import time
from typing import Any

DEAD_AFTER_S = 360
TAIL_CHUNK = 16 * 1024
SINCE_SLACK_MS = 60_000  # a run's record is written right after its id is taken: ids precede ts_epoch by ms


READ = {"bytes": 0}  # bytes this module read (exact, ranged reads included): the benchmark's byte count


def _names(path: str) -> list[str]:
    with os.scandir(path) as it:
        return [e.name for e in it]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    READ["bytes"] += len(data)
    return data


def _json(path: str) -> Any:
    return json.loads(_read(path))


class _Stub:
    """Stands in for any class in a pickled exception wrapper (its state is a plain dict)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {})


class _ExceptionOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("copyreg", "_reconstructor"):
            import copyreg

            return copyreg._reconstructor  # type: ignore[attr-defined]
        if module == "builtins" and name in ("object", "Exception", "BaseException"):
            return getattr(__import__("builtins"), name)
        if (module, name) == ("metaflow.exception", "MetaflowExceptionWrapper"):
            return _Stub
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def _exception(flow_dir: str, task_dir: str, attempt: int) -> dict[str, Any]:
    index = _json(os.path.join(task_dir, f"{attempt}.data.json"))
    sha = index["objects"].get("_exception")
    if not sha:
        return {}
    obj = _ExceptionOnly(io.BytesIO(gzip.decompress(_read(os.path.join(flow_dir, "data", sha[:2], sha))))).load()
    state = getattr(obj, "__dict__", {})
    trace = state.get("stacktrace") or ""
    return {"type": state.get("type"), "message": state.get("exception"), "traceback": "\n".join(trace.rstrip().splitlines()[-15:])}


def _task_outcome(meta_dir: str) -> tuple[str | None, int, int, list[str], dict[str, Any] | None]:
    """(latest value 'True'/'False' or None, its attempt, ts, the _meta names, the latest record)."""
    names = _names(meta_dir)
    oks = sorted(n for n in names if n.startswith("sysmeta_attempt_ok_"))
    if not oks:
        return None, -1, 0, names, None
    rec = _json(os.path.join(meta_dir, oks[-1]))
    attempt = int(next((t[11:] for t in rec.get("tags", []) if t.startswith("attempt_id:")), 0))
    return rec["value"], attempt, rec.get("ts_epoch", 0), names, rec


def _tasks(run_dir: str, step: str) -> list[str]:
    return sorted((n for n in _names(os.path.join(run_dir, step)) if n != "_meta"), key=lambda t: (len(t), t))


def _steps(run_dir: str) -> list[str]:
    """Steps in the order they started (each step's record), _parameters left out."""
    steps = [n for n in _names(run_dir) if not n.startswith("_")]
    ts = {s: _json(os.path.join(run_dir, s, "_meta", "_self.json"))["ts_epoch"] for s in steps}
    return sorted(steps, key=lambda s: (ts[s], s))


def _walk_outcomes(run_dir: str) -> dict[str, Any]:
    """Every task's outcome in one pass: counts per step, the failed tasks and the retried ones."""
    out: dict[str, Any] = {"steps": [], "failed": [], "retried_ok": [], "crashed": [], "newest_ms": 0}
    for step in _steps(run_dir):
        counts: dict[str, Any] = {"step": step, "tasks": 0, "completed": 0, "failed": 0, "crashed": 0, "retried_ok": 0}
        for task in _tasks(run_dir, step):
            meta = os.path.join(run_dir, step, task, "_meta")
            value, attempt, ts, names, _ = _task_outcome(meta)
            counts["tasks"] += 1
            out["newest_ms"] = max(out["newest_ms"], ts)
            oks = [n for n in names if n.startswith("sysmeta_attempt_ok_")]
            if value == "True":
                counts["completed"] += 1
                if len(oks) > 1 and any(_json(os.path.join(meta, n))["value"] == "False" for n in sorted(oks)[:-1]):
                    counts["retried_ok"] += 1
                    out["retried_ok"].append((step, task))
            elif value == "False":
                counts["failed"] += 1
                out["failed"].append((step, task, attempt, len(oks), names))
            else:
                counts["crashed"] += 1
                out["crashed"].append((step, task))
        out["steps"].append(counts)
    return out


def failed_tasks(root: str, run: str, limit: int = 50) -> dict[str, Any]:
    """Failed tasks of a run with exception, traceback tail, attempts and foreach position."""
    flow, run_id = run.split("/")
    flow_dir = os.path.join(root, flow)
    run_dir = os.path.join(flow_dir, run_id)
    w = _walk_outcomes(run_dir)
    items = []
    for step, task, attempt, attempts, names in w["failed"][:limit]:
        tdir = os.path.join(run_dir, step, task)
        exc = _exception(flow_dir, tdir, attempt)
        stack = sorted(n for n in names if n.startswith("sysmeta_foreach-stack_"))
        where = _json(os.path.join(tdir, "_meta", stack[-1]))["value"].strip("{}") if stack else None
        items.append({"task": f"{run}/{step}/{task}", "attempts": attempts, "foreach": where, **exc})
    return {"run": run, "failed": items, "total_failed": len(w["failed"]), "total_crashed": len(w["crashed"]),
            "retried_ok": [f"{run}/{s}/{t}" for s, t in w["retried_ok"]]}


def run_summary(root: str, run: str) -> dict[str, Any]:
    """Status, timing, per-step counts and the first failure of one run."""
    flow, run_id = run.split("/")
    flow_dir = os.path.join(root, flow)
    run_dir = os.path.join(flow_dir, run_id)
    rec = _json(os.path.join(run_dir, "_meta", "_self.json"))
    w = _walk_outcomes(run_dir)
    end = next((s for s in w["steps"] if s["step"] == "end"), None)
    if end and end["completed"]:
        status = "completed"
    elif w["failed"]:
        status = "failed"
    elif w["crashed"] or time.time() * 1000 - max(w["newest_ms"], rec["ts_epoch"]) > DEAD_AFTER_S * 1000:
        status = "crashed"
    else:
        status = "running"
    first = None
    if w["failed"]:
        step, task, attempt, _, _ = w["failed"][0]
        first = {"task": f"{run}/{step}/{task}", **_exception(flow_dir, os.path.join(run_dir, step, task), attempt)}
    return {"run": run, "status": status, "created_ms": rec["ts_epoch"], "finished_ms": w["newest_ms"] if status != "running" else None,
            "tags": rec.get("tags", []), "steps": w["steps"], "first_failure": first}


def _run_ids(flow_dir: str) -> list[str]:
    """Run ids, newest first: local ids are creation times in microseconds."""
    return sorted((n for n in _names(flow_dir) if n.isdigit()), key=int, reverse=True)


def _run_status(flow_dir: str, run_id: str) -> tuple[str, int]:
    """(status, finished ms) from the end task's latest outcome; a run without one from its newest outcome's age."""
    run_dir = os.path.join(flow_dir, run_id)
    newest = 0
    try:
        ends = _tasks(run_dir, "end")
    except FileNotFoundError:
        ends = []
    for task in ends:
        value, _, ts, _, _ = _task_outcome(os.path.join(run_dir, "end", task, "_meta"))
        newest = max(newest, ts)
        if value == "True":
            return "completed", ts
        if value == "False":
            return "failed", ts
    for step in (n for n in _names(run_dir) if not n.startswith("_") and n != "end"):
        for task in _tasks(run_dir, step):
            value, _, ts, _, _ = _task_outcome(os.path.join(run_dir, step, task, "_meta"))
            newest = max(newest, ts)
            if value == "False":
                return "failed", newest
    alive = time.time() * 1000 - max(newest, int(run_id) // 1000) < DEAD_AFTER_S * 1000
    return ("running" if alive else "crashed"), newest


def _run_info(flow: str, flow_dir: str, run_id: str, status: str) -> dict[str, Any]:
    rec = _json(os.path.join(flow_dir, run_id, "_meta", "_self.json"))
    return {"run": f"{flow}/{run_id}", "status": status, "created_ms": rec["ts_epoch"], "user": rec.get("user_name"), "tags": rec.get("tags", [])}


def latest_failed_runs(root: str, flow: str, limit: int = 10) -> list[dict[str, Any]]:
    """The `limit` newest failed runs: listing order, then one end-task outcome per run until found."""
    flow_dir = os.path.join(root, flow)
    out = []
    for run_id in _run_ids(flow_dir):
        status, _ = _run_status(flow_dir, run_id)
        if status == "failed":
            out.append(_run_info(flow, flow_dir, run_id, status))
            if len(out) == limit:
                break
    return out


def runs_in_range(root: str, flow: str, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Runs created in [since, until], newest first: ids bound the window, records settle its edges."""
    flow_dir = os.path.join(root, flow)
    out = []
    for run_id in _run_ids(flow_dir):
        id_ms = int(run_id) // 1000
        if id_ms > until_ms:
            continue
        if id_ms < since_ms - SINCE_SLACK_MS:
            break
        info = _run_info(flow, flow_dir, run_id, "")
        if since_ms <= info["created_ms"] <= until_ms:
            info["status"] = _run_status(flow_dir, run_id)[0]
            out.append(info)
    return out


def artifact_search(root: str, flow: str, name: str, runs: int = 10) -> list[dict[str, Any]]:
    """Artifacts called `name` in the `runs` newest runs: one data.json per task, nothing unpickled."""
    flow_dir = os.path.join(root, flow)
    hits = []
    for run_id in _run_ids(flow_dir)[:runs]:
        run_dir = os.path.join(flow_dir, run_id)
        for step in sorted(n for n in _names(run_dir) if not n.startswith("_")):
            for task in _tasks(run_dir, step):
                tdir = os.path.join(run_dir, step, task)
                done = [int(n.split(".", 1)[0]) for n in _names(tdir) if n.endswith(".data.json")]
                if not done:
                    continue
                index = _json(os.path.join(tdir, f"{max(done)}.data.json"))
                if name in index["objects"]:
                    info = index["info"][name]
                    hits.append({"task": f"{flow}/{run_id}/{step}/{task}", "size": info["size"], "type": info["type"], "sha": index["objects"][name]})
    return hits


def _mflog(line: bytes) -> tuple[bytes, str]:
    """(timestamp, text) of one mflog line; unstructured lines keep an empty stamp."""
    if line.startswith(b"[MFLOG|"):
        head, sep, body = line.partition(b"]")
        if sep:
            parts = head.split(b"|")
            return (parts[2] if len(parts) > 2 else b""), body.decode("utf-8", "replace")
    return b"", line.decode("utf-8", "replace")


def log_tail(root: str, task: str, n: int = 50, stream: str = "stdout") -> list[str]:
    """The last n lines of the latest attempt's log: one listing, then reads from the end of each file."""
    tdir = os.path.join(root, task)
    names = _names(tdir)
    suffix = f"_{stream}.log"
    attempt = max(int(x.split(".", 1)[0]) for x in names if x.endswith(suffix))
    lines: list[tuple[bytes, str]] = []
    for source in ("runtime", "task"):
        fname = f"{attempt}.{source}{suffix}"
        if fname not in names:
            continue
        with open(os.path.join(tdir, fname), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            chunk = TAIL_CHUNK
            while True:
                f.seek(max(0, size - chunk))
                data = f.read(chunk)
                READ["bytes"] += len(data)
                raw = data.split(b"\n")
                if raw and raw[-1] == b"":
                    raw.pop()
                whole = chunk >= size
                if not whole:
                    raw = raw[1:]
                if len(raw) >= n or whole:
                    break
                chunk *= 4
        lines += [_mflog(x) for x in raw[-n:]]
    lines.sort(key=lambda x: x[0])
    return [text for _, text in lines[-n:]]


QUESTIONS = {
    "failed_tasks": lambda root, a: failed_tasks(root, a["run"]),
    "run_summary": lambda root, a: run_summary(root, a["run"]),
    "latest_failed_runs": lambda root, a: latest_failed_runs(root, a["flow"]),
    "runs_in_range": lambda root, a: runs_in_range(root, a["flow"], a["since_ms"], a["until_ms"]),
    "artifact_search": lambda root, a: artifact_search(root, a["flow"], a["name"]),
    "log_tail": lambda root, a: log_tail(root, a["task"]),
}


if __name__ == "__main__":
    root, question, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(QUESTIONS[question](root, args), separators=(",", ":"), default=str))
