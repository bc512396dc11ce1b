"""The JSON shapes of the service's objects, exactly as the captures show them.

``run_number`` is the run's name when it was registered under one, else the int - but always a
string in step objects; ``task_id`` likewise with the task name. Steps, tasks and artifacts
carry their run's current ``tags``/``system_tags`` (the service grafts them on at read time,
so run tag mutations show everywhere); metadata rows keep their own (``system_tags`` null).
Master adds ``status`` (only when filtered on) and ``user`` to run rows via ``extra``.
"""

from __future__ import annotations

from typing import Any, Mapping

Rec = dict[str, Any]
RunKey = tuple[str, int]


class Shapes:
    """Serialisers; ``runs`` maps ``(flow_id, run_number)`` to run records."""

    runs: dict[RunKey, Rec]

    @staticmethod
    def serialize_flow(f: Rec) -> Rec:
        return {k: f[k] for k in ("flow_id", "user_name", "ts_epoch", "tags", "system_tags")}

    @staticmethod
    def serialize_run(r: Rec, extra: Mapping[str, Any] | None = None) -> Rec:
        out = {
            "flow_id": r["flow_id"],
            "run_number": r["run_id"] if r.get("run_id") is not None else r["run_number"],
            "user_name": r["user_name"],
            "ts_epoch": r["ts_epoch"],
            "tags": r["tags"],
            "system_tags": r["system_tags"],
            "last_heartbeat_ts": r["last_heartbeat_ts"],
        }
        out.update(extra or {})
        return out

    def _run_tags(self, rec: Rec) -> tuple[Any, Any]:
        run = self.runs.get((rec["flow_id"], rec["run_number"]))
        if run is None:
            return rec.get("tags"), rec.get("system_tags")
        return run["tags"], run["system_tags"]

    def serialize_step(self, s: Rec) -> Rec:
        tags, system_tags = self._run_tags(s)
        return {
            "flow_id": s["flow_id"],
            "run_number": s["run_id"] if s.get("run_id") is not None else str(s["run_number"]),
            "step_name": s["step_name"],
            "user_name": s["user_name"],
            "ts_epoch": s["ts_epoch"],
            "tags": tags,
            "system_tags": system_tags,
        }

    def _ids(self, rec: Rec) -> Rec:
        return {
            "flow_id": rec["flow_id"],
            "run_number": rec["run_id"] if rec.get("run_id") is not None else rec["run_number"],
            "step_name": rec["step_name"],
            "task_id": rec["task_name"] if rec.get("task_name") is not None else rec["task_id"],
        }

    def serialize_task(self, t: Rec) -> Rec:
        tags, system_tags = self._run_tags(t)
        out = self._ids(t)
        out.update(
            user_name=t["user_name"],
            ts_epoch=t["ts_epoch"],
            tags=tags,
            system_tags=system_tags,
            last_heartbeat_ts=t["last_heartbeat_ts"],
        )
        return out

    def serialize_metadata(self, m: Rec) -> Rec:
        out = {"id": m["id"]}
        out.update(self._ids(m))
        out.update({k: m[k] for k in ("field_name", "value", "type", "user_name", "ts_epoch", "tags", "system_tags")})
        return out

    def serialize_artifact(self, a: Rec) -> Rec:
        tags, system_tags = self._run_tags(a)
        out = self._ids(a)
        for k in ("name", "location", "ds_type", "sha", "type", "content_type", "user_name", "attempt_id", "ts_epoch"):
            out[k] = a[k]
        out.update(tags=tags, system_tags=system_tags)
        return out
