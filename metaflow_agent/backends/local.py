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

import functools
import json
import os
from typing import Any, Iterator

from .. import _config
from .._cost import current_meter, skip_damaged
from .._datastore import LocalDatastore
from .._errors import AgentError, Damaged, NotFound
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
    task_order,
)
from .._states import DEAD_AFTER_S, Fact
from .base import Decide, MetadataBackend

_NOT_RUNS = {"data", "_meta", "latest_run"}
_ID_SLACK_MS = 60_000  # a run's record is written within this of its id's instant


class _TaskMeta:
    """One task's `_meta` folder, from its listing: attempts and outcomes by file name.

    Only names that start with `sysmeta_attempt` or `sysmeta_foreach-stack` are parsed (a
    folder holds 30-60 names); outcome values are filled in once read."""

    __slots__ = ("attempts", "outcomes", "done", "detail", "values")

    def __init__(self, names: list[str]) -> None:
        self.attempts: list[int] = []  # start ts of each attempt
        self.outcomes: list[tuple[int, str]] = []  # (ts, file) of each attempt_ok
        self.done: list[int] = []  # attempt-done ts
        self.detail: list[str] = []  # files task_detail reads (attempt, outcome, done, foreach-stack)
        self.values: list[bool] | None = None  # each outcome's value, in ts order, once read
        for name in names:  # 'sysmeta_attempt_<ts>.json', '..._attempt_ok_<ts>', '..._attempt-done_<ts>', '..._foreach-stack_<ts>'
            if name.startswith("sysmeta_attempt"):
                rest = name[15:-5]
                if not name.endswith(".json"):
                    continue
                if rest[:4] == "_ok_" and rest[4:].isdigit():
                    self.outcomes.append((int(rest[4:]), name))
                elif rest[:6] == "-done_" and rest[6:].isdigit():
                    self.done.append(int(rest[6:]))
                elif rest[:1] == "_" and rest[1:].isdigit():
                    self.attempts.append(int(rest[1:]))
                else:
                    continue
                self.detail.append(name)
            elif name.startswith("sysmeta_foreach-stack_") and name.endswith(".json") and name[22:-5].isdigit():
                self.detail.append(name)
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
    """The metadata of local Metaflow, read from the files under one `.metaflow` root.

    Within a call, each task's `_meta` listing is parsed once and each outcome read once
    (kept in the call's memo), so a task examined twice costs its files once."""

    kind = "local"

    def __init__(self, files: LocalDatastore) -> None:
        self.files = files
        self.root = files.root
        self._key = ("local-meta", files.root)

    # --- small helpers ---------------------------------------------------
    def _json(self, rel: str) -> Any:
        return self.files.read_json(rel)

    def _memo(self) -> dict[str, Any]:
        memo = current_meter().memo
        found = memo.get(self._key)
        if found is None:
            found = memo[self._key] = {}
        return found

    def _meta_at(self, task: str) -> _TaskMeta:
        """The task's `_meta` listing, parsed once per call (`task` is its path under the root)."""
        memo = self._memo()
        meta = memo.get(task)
        if meta is None:
            meta = memo[task] = _TaskMeta(self.files.list(f"{task}/_meta"))
        return meta

    def _task_meta(self, task: Pathspec) -> _TaskMeta:
        return self._meta_at(str(task))

    def _outcome_values(self, task: str, meta: _TaskMeta) -> list[bool]:
        """Each recorded outcome's value (attempt_ok True/False), read once per call."""
        if meta.values is None:
            meta.values = [self._json(f"{task}/_meta/{name}").get("value") == "True" for _, name in meta.outcomes]
        return meta.values

    def _value(self, task: Pathspec, name: str) -> Any:
        return self._json(f"{task}/_meta/{name}").get("value")

    def _dirs(self, rel: str) -> list[str]:
        return [n for n in self.files.list(rel) if not n.startswith("_") or n == "_parameters"]

    # --- flows and runs --------------------------------------------------
    def list_flows(self) -> list[str]:
        names = []
        for e in self.files.entries(""):
            if e.name.startswith((".", "_")):
                continue
            with skip_damaged(e.name):
                if self.files.size(f"{e.name}/_meta/_self.json") is not None:
                    names.append(e.name)
        return sorted(names)

    def check_flow(self, flow: str) -> None:
        if self.files.size(f"{flow}/_meta/_self.json") is None:
            raise not_found(Pathspec(flow), f"in {self.root}")

    def _run_record(self, run: Pathspec) -> RunRecord | None:
        try:
            row = self._json(f"{run}/_meta/_self.json")
        except NotFound:
            return None
        if not isinstance(row, dict):
            raise Damaged(f"{run}/_meta/_self.json is not a run record", hint="the file is corrupt: repair or remove it (run listings skip it and name it in notes)",
                          item=f"{run}/_meta/_self.json")
        try:
            return RunRecord.from_row(run.flow, row, run.run)
        except (TypeError, ValueError) as exc:
            raise Damaged(f"{run}/_meta/_self.json is not a run record ({exc})", hint="the file is corrupt: repair or remove it (run listings skip it and name it in notes)",
                          item=f"{run}/_meta/_self.json") from None

    def _fill(self, held: RunRecord) -> bool:
        """Read a listed run's record into it (its state, once settled, is kept); False when absent."""
        rec = self._run_record(held.pathspec)
        if rec is None:
            return False
        held.ts_ms, held.user, held.tags, held.system_tags = rec.ts_ms, rec.user, rec.tags, rec.system_tags
        held.last_heartbeat_s, held.service_status = rec.last_heartbeat_s, rec.service_status
        return True

    def get_run(self, run: Pathspec) -> RunRecord:
        self.check_flow(run.flow)
        rec = self._run_record(run)
        if rec is None:
            raise not_found(run)
        return rec

    def run_ids(self, flow: str) -> list[str]:
        """The flow's run ids, newest first when they are creation times (one listing, sorted once per call)."""
        return self._run_ids(flow)[0]

    def _run_ids(self, flow: str) -> tuple[list[str], bool]:
        """(run ids newest first, whether every id is a creation time), once per call."""
        memo = self._memo()
        found = memo.get(f"run-ids:{flow}")
        if found is None:
            ids = [n for n in self.files.list(flow) if n not in _NOT_RUNS and not n.startswith(".")]
            times = all(map(str.isdigit, ids))
            if times:
                ids.sort(key=int, reverse=True)
            else:
                ids.sort(key=lambda i: (i.isdigit(), int(i) if i.isdigit() else 0, i), reverse=True)
            found = memo[f"run-ids:{flow}"] = (ids, times)
        return found

    def _record_or_skip(self, run: Pathspec) -> RunRecord | None:
        """The run's record; None when absent or damaged (then skipped and named in the answer)."""
        with skip_damaged(str(run)):
            return self._run_record(run)
        return None

    def _listed(self, flow: str, query: RunQuery, after: tuple[int, str] | None) -> Iterator[Listed]:
        """Runs newest first, each record read only when the scan gets to it. Local run ids are
        creation times in µs: ids newer than the window (or the cursor) are passed over unread,
        and the scan ends at the first id older than the window."""
        ids, times = self._run_ids(flow)
        if not times:  # ids that are not creation times: order by the records
            records = [r for r in (self._record_or_skip(Pathspec(flow, i)) for i in ids) if r is not None]
            records.sort(key=lambda r: run_sort_key(r.ts_ms, r.run_id), reverse=True)
            yield from (Listed(r) for r in records)
            return
        newest = query.until_ms
        if after is not None:
            newest = after[0] if newest is None else min(newest, after[0])
        # Without filters on what a record holds (time, tags, user) or a cursor, a run's record is
        # read only once the run is in the answer: a scan by state reads records of matches only.
        lazy = after is None and query.since_ms is None and query.until_ms is None and not (query.tags_any or query.tags_all or query.user)
        for run_id in ids:
            id_ms = int(run_id) // 1000
            if newest is not None and id_ms > newest + _ID_SLACK_MS:
                continue  # created after the window or the cursor: its record cannot match
            if query.since_ms is not None and id_ms < query.since_ms - _ID_SLACK_MS:
                return  # every later id is older still
            if lazy:
                held = RunRecord(flow, run_id, id_ms)
                yield Listed(held, load=functools.partial(self._fill, held))
                continue
            rec = self._record_or_skip(Pathspec(flow, run_id))
            if rec is not None:
                yield Listed(rec)

    def scan_runs(self, flow: str, query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, decide: Decide | None = None) -> RunScan:
        self.check_flow(flow)

        def settle(rec: RunRecord) -> None:
            if decide is not None:
                decide(rec)

        return scan_runs(self._listed(flow, query, after), query, limit=limit, after=after, budget=budget,
                         needs_check=lambda r: decide is not None, settle=settle, note="local: runs read newest first")

    # --- outcomes and liveness -------------------------------------------
    def end_outcome(self, run: RunRecord) -> tuple[bool | None, int | None]:
        end = f"{run.pathspec}/end"
        for task in self._dirs(end):
            meta = self._meta_at(f"{end}/{task}")
            if meta.latest_has_outcome:
                return self._outcome_values(f"{end}/{task}", meta)[-1], meta.finished_ms or meta.outcomes[-1][0]
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
        real_root = os.path.realpath(self.root)
        # Only a runtime that started before the run was created can own it: most runs need no look.
        older = [rt for rt in runtimes if (rt.root is None or rt.root == real_root) and int(rt.started_s * 1000) - 1000 <= run.ts_ms]
        if not older:
            return False
        script = self._script_name(run.pathspec)
        if script is None:
            return False
        mine = [rt for rt in older if rt.script == script]
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
            base = f"{run.pathspec}/{step}"
            for task in self._dirs(base):
                with skip_damaged(f"{base}/{task}"):
                    meta = self._meta_at(f"{base}/{task}")
                    newest = max([newest, *meta.attempts, *(ts for ts, _ in meta.outcomes), *meta.done])
        return newest

    # --- steps and tasks ---------------------------------------------------
    def list_steps(self, run: Pathspec) -> list[str]:
        names = self.files.list(str(run))
        if not names:
            self.get_run(run)
        steps = [n for n in names if not n.startswith("_")]
        ts: dict[str, float] = {}
        for step in steps:
            try:
                ts[step] = float(self._json(f"{run}/{step}/_meta/_self.json").get("ts_epoch", 0))
            except (AgentError, AttributeError, TypeError, ValueError) as exc:  # kept, ordered last: its tasks still count
                ts[step] = float("inf")
                reason = exc.message if isinstance(exc, AgentError) else "its record is not a step record"
                current_meter().damaged(f"{run}/{step}", f"step order unknown: {reason}", skipped=False)
        return sorted(steps, key=lambda s: (ts[s], s))

    def step_names(self, run: Pathspec) -> list[str]:
        """By name: no step record read (list_steps reads each to order them by time)."""
        names = self.files.list(str(run))
        if not names:
            self.get_run(run)
        return sorted(n for n in names if not n.startswith("_"))

    def newest_runs(self, flow: str, n: int) -> list[RunRecord] | None:
        self.check_flow(flow)
        ids, times = self._run_ids(flow)
        if not times:
            return None
        return [RunRecord(flow, i, int(i) // 1000) for i in ids[:n]]

    def list_tasks(self, step: Pathspec) -> list[str]:
        return self._dirs(str(step))

    def step_outcomes(self, run: Pathspec, steps: list[str], *, times: bool = False) -> list[StepOutcomes]:
        out = []
        for step in steps:
            so = StepOutcomes(step, set(), set(), set())
            base = f"{run}/{step}"
            for task in self._dirs(base):
                path = f"{base}/{task}"
                with skip_damaged(path):  # a damaged task is left out of its step (and named)
                    meta = self._meta_at(path)
                    values = self._outcome_values(path, meta)
                    if meta.attempts:
                        so.started.add(task)
                    for (ts, _), ok in zip(meta.outcomes, values):
                        so.newest_ms = max(so.newest_ms, ts)
                        (so.ok if ok else so.failed).add(task)
                    if times and (meta.attempts or meta.outcomes):
                        so.times[task] = (meta.started_ms, meta.finished_ms if meta.latest_has_outcome else None)
            if times and so.times:
                so.registered_ms = self._registered_ms(f"{base}/{min(so.times, key=task_order)}")
            out.append(so)
        return out

    def _registered_ms(self, task: str) -> int | None:
        """When the runtime registered a task (its `_self.json`), before its process started: the
        Client's `created_at`. The runtime registers a step's tasks in id order, so a step's
        earliest is its lowest id (one read a step)."""
        try:
            record = self._json(f"{task}/_meta/_self.json")
        except (NotFound, Damaged):  # the step is then timed from its first attempt
            return None
        ts = record.get("ts_epoch") if isinstance(record, dict) else None
        return ts if isinstance(ts, int) and not isinstance(ts, bool) else None

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
        rows = []
        for name in self._task_meta(task).detail:
            row = self._json(f"{task}/_meta/{name}")
            if not isinstance(row, dict):
                raise Damaged(f"{task}/_meta/{name} is not a metadata row", hint="the file is corrupt", item=f"{task}/_meta/{name}")
            rows.append(row)
        return detail_from_rows(rows)

    def capabilities(self) -> dict[str, object]:
        return {"datastore": "local", "datastore_root": self.root}
