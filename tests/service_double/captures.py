"""The real-service captures (``shared/service-captures``) and the seed data rebuilt from them.

``load_captures()`` reads ``master.jsonl`` and ``release-2.5.1.jsonl`` (``_body_same_as``
resolved) into ``Capture`` objects. ``seed_records()`` turns every object the captured 200
bodies contain into seed rows for ``ServiceDouble.load_records``, plus what the double needs
but no body shows. Synthesized, and only these:

- tasks that only appear through their metadata or artifacts (e.g. WideFlow/2 tasks 4 and 5,
  HelloFlow/14 task 1170, ArtifactFlow/30 tasks 1216-1218): ``ts_epoch`` = earliest of those
  rows, ``last_heartbeat_ts`` = latest / 1000; steps that only appear through tasks likewise;
- the ``end`` step, ``end`` task and its ``attempt``/``attempt_ok``/``attempt-done`` metadata
  (attempt 0) of every run whose master status needs them: HelloFlow (failed = the runs of
  master's ``runs-hello-status-failed``, the rest completed; end task ids follow the README's
  three tasks per run: 3 for run 1, ``1170 + 3*(run-14)`` otherwise), ArtifactFlow/30
  (completed, on its captured end task 1218) and SynthFlow. Timestamps are offsets from the
  run's ``ts_epoch`` copied from HelloFlow/14; metadata ids continue after the largest captured
  id; SynthFlow end task ids are 1152 (run 8), 1155 (run 9) and 1246 upwards (runs 40-2039) -
  invented but unique;
- SynthFlow outcomes: inside the window master's status pages cover (runs no older than the
  last row of ``synth-runs-status-failed-page2``) exactly the runs on the failed pages failed;
  the README's killed examples (2037, 2025, 2008, 1991) get no end step, the other failures an
  ``attempt_ok=False``. Older runs are unknown to the captures; to match the README totals
  (78 killed, 144 end failures among the 2,000 synthetic runs, 223 failed / 1,779 completed
  overall) the missing 74 killed and 139 end failures are spread evenly over them. All runs are
  far older than 360 s, so no heartbeat makes any run "running".

Nothing else is invented: runs the captures never show (ArtifactFlow 31-37, LogFlow 38) are
absent, and so are steps/tasks of runs no capture lists.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

GENERATION_FILES = {"master": "master.jsonl", "release": "release-2.5.1.jsonl"}

SYNTH_KILLED_EXAMPLES = (2037, 2025, 2008, 1991)  # README: no end step, stale heartbeat
SYNTH_KILLED_TOTAL = 78  # README: among the 2,000 synthetic runs
SYNTH_END_FAILED_TOTAL = 144  # README: synthetic runs whose end step failed
SYNTH_REAL_END_TASKS = {8: 1152, 9: 1155}
SYNTH_FIRST_SYNTHETIC_TASK = 1246
END_OFFSETS_MS = {"step": 323, "task": 329, "attempt": 487, "attempt_ok": 497, "attempt-done": 499}

Row = dict[str, Any]


@dataclass(frozen=True)
class Capture:
    """One recorded exchange with the real service."""

    id: str
    generation: str
    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    body: Any
    body_same_as: str | None = None


def shared_dir() -> Path:
    """``<workspace>/shared``, else ``$METAFLOW_AGENT_SHARED``."""
    default = Path(__file__).resolve().parents[3] / "shared"
    if (default / "service-captures").is_dir():
        return default
    env = os.environ.get("METAFLOW_AGENT_SHARED")
    if env:
        return Path(env)
    raise FileNotFoundError("shared/ not found at %s; set METAFLOW_AGENT_SHARED" % default)


@lru_cache(maxsize=None)
def _load(generation: str) -> tuple[Capture, ...]:
    path = shared_dir() / "service-captures" / GENERATION_FILES[generation]
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    bodies = {c["id"]: c["response"]["body"] for c in raw}
    out = []
    for c in raw:
        same = c.get("_body_same_as")
        req, resp = c["request"], c["response"]
        out.append(
            Capture(
                id=c["id"],
                generation=generation,
                method=req["method"],
                path=req["path"],
                query=dict(req.get("query") or {}),
                status=resp["status"],
                headers=dict(resp.get("headers") or {}),
                body=bodies[same] if same else resp["body"],
                body_same_as=same,
            )
        )
    return tuple(out)


def load_captures(generation: str | None = None) -> list[Capture]:
    """All captures of one generation (``master``/``release``), or of both (master first)."""
    gens = [generation] if generation else list(GENERATION_FILES)
    return [c for g in gens for c in _load(g)]


def capture(generation: str, capture_id: str) -> Capture:
    return next(c for c in _load(generation) if c.id == capture_id)


# ---------------------------------------------------------------------- seed rebuilding
def _kind(row: Row) -> str:
    if "field_name" in row:
        return "metadata"
    if "sha" in row:
        return "artifacts"
    if "task_id" in row:
        return "tasks"
    if "step_name" in row:
        return "steps"
    if "run_number" in row:
        return "runs"
    return "flows"


def _key(kind: str, row: Row) -> tuple[Any, ...]:
    ids: tuple[Any, ...] = (row["flow_id"],)
    if kind != "flows":
        ids += (str(row["run_number"]),)
    if kind in ("steps", "tasks", "metadata", "artifacts"):
        ids += (row["step_name"],)
    if kind in ("tasks", "metadata", "artifacts"):
        ids += (str(row["task_id"]),)
    if kind == "metadata":
        ids += (row["id"],)
    if kind == "artifacts":
        ids += (row["attempt_id"], row["name"])
    return ids


def _captured_rows() -> dict[str, dict[tuple[Any, ...], Row]]:
    """Every distinct object in a 200 body (release first: its lists keep physical order)."""
    tables: dict[str, dict[tuple[Any, ...], Row]] = {k: {} for k in ("flows", "runs", "steps", "tasks", "metadata", "artifacts")}
    for cap in load_captures("release") + load_captures("master"):
        if cap.status != 200 or not isinstance(cap.body, (list, dict)):
            continue
        for row in cap.body if isinstance(cap.body, list) else [cap.body]:
            if not isinstance(row, dict) or "flow_id" not in row:
                continue
            kind = _kind(row)
            clean = {k: v for k, v in row.items() if k not in ("user", "status")}
            tables[kind].setdefault(_key(kind, clean), clean)
    return tables


def _implied_parents(tables: dict[str, dict[tuple[Any, ...], Row]]) -> None:
    """Tasks seen only through metadata/artifacts, steps seen only through tasks."""
    children: dict[tuple[Any, ...], list[Row]] = {}
    for kind in ("metadata", "artifacts"):
        for row in tables[kind].values():
            children.setdefault(_key("tasks", row), []).append(row)
    for key in sorted(set(children) - set(tables["tasks"]), key=lambda k: int(k[3])):
        rows = children[key]
        first = rows[0]
        tables["tasks"][key] = {
            "flow_id": first["flow_id"],
            "run_number": first["run_number"],
            "step_name": first["step_name"],
            "task_id": first["task_id"],
            "user_name": first["user_name"],
            "ts_epoch": min(r["ts_epoch"] for r in rows),
            "tags": [],
            "system_tags": [],
            "last_heartbeat_ts": max(r["ts_epoch"] for r in rows) // 1000,
        }
    for task in list(tables["tasks"].values()):
        key = _key("steps", task)
        if key not in tables["steps"]:
            siblings = [t for t in tables["tasks"].values() if _key("steps", t) == key]
            tables["steps"][key] = {
                "flow_id": task["flow_id"],
                "run_number": str(task["run_number"]),
                "step_name": task["step_name"],
                "user_name": task["user_name"],
                "ts_epoch": min(t["ts_epoch"] for t in siblings),
                "tags": [],
                "system_tags": [],
            }


class _EndSynth:
    """Adds the end step/task/attempt metadata that master's run status reads."""

    def __init__(self, tables: dict[str, dict[tuple[Any, ...], Row]]) -> None:
        self.tables = tables
        self.next_id = max(m["id"] for m in tables["metadata"].values()) + 1
        self.decided = {
            (m["flow_id"], str(m["run_number"]))
            for m in tables["metadata"].values()
            if m["step_name"] == "end" and m["field_name"] == "attempt_ok"
        }

    def has_end_outcome(self, run: Row) -> bool:
        return (run["flow_id"], str(run["run_number"])) in self.decided

    def add(self, run: Row, task_id: int, ok: bool) -> None:
        ts, user = run["ts_epoch"], run["user_name"]
        base = {"flow_id": run["flow_id"], "run_number": run["run_number"], "step_name": "end"}
        step = dict(base, run_number=str(run["run_number"]), user_name=user, ts_epoch=ts + END_OFFSETS_MS["step"], tags=[], system_tags=[])
        self.tables["steps"].setdefault(_key("steps", step), step)
        task = dict(base, task_id=task_id, user_name=user, ts_epoch=ts + END_OFFSETS_MS["task"], tags=[], system_tags=[],
                    last_heartbeat_ts=(ts + END_OFFSETS_MS["attempt-done"]) // 1000)
        task = self.tables["tasks"].setdefault(_key("tasks", task), task)
        for field, value, mtype in (("attempt", "0", "attempt"), ("attempt_ok", str(ok), "internal_attempt_status"), ("attempt-done", "0", "attempt-done")):
            row = dict(base, task_id=task["task_id"], id=self.next_id, field_name=field, value=value, type=mtype,
                       user_name=user, ts_epoch=ts + END_OFFSETS_MS[field], tags=["attempt_id:0"], system_tags=None)
            self.next_id += 1
            self.tables["metadata"][_key("metadata", row)] = row
        self.decided.add((run["flow_id"], str(run["run_number"])))


def _run_numbers(capture_id: str) -> list[int]:
    return [int(r["run_number"]) for r in capture("master", capture_id).body]


def _spread(older: list[int], killed: int, failed_end: int) -> tuple[set[int], set[int]]:
    """Evenly place ``killed + failed_end`` failures over ``older`` (deterministic)."""
    total = killed + failed_end
    n = len(older)
    picks = [older[(2 * i + 1) * n // (2 * total)] for i in range(total)]
    kill = {p for i, p in enumerate(picks) if (i * killed) // total != ((i + 1) * killed) // total}
    return kill, set(picks) - kill


def _synth_outcomes(runs: list[Row]) -> dict[int, str]:
    """SynthFlow run -> ``completed`` / ``end_failed`` / ``killed`` (see module docstring)."""
    failed = _run_numbers("synth-runs-status-failed") + _run_numbers("synth-runs-status-failed-page2")
    by_number = {int(r["run_number"]): r for r in runs}
    window_start = min(by_number[n]["ts_epoch"] for n in failed)
    outcome = {n: "completed" for n in by_number}
    for n in failed:
        outcome[n] = "killed" if n in SYNTH_KILLED_EXAMPLES else "end_failed"
    synthetic_failed = [n for n in failed if n not in SYNTH_REAL_END_TASKS]
    known_killed = sum(1 for n in synthetic_failed if outcome[n] == "killed")
    older = sorted(
        (n for n, r in by_number.items() if r["ts_epoch"] < window_start and n not in SYNTH_REAL_END_TASKS),
        key=lambda n: (by_number[n]["ts_epoch"], n),
        reverse=True,
    )
    kill, end_failed = _spread(
        older,
        SYNTH_KILLED_TOTAL - known_killed,
        SYNTH_END_FAILED_TOTAL - (len(synthetic_failed) - known_killed),
    )
    outcome.update({n: "killed" for n in kill})
    outcome.update({n: "end_failed" for n in end_failed})
    return outcome


def _hello_end_task(run_number: int) -> int:
    return 3 if run_number == 1 else 1170 + 3 * (run_number - 14)


def _synthesize_outcomes(tables: dict[str, dict[tuple[Any, ...], Row]]) -> None:
    synth = _EndSynth(tables)
    runs = list(tables["runs"].values())
    hello_failed = set(_run_numbers("runs-hello-status-failed"))
    for run in runs:
        if run["flow_id"] == "HelloFlow" and not synth.has_end_outcome(run):
            n = int(run["run_number"])
            synth.add(run, _hello_end_task(n), ok=n not in hello_failed)
        if run["flow_id"] == "ArtifactFlow" and not synth.has_end_outcome(run):
            ends = [t for t in tables["tasks"].values() if t["flow_id"] == "ArtifactFlow" and t["run_number"] == run["run_number"] and t["step_name"] == "end"]
            if ends:
                synth.add(run, int(ends[0]["task_id"]), ok=True)
    synth_runs = sorted((r for r in runs if r["flow_id"] == "SynthFlow"), key=lambda r: int(r["run_number"]))
    outcomes = _synth_outcomes(synth_runs)
    next_task = SYNTH_FIRST_SYNTHETIC_TASK
    for run in synth_runs:
        n = int(run["run_number"])
        task_id = SYNTH_REAL_END_TASKS.get(n)
        if task_id is None:
            task_id, next_task = next_task, next_task + 1
        if outcomes[n] != "killed" and not synth.has_end_outcome(run):
            synth.add(run, task_id, ok=outcomes[n] == "completed")


@lru_cache(maxsize=1)
def _seed() -> dict[str, list[Row]]:
    tables = _captured_rows()
    _implied_parents(tables)
    _synthesize_outcomes(tables)
    return {kind: list(rows.values()) for kind, rows in tables.items()}


def seed_records() -> dict[str, list[Row]]:
    """Seed rows for ``ServiceDouble.load_records`` (a fresh copy on every call)."""
    return copy.deepcopy(_seed())


def seed_counts() -> dict[str, int]:
    return {k: len(v) for k, v in _seed().items()}
