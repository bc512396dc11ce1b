"""Local Metaflow metadata: reads the `.metaflow` files directly, no Client objects.

Layout (metaflow's local provider and local datastore share one tree):
  <root>/<Flow>/<run>/_meta/_self.json                  run record (tags, user, ts)
  <root>/<Flow>/<run>/<step>/<task>/_meta/sysmeta_<field>_<ts>.json
  <root>/<Flow>/<run>/<step>/<task>/<attempt>.data.json   artifact index
  <root>/<Flow>/<run>/<step>/<task>/<attempt>.runtime     runtime's record of the exit
Run ids are creation times in microseconds, so the folder listing orders runs. A metadata
file's name carries its field and timestamp: attempts, outcomes and their times come from
one listing per task, plus one read for the latest outcome's value. Liveness comes from this
host's process table (`metaflow_agent._liveness`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from .. import _config
from .._datastore import LocalDatastore
from .._errors import NotFound
from .._liveness import on_local_fs, process_table
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
from .._states import DEAD_AFTER_S, Fact
from .base import Decide, MetadataBackend

_NOT_RUNS = {"data", "_meta", "latest_run"}
_ID_SLACK_MS = 60_000  # a run's record is written within this of its id's instant


class _TaskMeta:
    """One task's `_meta` folder, from its listing: attempts and outcomes by file name."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.attempts: list[int] = []  # start ts of each attempt
        self.outcomes: list[tuple[int, str]] = []  # (ts, file) of each attempt_ok
        self.done: list[int] = []  # attempt-done ts
        for name in names:
            parsed = _meta_file(name)
            if parsed is None:
                continue
            field, ts = parsed
            if field == "attempt":
                self.attempts.append(ts)
            elif field == "attempt_ok":
                self.outcomes.append((ts, name))
            elif field == "attempt-done":
                self.done.append(ts)
        self.outcomes.sort()

    @property
    def started_ms(self) -> int | None:
        return min(self.attempts) if self.attempts else None

    @property
    def finished_ms(self) -> int | None:
        ends = [ts for ts, _ in self.outcomes] + self.done
        return max(ends) if ends else None

    @property
    def latest_has_outcome(self) -> bool:
        """Whether every attempt that started recorded an outcome."""
        return bool(self.outcomes) and len(self.outcomes) >= len(self.attempts)


