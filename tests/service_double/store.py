"""In-memory tables of the metadata service double, with the real service's id rules.

Records are kept with the database's columns (``run_number`` int plus an optional ``run_id``
name, ``task_id`` int plus an optional ``task_name``); ``serialize_*`` turn them into the
exact JSON shapes of the captures (see ``shapes``).
``run_number``, ``task_id`` and metadata ``id`` are global sequences starting at 1, like
PostgreSQL serials. One ``RLock`` guards everything: the app thread and a seeding thread may
touch the store at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Mapping

from .shapes import Rec, RunKey, Shapes

TaskKey = tuple[str, int, str, int]

HEARTBEAT_WAIT_S = 10
RUN_INACTIVE_CUTOFF_S = 360


class Conflict(Exception):
    """Duplicate primary key (the service answers 409)."""


class NotFound(Exception):
    """A parent row is missing."""


def is_numeric(value: Any) -> bool:
    return str(value).isnumeric()


def heartbeat_capable(system_tags: Iterable[str] | None) -> bool:
    """Clients from metaflow 2.2.12 (or 1.14) on send heartbeats; the service pre-fills one."""
    try:
        tag = next(t for t in system_tags or [] if t.startswith("metaflow_version:"))
        parts = tuple(int(p) for p in tag[len("metaflow_version:") :].split("+")[0].split(".")[:3])
    except (StopIteration, ValueError):
        return False
    if parts[0] == 1:
        return parts >= (1, 14, 0)
    return parts >= (2, 2, 12)


def _pg_bool(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("t", "true", "y", "yes", "on", "1"):
        return True
    if text in ("f", "false", "n", "no", "off", "0"):
        return False
    return None


class Store(Shapes):
    """The six tables plus the global id sequences."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.revision = 0
        self.reset()

    # ------------------------------------------------------------------ housekeeping
    def reset(self) -> None:
        with self.lock:
            self.flows: dict[str, Rec] = {}
            self.runs: dict[RunKey, Rec] = {}
            self.run_names: dict[tuple[str, str], int] = {}
            self.steps: dict[tuple[str, int, str], Rec] = {}
            self.tasks: dict[TaskKey, Rec] = {}
            self.task_names: dict[tuple[str, int, str, str], int] = {}
            self.metadata: dict[RunKey, list[Rec]] = {}
            self.artifacts: dict[RunKey, dict[tuple[str, int, int, str], Rec]] = {}
            self.next_run_number = 1
            self.next_task_id = 1
            self.next_metadata_id = 1
            self.revision += 1

    def now_ms(self) -> int:
        return int(round(self.clock() * 1000))

    def now_s(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------ lookups
    def find_run(self, flow_id: str, run: str) -> Rec | None:
        """By number when numeric, else by registered name (``translate_run_key``)."""
        with self.lock:
            if is_numeric(run):
                return self.runs.get((flow_id, int(run)))
            number = self.run_names.get((flow_id, str(run)))
            return None if number is None else self.runs.get((flow_id, number))

    def find_step(self, flow_id: str, run: str, step: str) -> Rec | None:
        r = self.find_run(flow_id, run)
        return None if r is None else self.steps.get((flow_id, r["run_number"], step))

    def find_task(self, flow_id: str, run: str, step: str, task: str) -> Rec | None:
        with self.lock:
            r = self.find_run(flow_id, run)
            if r is None:
                return None
            if is_numeric(task):
                return self.tasks.get((flow_id, r["run_number"], step, int(task)))
            tid = self.task_names.get((flow_id, r["run_number"], step, str(task)))
            return None if tid is None else self.tasks.get((flow_id, r["run_number"], step, tid))

    def list_runs(self, flow_id: str) -> list[Rec]:
        with self.lock:
            return [r for (f, _), r in self.runs.items() if f == flow_id]

    def list_steps(self, flow_id: str, run: str) -> list[Rec]:
        with self.lock:
            r = self.find_run(flow_id, run)
            if r is None:
                return []
            n = r["run_number"]
            return [s for (f, rn, _), s in self.steps.items() if f == flow_id and rn == n]

    def list_tasks(self, flow_id: str, run: str, step: str) -> list[Rec]:
        with self.lock:
            r = self.find_run(flow_id, run)
            if r is None:
                return []
            n = r["run_number"]
            return [
                t for (f, rn, s, _), t in self.tasks.items() if f == flow_id and rn == n and s == step
            ]

    def run_metadata(self, flow_id: str, run: str) -> list[Rec]:
        with self.lock:
            r = self.find_run(flow_id, run)
            return [] if r is None else list(self.metadata.get((flow_id, r["run_number"]), []))

    def task_metadata(self, flow_id: str, run: str, step: str, task: str) -> list[Rec]:
        t = self.find_task(flow_id, run, step, task)
        if t is None:
            return []
        return [
            m
            for m in self.run_metadata(flow_id, str(t["run_number"]))
            if m["step_name"] == step and m["task_id"] == t["task_id"]
        ]

    def run_artifacts(self, flow_id: str, run: str, step: str | None = None) -> list[Rec]:
        with self.lock:
            r = self.find_run(flow_id, run)
            if r is None:
                return []
            rows = self.artifacts.get((flow_id, r["run_number"]), {}).values()
            return [a for a in rows if step is None or a["step_name"] == step]

    def task_artifacts(self, flow_id: str, run: str, step: str, task: str) -> list[Rec]:
        t = self.find_task(flow_id, run, step, task)
        if t is None:
            return []
        return [a for a in self.run_artifacts(flow_id, run, step) if a["task_id"] == t["task_id"]]

    # ------------------------------------------------------------------ derived values
    def run_status(self, run: Rec) -> str:
        """Master's derived status: the ``end`` step's latest ``attempt_ok``, else heartbeat."""
        rows = self.metadata.get((run["flow_id"], run["run_number"]), [])
        end = [m for m in rows if m["step_name"] == "end"]
        oks = [m for m in end if m["field_name"] == "attempt_ok"]
        ok = max(oks, key=lambda m: m["ts_epoch"]) if oks else None
        ok_value = None if ok is None else _pg_bool(ok["value"])
        if ok is not None and ok_value is False:
            attempts = [m for m in end if m["field_name"] == "attempt"]
            if attempts and ok["ts_epoch"] < max(m["ts_epoch"] for m in attempts):
                return "running"
        if ok is not None and ok_value is True:
            return "completed"
        if ok is not None and ok_value is False:
            return "failed"
        hb = run.get("last_heartbeat_ts")
        if hb is not None and abs(self.clock() - hb) <= RUN_INACTIVE_CUTOFF_S:
            return "running"
        return "failed"

    @staticmethod
    def run_user(run: Rec) -> str | None:
        """The verified owner: ``user_name`` when a ``user:<user_name>`` system tag is present."""
        user = run.get("user_name")
        return user if ("user:%s" % user) in (run.get("system_tags") or []) else None

    def latest_artifacts(self, rows: list[Rec]) -> list[Rec]:
        """Keep each task's artifacts of its highest attempt (``filter_artifacts_for_latest_attempt``)."""
        latest: dict[int, int] = {}
        for a in rows:
            latest[a["task_id"]] = max(a["attempt_id"], latest.get(a["task_id"], 0))
        return [a for a in rows if a["attempt_id"] == latest[a["task_id"]]]

    # ------------------------------------------------------------------ writes
    def _touch(self) -> None:
        self.revision += 1

    def add_flow(self, flow_id: str, user_name: Any = None, tags: Any = None, system_tags: Any = None, ts_epoch: int | None = None) -> Rec:
        with self.lock:
            if flow_id in self.flows:
                raise Conflict('duplicate key value violates unique constraint "flows_v3_pkey"')
            rec = {"flow_id": flow_id, "user_name": user_name, "ts_epoch": ts_epoch or self.now_ms(), "tags": tags, "system_tags": system_tags}
            self.flows[flow_id] = rec
            self._touch()
            return rec

    def add_run(
        self,
        flow_id: str,
        user_name: Any = None,
        tags: Any = None,
        system_tags: Any = None,
        run_id: str | None = None,
        run_number: int | None = None,
        ts_epoch: int | None = None,
        last_heartbeat_ts: int | None = None,
        fill_heartbeat: bool = False,
    ) -> Rec:
        with self.lock:
            if flow_id not in self.flows:
                raise NotFound('insert or update on table "runs_v3" violates foreign key constraint')
            if run_id is not None and (flow_id, run_id) in self.run_names:
                raise Conflict('duplicate key value violates unique constraint "runs_v3_flow_id_run_id_key"')
            if run_number is None:
                run_number = self.next_run_number
            if (flow_id, run_number) in self.runs:
                raise Conflict('duplicate key value violates unique constraint "runs_v3_pkey"')
            self.next_run_number = max(self.next_run_number, run_number + 1)
            if fill_heartbeat and last_heartbeat_ts is None:
                last_heartbeat_ts = self.now_s()
            rec = {
                "flow_id": flow_id,
                "run_number": run_number,
                "run_id": run_id,
                "user_name": user_name,
                "ts_epoch": ts_epoch or self.now_ms(),
                "last_heartbeat_ts": last_heartbeat_ts,
                "tags": tags,
                "system_tags": system_tags,
            }
            self.runs[(flow_id, run_number)] = rec
            if run_id is not None:
                self.run_names[(flow_id, run_id)] = run_number
            self._touch()
            return rec

    def add_step(self, run: Rec, step_name: str, user_name: Any = "", tags: Any = None, system_tags: Any = None, ts_epoch: int | None = None) -> Rec:
        with self.lock:
            key = (run["flow_id"], run["run_number"], step_name)
            if key in self.steps:
                raise Conflict('duplicate key value violates unique constraint "steps_v3_pkey"')
            rec = {
                "flow_id": run["flow_id"],
                "run_number": run["run_number"],
                "run_id": run["run_id"] if run.get("run_id") is not None else str(run["run_number"]),
                "step_name": step_name,
                "user_name": user_name,
                "ts_epoch": ts_epoch or self.now_ms(),
                "tags": tags,
                "system_tags": system_tags,
            }
            self.steps[key] = rec
            self._touch()
            return rec

    def add_task(
        self,
        run: Rec,
        step_name: str,
        user_name: Any = None,
        tags: Any = None,
        system_tags: Any = None,
        task_name: str | None = None,
        task_id: int | None = None,
        ts_epoch: int | None = None,
        last_heartbeat_ts: int | None = None,
        fill_heartbeat: bool = False,
    ) -> Rec:
        with self.lock:
            flow_id, number = run["flow_id"], run["run_number"]
            if (flow_id, number, step_name) not in self.steps:
                raise NotFound('insert or update on table "tasks_v3" violates foreign key constraint')
            if task_name is not None and (flow_id, number, step_name, task_name) in self.task_names:
                raise Conflict('duplicate key value violates unique constraint "tasks_v3_task_name_key"')
            if task_id is None:
                task_id = self.next_task_id
            self.next_task_id = max(self.next_task_id, task_id + 1)
            if fill_heartbeat and last_heartbeat_ts is None:
                last_heartbeat_ts = self.now_s()
            rec = {
                "flow_id": flow_id,
                "run_number": number,
                "run_id": run.get("run_id"),
                "step_name": step_name,
                "task_id": task_id,
                "task_name": task_name,
                "user_name": user_name,
                "ts_epoch": ts_epoch or self.now_ms(),
                "last_heartbeat_ts": last_heartbeat_ts,
                "tags": tags,
                "system_tags": system_tags,
            }
            self.tasks[(flow_id, number, step_name, task_id)] = rec
            if task_name is not None:
                self.task_names[(flow_id, number, step_name, task_name)] = task_id
            self._touch()
            return rec

    def _task_columns(self, task: Rec) -> Rec:
        return {k: task.get(k) for k in ("flow_id", "run_number", "run_id", "step_name", "task_id", "task_name")}

    def add_metadata(self, task: Rec, datum: Mapping[str, Any], id: int | None = None, ts_epoch: int | None = None) -> Rec:
        with self.lock:
            if id is None:
                id = self.next_metadata_id
            self.next_metadata_id = max(self.next_metadata_id, id + 1)
            rec = self._task_columns(task)
            rec.update(
                id=id,
                field_name=datum.get("field_name", " "),
                value=datum.get("value", " "),
                type=datum.get("type", " "),
                user_name=datum.get("user_name"),
                ts_epoch=ts_epoch or self.now_ms(),
                tags=datum.get("tags"),
                system_tags=datum.get("system_tags"),
            )
            self.metadata.setdefault((task["flow_id"], task["run_number"]), []).append(rec)
            self._touch()
            return rec

    def add_artifact(self, task: Rec, art: Mapping[str, Any], ts_epoch: int | None = None) -> Rec:
        with self.lock:
            rec = self._task_columns(task)
            rec.update(
                name=art.get("name", " "),
                location=art.get("location", " "),
                ds_type=art.get("ds_type", " "),
                sha=art.get("sha", " "),
                type=art.get("type", " "),
                content_type=art.get("content_type", " "),
                user_name=art.get("user_name", " "),
                attempt_id=int(art.get("attempt_id", 0)),
                ts_epoch=ts_epoch or self.now_ms(),
                tags=art.get("tags"),
                system_tags=art.get("system_tags"),
            )
            table = self.artifacts.setdefault((task["flow_id"], task["run_number"]), {})
            key = (rec["step_name"], rec["task_id"], rec["attempt_id"], rec["name"])
            if key in table:
                raise Conflict('duplicate key value violates unique constraint "artifact_v3_pkey"')
            table[key] = rec
            self._touch()
            return rec

    def heartbeat(self, rec: Rec) -> bool:
        """Move ``last_heartbeat_ts`` to now unless it moved less than 10 s ago (then 404)."""
        with self.lock:
            now = self.now_s()
            hb = rec.get("last_heartbeat_ts")
            if hb is not None and hb > now - HEARTBEAT_WAIT_S:
                return False
            rec["last_heartbeat_ts"] = now
            self._touch()
            return True

    def set_run_tags(self, run: Rec, tags: list[str]) -> None:
        with self.lock:
            run["tags"] = tags
            self._touch()
