"""Local Metaflow metadata: reads the `.metaflow` files directly, no Client objects.

Layout (metaflow's local provider and local datastore share one tree):
  <root>/<Flow>/<run>/_meta/_self.json                  run record (tags, user, ts)
  <root>/<Flow>/<run>/<step>/<task>/_meta/sysmeta_<field>_<ts>.json
  <root>/<Flow>/<run>/<step>/<task>/<attempt>.data.json   artifact index
  <root>/<Flow>/<run>/<step>/<task>/<attempt>.runtime     runtime's record of the exit
Every file read is counted through the datastore the metadata shares its tree with.
"""

from __future__ import annotations

import json
from typing import Any

from .. import _config
from .._datastore import LocalDatastore
from .._errors import NotFound
from .._pathspec import Pathspec, not_found
from .._records import (
    Listed,
    RunQuery,
    RunRecord,
    RunScan,
    StepOutcomes,
    TaskDetail,
    detail_from_rows,
    run_sort_key,
    scan_runs,
)
from .._states import DEAD_AFTER_S
from .base import Decide, MetadataBackend

_NOT_RUNS = {"data", "_meta", "latest_run"}


class LocalMetadata(MetadataBackend):
    """The metadata of local Metaflow, read from the files under one `.metaflow` root."""

    kind = "local"
    tasks_outlive_run = True

    def __init__(self, files: LocalDatastore) -> None:
        self.files = files
        self.root = files.root

    # --- small helpers ---------------------------------------------------
    def _json(self, rel: str) -> Any:
        return json.loads(self.files.read_small(rel))

    def _meta_rows(self, task_rel: str, fields: set[str], names: list[str] | None = None) -> list[dict[str, Any]]:
        """Rows of the given metadata fields of one task (one listdir + one read per row)."""
        rows = []
        for name in self.files.list(task_rel + "/_meta") if names is None else names:
            if _meta_field(name) in fields:
                rows.append(self._json(f"{task_rel}/_meta/{name}"))
        return rows

    def _dirs(self, rel: str) -> list[str]:
        return [n for n in self.files.list(rel) if not n.startswith("_") or n == "_parameters"]

    # --- flows and runs --------------------------------------------------
    def check_flow(self, flow: str) -> None:
        if self.files.size(f"{flow}/_meta/_self.json") is None:
            raise not_found(Pathspec(flow), f"in {self.root}")

    def _run_record(self, run: Pathspec) -> RunRecord | None:
        try:
            return RunRecord.from_row(run.flow, self._json(f"{run}/_meta/_self.json"), run.run)
        except NotFound:
            return None

    def get_run(self, run: Pathspec) -> RunRecord:
        self.check_flow(run.flow)
        rec = self._run_record(run)
        if rec is None:
            raise not_found(run)
        return rec

    def scan_runs(self, flow: str, query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, decide: Decide | None = None) -> RunScan:
        self.check_flow(flow)
        ids = [n for n in self.files.list(flow) if n not in _NOT_RUNS and not n.startswith(".")]
        records = [r for r in (self._run_record(Pathspec(flow, i)) for i in ids) if r is not None]
        records.sort(key=lambda r: run_sort_key(r.ts_ms, r.run_id), reverse=True)

        def settle(rec: RunRecord) -> None:
            rec.status, rec.finished_ms = decide(rec) if decide else ("running", None)

        return scan_runs((Listed(r) for r in records), query, limit=limit, after=after, budget=budget,
                         needs_check=lambda r: decide is not None, settle=settle, note=f"local: read {len(records)} run records")

    # --- status ------------------------------------------------------------
    def quick_status(self, run: RunRecord) -> tuple[str, int | None] | None:
        base = run.pathspec.child("end")
        for task in self._dirs(str(base)):
            rows = self._meta_rows(f"{base}/{task}", {"attempt_ok"})
            ok = [r for r in rows if r.get("value") == "True"]
            if ok:
                return "completed", max(int(r.get("ts_epoch") or 0) for r in ok)
        return None

    def run_live(self, run: RunRecord, outcomes: list[StepOutcomes]) -> bool:
        # Local runs have no heartbeat: recent outcomes stand in for it.
        newest = max([run.ts_ms] + [so.newest_ms for so in outcomes])
        return _config.now_s() * 1000 - newest < DEAD_AFTER_S * 1000

    def task_fresh(self, task: Pathspec) -> bool:
        rel = str(task)
        newest = max([self.files.mtime(f"{rel}/{n}") or 0.0 for n in self.files.list(rel)] or [0.0])
        return _config.now_s() - newest < DEAD_AFTER_S

    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes]) -> int | None:
        return max([run.ts_ms] + [so.newest_ms for so in outcomes])

    # --- steps and tasks ---------------------------------------------------
    def list_steps(self, run: Pathspec) -> list[str]:
        names = self.files.list(str(run))
        if not names:
            self.get_run(run)
        steps = [n for n in names if not n.startswith("_")]
        ts = {s: self._json(f"{run}/{s}/_meta/_self.json").get("ts_epoch", 0) for s in steps}
        return sorted(steps, key=lambda s: (ts[s], s))

    def list_tasks(self, step: Pathspec) -> list[str]:
        return self._dirs(str(step))

    def step_outcomes(self, run: Pathspec, steps: list[str]) -> list[StepOutcomes]:
        out = []
        for step in steps:
            so = StepOutcomes(step, set(), set(), set())
            for task in self._dirs(f"{run}/{step}"):
                task_rel = f"{run}/{step}/{task}"
                names = self.files.list(task_rel + "/_meta")
                # "started" needs only the file names; outcomes need the attempt_ok values.
                if any(_meta_field(n) == "attempt" for n in names):
                    so.started.add(task)
                for r in self._meta_rows(task_rel, {"attempt_ok"}, names):
                    so.newest_ms = max(so.newest_ms, int(r.get("ts_epoch") or 0))
                    if r["field_name"] == "attempt_ok":
                        (so.ok if r["value"] == "True" else so.failed).add(task)
            out.append(so)
        return out

    def check_task(self, task: Pathspec) -> None:
        if self.files.size(f"{task}/_meta/_self.json") is None:
            self.get_run(task.run_ps)
            if self.files.size(f"{task.step_ps}/_meta/_self.json") is None:
                raise not_found(task.step_ps)
            raise not_found(task)

    def task_detail(self, task: Pathspec) -> TaskDetail:
        self.check_task(task)
        return detail_from_rows(self._meta_rows(str(task), {"attempt", "attempt_ok", "attempt-done", "foreach-stack"}))

    def capabilities(self) -> dict[str, object]:
        return {"datastore": "local", "datastore_root": self.root}


def _meta_field(name: str) -> str | None:
    """'sysmeta_attempt_ok_1795.json' -> 'attempt_ok' (None for other files)."""
    if not name.startswith("sysmeta_") or not name.endswith(".json"):
        return None
    return name[8:-5].rsplit("_", 1)[0]
