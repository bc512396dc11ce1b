"""Local metadata and datastore: reads the `.metaflow` files directly.

Layout (metaflow's local provider and local datastore share one tree):
  <root>/<Flow>/<run>/_meta/_self.json                  run record (tags, user, ts)
  <root>/<Flow>/<run>/<step>/<task>/_meta/sysmeta_<field>_<ts>.json
  <root>/<Flow>/<run>/<step>/<task>/<attempt>.data.json   artifact index
  <root>/<Flow>/<run>/<step>/<task>/<attempt>.runtime     runtime's record of the exit
  <root>/<Flow>/data/<sha[:2]>/<sha>                    gzip'd artifact blobs
No Client API object is built; each file read is counted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .._datastore import LocalDatastore
from .._errors import NotFound
from .base import (
    HEARTBEAT_TIMEOUT_S,
    AttemptInfo,
    Backend,
    RunQuery,
    RunRecord,
    RunScan,
    StepOutcomes,
    TaskDetail,
    scan_records,
)

_NOT_RUNS = {"data", "_meta", "latest_run"}


def local_root() -> str | None:
    """The local datastore root metaflow would use, without creating it.

    METAFLOW_DATASTORE_SYSROOT_LOCAL is read now, not at metaflow's import.
    """
    sysroot = os.environ.get("METAFLOW_DATASTORE_SYSROOT_LOCAL")
    if sysroot:
        path = os.path.join(sysroot, ".metaflow")
        return path if os.path.isdir(path) else None
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage.get_datastore_root_from_config(None, create_on_absent=False)


class LocalBackend(Backend):
    kind = "local"
    tasks_outlive_run = True

    def __init__(self, root: str | None = None) -> None:
        root = root or local_root()
        if root is None:
            raise NotFound(
                "no local Metaflow datastore (.metaflow) found from this directory",
                hint="run a flow first, cd to its folder, or set METAFLOW_DATASTORE_SYSROOT_LOCAL",
            )
        self.root = root
        self.store: LocalDatastore = LocalDatastore(root)

    # --- small helpers ---------------------------------------------------
    def _json(self, rel: str) -> Any:
        return json.loads(self.store.read_small(rel))

    def _meta_rows(self, task_rel: str, fields: set[str], names: list[str] | None = None) -> list[dict[str, Any]]:
        """Rows of the given metadata fields of one task (one listdir + one read per row)."""
        rows = []
        for name in self.store.list(task_rel + "/_meta") if names is None else names:
            if _meta_field(name) in fields:
                rows.append(self._json(f"{task_rel}/_meta/{name}"))
        return rows

    def _dirs(self, rel: str) -> list[str]:
        return [n for n in self.store.list(rel) if not n.startswith("_") or n == "_parameters"]

    # --- flows and runs --------------------------------------------------
    def check_flow(self, flow: str) -> None:
        if self.store.size(f"{flow}/_meta/_self.json") is None:
            raise NotFound(f"flow {flow!r} not found in {self.root}", hint="list_runs needs a flow that has run; check the name's capitalisation")

    def _run_record(self, flow: str, run_id: str) -> RunRecord | None:
        try:
            d = self._json(f"{flow}/{run_id}/_meta/_self.json")
        except NotFound:
            return None
        system_tags = d.get("system_tags") or []
        user = d.get("user_name") or next((t[5:] for t in system_tags if t.startswith("user:")), None)
        return RunRecord(flow, str(d.get("run_number", run_id)), int(d.get("ts_epoch", 0)), user, d.get("tags") or [], system_tags)

    def get_run(self, flow: str, run_id: str) -> RunRecord:
        self.check_flow(flow)
        rec = self._run_record(flow, run_id)
        if rec is None:
            raise NotFound(f"run {flow}/{run_id} not found", hint=f"list_runs(flow='{flow}') shows recent runs")
        return rec

    def scan_runs(self, flow: str, query: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, with_status: bool = True) -> RunScan:
        self.check_flow(flow)
        ids = [n for n in self.store.list(flow) if n not in _NOT_RUNS and not n.startswith(".")]
        records = [r for r in (self._run_record(flow, i) for i in ids) if r is not None]
        status_fn = self.run_status if with_status else (lambda r: ("running", None))
        return scan_records(records, query, limit, after, budget, status_fn, f"local: read {len(records)} run records")

    # --- status ------------------------------------------------------------
    def quick_status(self, run: RunRecord) -> tuple[str, int | None] | None:
        base = f"{run.flow}/{run.run_id}"
        for task in self._dirs(f"{base}/end"):
            rows = self._meta_rows(f"{base}/end/{task}", {"attempt_ok"})
            ok = [r for r in rows if r.get("value") == "True"]
            if ok:
                return "completed", max(int(r.get("ts_epoch") or 0) for r in ok)
        return None

    def run_live(self, run: RunRecord, outcomes: list[StepOutcomes]) -> bool:
        # Local runs have no heartbeat: recent outcomes stand in for it.
        newest = max([run.ts_ms] + [so.newest_ms for so in outcomes])
        return time.time() * 1000 - newest < HEARTBEAT_TIMEOUT_S * 1000

    def task_fresh(self, flow: str, run_id: str, step: str, task: str) -> bool:
        rel = f"{flow}/{run_id}/{step}/{task}"
        newest = max([self.store.mtime(f"{rel}/{n}") or 0.0 for n in self.store.list(rel)] or [0.0])
        return time.time() - newest < HEARTBEAT_TIMEOUT_S

    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes]) -> int | None:
        return max([run.ts_ms] + [so.newest_ms for so in outcomes])

    # --- steps and tasks ---------------------------------------------------
    def list_steps(self, flow: str, run_id: str) -> list[str]:
        names = self.store.list(f"{flow}/{run_id}")
        if not names:
            self.get_run(flow, run_id)
        steps = [n for n in names if not n.startswith("_")]
        ts = {s: self._json(f"{flow}/{run_id}/{s}/_meta/_self.json").get("ts_epoch", 0) for s in steps}
        return sorted(steps, key=lambda s: (ts[s], s))

    def list_tasks(self, flow: str, run_id: str, step: str) -> list[str]:
        return self._dirs(f"{flow}/{run_id}/{step}")

    def step_outcomes(self, flow: str, run_id: str, steps: list[str]) -> list[StepOutcomes]:
        out = []
        for step in steps:
            so = StepOutcomes(step, set(), set(), set())
            for task in self._dirs(f"{flow}/{run_id}/{step}"):
                task_rel = f"{flow}/{run_id}/{step}/{task}"
                names = self.store.list(task_rel + "/_meta")
                # "started" needs only the file names; outcomes need the attempt_ok values.
                if any(_meta_field(n) == "attempt" for n in names):
                    so.started.add(task)
                for r in self._meta_rows(task_rel, {"attempt_ok"}, names):
                    so.newest_ms = max(so.newest_ms, int(r.get("ts_epoch") or 0))
                    if r["field_name"] == "attempt_ok":
                        (so.ok if r["value"] == "True" else so.failed).add(task)
            out.append(so)
        return out

    def check_task(self, flow: str, run_id: str, step: str, task: str) -> None:
        if self.store.size(f"{flow}/{run_id}/{step}/{task}/_meta/_self.json") is None:
            self.get_run(flow, run_id)
            if self.store.size(f"{flow}/{run_id}/{step}/_meta/_self.json") is None:
                raise NotFound(f"step {flow}/{run_id}/{step} not found", hint=f"run_summary(run='{flow}/{run_id}') lists the steps")
            raise NotFound(f"task {flow}/{run_id}/{step}/{task} not found", hint=f"failed_tasks(run='{flow}/{run_id}') or run_summary list its tasks")

    def task_detail(self, flow: str, run_id: str, step: str, task: str) -> TaskDetail:
        self.check_task(flow, run_id, step, task)
        rows = self._meta_rows(f"{flow}/{run_id}/{step}/{task}", {"attempt", "attempt_ok", "attempt-done", "foreach-stack"})
        return detail_from_rows(rows)

    def capabilities(self) -> dict[str, object]:
        return {"datastore": "local", "datastore_root": self.root}


def _meta_field(name: str) -> str | None:
    """'sysmeta_attempt_ok_1795.json' -> 'attempt_ok' (None for other files)."""
    if not name.startswith("sysmeta_") or not name.endswith(".json"):
        return None
    return name[8:-5].rsplit("_", 1)[0]


def _attempt_of(row: dict[str, Any]) -> int:
    for tag in row.get("tags") or []:
        if isinstance(tag, str) and tag.startswith("attempt_id:"):
            try:
                return int(tag[11:])
            except ValueError:
                pass
    if row.get("field_name") in ("attempt", "attempt-done"):
        try:
            return int(str(row.get("value")))
        except (TypeError, ValueError):
            pass
    return 0


def detail_from_rows(rows: list[dict[str, Any]]) -> TaskDetail:
    """Fold metadata rows (any order, any backend) into per-attempt outcomes."""
    attempts: dict[int, AttemptInfo] = {}
    foreach = None
    for r in rows:
        n = _attempt_of(r)
        a = attempts.setdefault(n, AttemptInfo(n, None))
        field_name, ts = r.get("field_name"), r.get("ts_epoch")
        if field_name == "attempt":
            a.started_ms = ts
        elif field_name == "attempt_ok":
            a.ok = r.get("value") == "True"
            a.finished_ms = ts
        elif field_name == "attempt-done" and a.finished_ms is None:
            a.finished_ms = ts
        elif field_name == "foreach-stack":
            v = r.get("value")
            foreach = ",".join(v) if isinstance(v, list) else (str(v) if v else None)
    return TaskDetail(sorted(attempts.values(), key=lambda a: a.attempt), foreach)
