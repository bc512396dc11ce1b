"""Typed records that flow between the backends and the question modules, and the run scan.

Plain dataclasses, no I/O: the backends build them from their storage (local `_meta`
files, metadata service rows), the question modules read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ._cost import skip_damaged
from ._pathspec import Pathspec
from ._states import RunState, TaskState


@dataclass
class RunRecord:
    """One run as its metadata records it; `status`/`finished_ms` once decided."""

    flow: str
    run_id: str
    ts_ms: int
    user: str | None = None
    tags: list[str] = field(default_factory=list)
    system_tags: list[str] = field(default_factory=list)
    last_heartbeat_s: float | None = None
    status: RunState | None = None
    finished_ms: int | None = None
    service_status: str | None = None  # the metadata service's own derived status, when it sent one

    @classmethod
    def from_row(cls, flow: str, row: Mapping[str, Any], run_id: str | None = None) -> RunRecord:
        """A run from a metadata row: a service run object or a local `_meta/_self.json`."""
        system_tags = [t for t in row.get("system_tags") or [] if isinstance(t, str)]
        user = row.get("user") or row.get("user_name") or next((t[5:] for t in system_tags if t.startswith("user:")), None)
        heartbeat = row.get("last_heartbeat_ts")
        rec = cls(
            flow,
            str(row.get("run_number", run_id)),
            int(row.get("ts_epoch") or 0),
            str(user) if user is not None else None,
            [t for t in row.get("tags") or [] if isinstance(t, str)],
            system_tags,
            float(heartbeat) if isinstance(heartbeat, (int, float)) and not isinstance(heartbeat, bool) else None,
        )
        status = row.get("status")
        if status in ("running", "completed", "failed"):
            rec.service_status = status
        return rec

    @property
    def pathspec(self) -> Pathspec:
        return Pathspec(self.flow, self.run_id)

    @property
    def sort_key(self) -> tuple[int, str]:
        return run_sort_key(self.ts_ms, self.run_id)


def run_sort_key(ts_ms: int, run_id: str) -> tuple[int, str]:
    """Newest-first ordering key: ts, then the id (numeric ids compare as numbers)."""
    return ts_ms, run_id.zfill(40) if run_id.isdigit() else run_id


@dataclass
class RunQuery:
    """Run filters; everything but status is checked without any lookup."""

    status: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    user: str | None = None

    def matches_static(self, r: RunRecord) -> bool:
        """Every predicate except status (which may cost a lookup)."""
        tags = set(r.tags) | set(r.system_tags)
        if self.since_ms is not None and r.ts_ms < self.since_ms:
            return False
        if self.until_ms is not None and r.ts_ms > self.until_ms:
            return False
        if self.tags_any and not tags.intersection(self.tags_any):
            return False
        if self.tags_all and not set(self.tags_all) <= tags:
            return False
        if self.user is not None and f"user:{self.user}" not in tags and r.user != self.user:
            return False
        return True


@dataclass
class RunScan:
    """A page of runs, newest first, each with its status."""

    runs: list[RunRecord]
    more: bool = False
    complete: bool = True
    scanned: int = 0
    notes: list[str] = field(default_factory=list)
    resume_after: tuple[int, str] | None = None  # where to continue when stopped by the budget
    server_cursor: str | None = None  # the service's own cursor, when the page ended on its boundary


@dataclass
class Listed:
    """A run as listed, in newest-first order; `page_end` is set on the last row of a
    service page: the service's cursor for the next page ("" when there is none).

    `load`, when set, reads the run's record into `rec` (which holds only what the listing
    gave: id and creation time) and says whether it exists: the scan calls it only for a run
    that is in the answer."""

    rec: RunRecord
    page_end: str | None = None
    load: Callable[[], bool] | None = None


def _loaded(item: Listed) -> bool:
    """Read a listed run's record if it was left for later; False when absent or damaged (skipped, named)."""
    if item.load is None:
        return True
    load, item.load = item.load, None
    found = False
    with skip_damaged(str(item.rec.pathspec)):
        found = load()
    return found


def scan_runs(listed: Iterable[Listed], query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
              needs_check: Callable[[RunRecord], bool], settle: Callable[[RunRecord], None], note: str) -> RunScan:
    """The run scan every backend shares: skip up to `after`, apply the static filters, settle
    each candidate's status (at most `budget` costly checks), keep `limit` matches.

    `needs_check(rec)` says whether settling costs a lookup; `settle(rec)` sets status and
    finished_ms. Stops early: reading ends as soon as the page is full.
    """
    scan = RunScan(runs=[], notes=[note])
    checks = 0
    after_key = run_sort_key(*after) if after is not None else None
    last: Listed | None = None
    for item in listed:
        rec = item.rec
        if after_key is not None and rec.sort_key >= after_key:
            continue
        if not query.matches_static(rec):
            continue
        if len(scan.runs) == limit:
            scan.more = True
            return scan
        if needs_check(rec):
            if checks >= budget:
                scan.more, scan.complete = True, False
                scan.notes.append(f"status budget of {budget} runs reached; continue with next_cursor")
                if last is not None and last.load is not None and _loaded(last):  # the cursor needs its record's time
                    scan.resume_after = (last.rec.ts_ms, last.rec.run_id)
                return scan
            checks += 1
        scan.scanned += 1
        scan.resume_after = (rec.ts_ms, rec.run_id)
        last = item
        settled = False
        with skip_damaged(str(rec.pathspec)):  # a run whose state cannot be read is skipped and named
            settle(rec)
            settled = True
        if not settled:
            continue
        if query.status is not None and rec.status != query.status:
            continue
        if not _loaded(item):  # its record, read now that the run is in the answer
            continue
        scan.runs.append(rec)
        if len(scan.runs) == limit and item.page_end is not None:
            # The page ended on the service's own boundary: resume from its cursor.
            scan.more, scan.server_cursor = bool(item.page_end), item.page_end or None
            return scan
    return scan