class LocalMetadata(MetadataBackend):
    """The metadata of local Metaflow, read from the files under one `.metaflow` root."""

    kind = "local"

    def __init__(self, files: LocalDatastore) -> None:
        self.files = files
        self.root = files.root

    # --- small helpers ---------------------------------------------------
    def _json(self, rel: str) -> Any:
        return json.loads(self.files.read_small(rel))

    def _task_meta(self, task: Pathspec) -> _TaskMeta:
        return _TaskMeta(self.files.list(f"{task}/_meta"))

    def _value(self, task: Pathspec, name: str) -> Any:
        return self._json(f"{task}/_meta/{name}").get("value")

    def _dirs(self, rel: str) -> list[str]:
        return [n for n in self.files.list(rel) if not n.startswith("_") or n == "_parameters"]

    # --- flows and runs --------------------------------------------------
    def list_flows(self) -> list[str]:
        return sorted(e.name for e in self.files.entries("") if e.is_dir and not e.name.startswith((".", "_"))
                      and self.files.size(f"{e.name}/_meta/_self.json") is not None)

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

    def run_ids(self, flow: str) -> list[str]:
        """The flow's run ids, newest first when they are creation times (one listing)."""
        ids = [n for n in self.files.list(flow) if n not in _NOT_RUNS and not n.startswith(".")]
        return sorted(ids, key=lambda i: (i.isdigit(), int(i) if i.isdigit() else 0, i), reverse=True)

    def _listed(self, flow: str, since_ms: int | None) -> Iterator[Listed]:
        """Runs newest first, each record read only when the scan gets to it."""
        ids = self.run_ids(flow)
        if not all(i.isdigit() for i in ids):  # ids that are not creation times: order by the records
            records = [r for r in (self._run_record(Pathspec(flow, i)) for i in ids) if r is not None]
            records.sort(key=lambda r: run_sort_key(r.ts_ms, r.run_id), reverse=True)
            yield from (Listed(r) for r in records)
            return
        for run_id in ids:
            if since_ms is not None and int(run_id) // 1000 < since_ms - _ID_SLACK_MS:
                return  # every later id is older still
            rec = self._run_record(Pathspec(flow, run_id))
            if rec is not None:
                yield Listed(rec)

    def scan_runs(self, flow: str, query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, decide: Decide | None = None) -> RunScan:
        self.check_flow(flow)

        def settle(rec: RunRecord) -> None:
            if decide is not None:
                decide(rec)

        return scan_runs(self._listed(flow, query.since_ms), query, limit=limit, after=after, budget=budget,
                         needs_check=lambda r: decide is not None, settle=settle, note="local: runs read newest first")

    # --- outcomes and liveness -------------------------------------------
    def end_outcome(self, run: RunRecord) -> tuple[bool | None, int | None]:
        end = run.pathspec.child("end")
        for task in self._dirs(str(end)):
            meta = self._task_meta(end.child(task))
            if meta.latest_has_outcome:
                ts, name = meta.outcomes[-1]
                return self._value(end.child(task), name) == "True", meta.finished_ms or ts
        return None, None

    def run_liveness(self, run: RunRecord) -> Fact:
        if _config.local_liveness_mode() == "process":
            table = process_table()
            if table.readable:
                if run.run_id in table.tasks and self._same_root(table.task_roots.get(run.run_id)):
                    return True
                if self._owned_by_runtime(run, table.runtimes):
                    return True
                if on_local_fs(self.root):
                    return False
        return self._by_age(self._last_activity_s(run.pathspec))

    def task_liveness(self, task: Pathspec) -> Fact:
        if _config.local_liveness_mode() == "process":
            table = process_table()
            if table.readable:
                if (task.step, task.task) in table.tasks.get(task.run, set()):
                    return True
                if on_local_fs(self.root):
                    return False
        return self._by_age(max(self.files.mtime(str(task)) or 0.0, self.files.mtime(f"{task}/_meta") or 0.0))

    @staticmethod
    def _by_age(last_activity_s: float) -> Fact:
        """Without proof from processes: dead after the service's cutoff, unknown before it."""
        return False if _config.now_s() - last_activity_s > DEAD_AFTER_S else None

    def _same_root(self, roots: set[str] | None) -> bool:
        return not roots or os.path.realpath(self.root) in roots

    def _owned_by_runtime(self, run: RunRecord, runtimes: list[Any]) -> bool:
        """Whether a live runtime process owns this run: same script and root, started before
        the run, and this run is the first of its flow created after the process started."""
        script = self._script_name(run.pathspec)
        if script is None:
            return False
        mine = [rt for rt in runtimes if rt.script == script and (rt.root is None or rt.root == os.path.realpath(self.root))]
        if not mine:
            return False
        created_ms = [int(i) // 1000 for i in self.run_ids(run.flow) if i.isdigit()]
        for rt in mine:
            start_ms = int(rt.started_s * 1000) - 1000
            owned = min((ms for ms in created_ms if ms >= start_ms), default=None)
            if owned is not None and abs(owned - run.ts_ms) < 1000 and run.ts_ms >= start_ms:
                return True
        return False

    def _script_name(self, run: Pathspec) -> str | None:
        params = run.child("_parameters")
        for task in self._dirs(str(params)):
            names = [n for n in self.files.list(f"{params}/{task}/_meta") if n.startswith("sysmeta_script-name_")]
            if names:
                value = self._value(params.child(task), names[0])
                return str(value) if value else None
        return None

    def _last_activity_s(self, run: Pathspec) -> float:
        """The newest modification under the run's newest step (folders change when files appear)."""
        times = [self.files.mtime(str(run)) or 0.0]
        steps = [e for e in self.files.entries(str(run), with_stat=True) if e.is_dir and not e.name.startswith("_")]
        times += [e.mtime or 0.0 for e in steps]
        if steps:
            newest = max(steps, key=lambda e: e.mtime or 0.0)
            for e in self.files.entries(f"{run}/{newest.name}", with_stat=True):
                times.append(e.mtime or 0.0)
        return max(times)

    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes], *, completed: bool = False) -> int | None:
        if outcomes:
            return max([run.ts_ms] + [so.newest_ms for so in outcomes])
        if completed:
            return self.end_outcome(run)[1]
        # The last step the run reached holds its last outcome: the newest metadata file name there.
        steps = self.list_steps(run.pathspec)
        newest = run.ts_ms
        for step in steps[-1:]:
            for task in self._dirs(f"{run.pathspec}/{step}"):
                meta = self._task_meta(run.pathspec.child(step).child(task))
                newest = max([newest, *meta.attempts, *(ts for ts, _ in meta.outcomes), *meta.done])
        return newest

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

    def step_outcomes(self, run: Pathspec, steps: list[str], *, times: bool = False) -> list[StepOutcomes]:
        out = []
        for step in steps:
            sps = run.child(step)
            so = StepOutcomes(step, set(), set(), set())
            for task in self._dirs(str(sps)):
                tps = sps.child(task)
                meta = self._task_meta(tps)
                if meta.attempts:
                    so.started.add(task)
                for ts, name in meta.outcomes:
                    so.newest_ms = max(so.newest_ms, ts)
                    (so.ok if self._value(tps, name) == "True" else so.failed).add(task)
                if times and (meta.attempts or meta.outcomes):
                    so.times[task] = (meta.started_ms, meta.finished_ms if meta.latest_has_outcome else None)
            out.append(so)
        return out

    def failed_tasks_of(self, step: Pathspec) -> set[str]:
        return self.step_outcomes(step.run_ps, [step.step])[0].failed

    def check_task(self, task: Pathspec) -> None:
        if self.files.size(f"{task}/_meta/_self.json") is None:
            self.get_run(task.run_ps)
            if self.files.size(f"{task.step_ps}/_meta/_self.json") is None:
                raise not_found(task.step_ps)
            raise not_found(task)

    def task_detail(self, task: Pathspec) -> TaskDetail:
        self.check_task(task)
        wanted = {"attempt", "attempt_ok", "attempt-done", "foreach-stack"}
        names = [n for n in self.files.list(f"{task}/_meta") if (_meta_file(n) or ("", 0))[0] in wanted]
        return detail_from_rows(self._json(f"{task}/_meta/{n}") for n in names)

    def capabilities(self) -> dict[str, object]:
        return {"datastore": "local", "datastore_root": self.root}


def _meta_file(name: str) -> tuple[str, int] | None:
    """'sysmeta_attempt_ok_1795.json' -> ('attempt_ok', 1795) (None for other files)."""
    if not name.startswith("sysmeta_") or not name.endswith(".json"):
        return None
    field, _, ts = name[8:-5].rpartition("_")
    return (field, int(ts)) if ts.isdigit() else None
