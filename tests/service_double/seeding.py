"""Load seed records, given in the service's own JSON shapes, into a ``Store``.

``records`` maps a table to a list of rows exactly as GET routes return them (extra keys such
as master's ``user``/``status`` are ignored)::

    {"flows": [...], "runs": [...], "steps": [...], "tasks": [...],
     "metadata": [...], "artifacts": [...]}

Ids, timestamps and heartbeats are kept as given. A numeric ``run_number``/``task_id`` is the
row's number; a non-numeric one is a registered name (the row gets the next number). Parents
must be present (or listed earlier): a row whose parent is missing raises ``ValueError``.
The id sequences continue after the largest seeded id.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .shapes import Rec
from .store import Store, is_numeric

TABLES = ("flows", "runs", "steps", "tasks", "metadata", "artifacts")


def _run(store: Store, row: Mapping[str, Any]) -> Rec:
    run = store.find_run(row["flow_id"], str(row["run_number"]))
    if run is None:
        raise ValueError("seed row needs run %s/%s first: %r" % (row["flow_id"], row["run_number"], dict(row)))
    return run


def _task(store: Store, row: Mapping[str, Any]) -> Rec:
    task = store.find_task(row["flow_id"], str(row["run_number"]), row["step_name"], str(row["task_id"]))
    if task is None:
        raise ValueError("seed row needs its task first: %r" % (dict(row),))
    return task


def load_records(store: Store, records: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, int]:
    """Insert ``records`` table by table; returns how many rows each table received."""
    unknown = set(records) - set(TABLES)
    if unknown:
        raise ValueError("unknown tables: %s" % sorted(unknown))
    counts = dict.fromkeys(TABLES, 0)
    with store.lock:
        for row in records.get("flows", ()):
            store.add_flow(row["flow_id"], row.get("user_name"), row.get("tags"), row.get("system_tags"), row["ts_epoch"])
            counts["flows"] += 1
        for row in records.get("runs", ()):
            number = row["run_number"]
            named = not is_numeric(number)
            store.add_run(
                row["flow_id"],
                user_name=row.get("user_name"),
                tags=row.get("tags"),
                system_tags=row.get("system_tags"),
                run_id=str(number) if named else None,
                run_number=None if named else int(number),
                ts_epoch=row["ts_epoch"],
                last_heartbeat_ts=row.get("last_heartbeat_ts"),
            )
            counts["runs"] += 1
        for row in records.get("steps", ()):
            store.add_step(_run(store, row), row["step_name"], row.get("user_name"), row.get("tags"), row.get("system_tags"), row["ts_epoch"])
            counts["steps"] += 1
        for row in records.get("tasks", ()):
            tid = row["task_id"]
            named = not is_numeric(tid)
            store.add_task(
                _run(store, row),
                row["step_name"],
                user_name=row.get("user_name"),
                tags=row.get("tags"),
                system_tags=row.get("system_tags"),
                task_name=str(tid) if named else None,
                task_id=None if named else int(tid),
                ts_epoch=row["ts_epoch"],
                last_heartbeat_ts=row.get("last_heartbeat_ts"),
            )
            counts["tasks"] += 1
        for row in records.get("metadata", ()):
            store.add_metadata(_task(store, row), row, id=row.get("id"), ts_epoch=row["ts_epoch"])
            counts["metadata"] += 1
        for row in records.get("artifacts", ()):
            store.add_artifact(_task(store, row), row, ts_epoch=row["ts_epoch"])
            counts["artifacts"] += 1
    return counts