@dataclass
class StepOutcomes:
    """Which tasks of a step started, and which recorded attempt_ok True/False.

    `times` holds each task's first attempt start and last outcome (epoch ms) where the
    backend knows them cheaply; `exact_times` says whether they are the metadata's own
    timestamps (False: approximated, e.g. from heartbeats)."""

    step: str
    started: set[str]
    ok: set[str]
    failed: set[str]
    newest_ms: int = 0  # newest outcome timestamp seen in the step
    times: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    exact_times: bool = True
    registered_ms: int | None = None  # when its first task was registered (the Client's created_at), if read

    @property
    def tasks(self) -> set[str]:
        return self.started | self.ok | self.failed


@dataclass
class AttemptInfo:
    attempt: int
    ok: bool | None
    started_ms: int | None = None
    finished_ms: int | None = None


@dataclass
class TaskDetail:
    attempts: list[AttemptInfo]
    foreach_index: str | None = None
    last_heartbeat_s: float | None = None


@dataclass
class FailureLook:
    """What one cheap look at a run's newest metadata found: the tasks whose latest attempt
    recorded attempt_ok False, and whether the look saw every row of the run."""

    failed: list[Pathspec]
    whole_run: bool
    unfinished: list[Pathspec] = field(default_factory=list)  # latest attempt started, no outcome yet


def attempt_of(row: Mapping[str, Any]) -> int:
    """The attempt a metadata row belongs to: its `attempt_id:N` tag, else its own value."""
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


def detail_from_rows(rows: Iterable[Mapping[str, Any]]) -> TaskDetail:
    """Fold metadata rows (any order, any backend) into per-attempt outcomes."""
    attempts: dict[int, AttemptInfo] = {}
    foreach = None
    for r in rows:
        n = attempt_of(r)
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


def task_order(task_id: str) -> tuple[int, str]:
    """Tasks in id order (numeric ids as numbers)."""
    return (int(task_id), "") if task_id.isdigit() else (1 << 62, task_id)


# --- answers a backend decides itself (the query service) ------------------------------------
@dataclass
class DecidedTask:
    """A task whose state the backend decided (by the same rule)."""

    step: str
    task: str
    state: TaskState
    retried_ok: bool
    attempts: list[AttemptInfo]
    started_ms: int | None = None
    finished_ms: int | None = None


@dataclass
class DecidedTasks:
    """Tasks of a run in the states asked for; `complete` False when a bound cut the list."""

    run: RunRecord
    tasks: list[DecidedTask]
    complete: bool = True


@dataclass
class DecidedStep:
    step: str
    counts: dict[str, int]  # task states and retried_ok -> tasks
    tasks: int
    started_ms: int | None
    finished_ms: int | None
    slowest: list[tuple[str, int]]  # (task id, duration ms), slowest first


@dataclass
class DecidedFlow:
    """A flow, its latest run (state and finish set) and that run's step count when known."""

    flow: str
    latest: RunRecord | None
    steps: int | None = None


@dataclass
class DecidedSummary:
    run: RunRecord  # with status and finished_ms
    steps: list[DecidedStep]
    first_failure: DecidedTask | None = None  # failed before crashed, in step order
    ds_type: str | None = None  # where the run recorded its data (its _parameters artifacts'), if said
    location: str | None = None


@dataclass
class DecidedStats:
    flow: str
    examined: int
    counts: dict[str, int]  # run states -> runs
    success_rate: float | None
    finished_success_rate: float | None
    durations_s: dict[str, float]  # n, min, median, p90, max of completed runs
    complete: bool
    steps: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class NameHit:
    """One artifact whose name matched, in walk order (run newest first, step, task, name).

    `tasks_before` / `empty_before`: tasks of the page's range before this hit's task, and
    how many of them have no artifact rows (the range starts at the cursor's task, inclusive)."""

    run_id: str
    step: str
    task: str
    attempt: int
    name: str
    sha: str | None
    tasks_before: int
    empty_before: int
    ds_type: str | None = None  # the artifact record's datastore and location: where the task's data is
    location: str | None = None


@dataclass
class NameHitPage:
    """A page of name hits, and what it covered: from the cursor's task (or the window's first)
    through the task of the first hit after it (or the window's end)."""

    hits: list[NameHit]
    runs: list[str]  # runs covered, in walk order
    tasks: int  # tasks covered
    empty: int  # covered tasks with no artifact rows (running, or killed before saving)
    next_cursor: str | None
    source: str  # where the page came from, for notes
