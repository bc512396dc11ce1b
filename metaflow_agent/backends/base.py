"""What a backend must answer. The query functions are written against this
interface only; each backend answers it as cheaply as its storage allows."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from .._datastore import Datastore

HEARTBEAT_TIMEOUT_S = 360  # the service's own cutoff for "running"


@dataclass
class RunRecord:
    flow: str
    run_id: str
    ts_ms: int
    user: str | None = None
    tags: list[str] = field(default_factory=list)
    system_tags: list[str] = field(default_factory=list)
    last_heartbeat_s: float | None = None
    status: str | None = None  # set when the backend knows it (server-derived or computed)
    finished_ms: int | None = None


@dataclass
class RunQuery:
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
    more: bool
    complete: bool = True
    scanned: int = 0
    notes: list[str] = field(default_factory=list)
    resume_after: tuple[int, str] | None = None  # where to continue when stopped by the budget
    server_cursor: str | None = None  # the service's own cursor, when the page ended on its boundary


def run_sort_key(ts_ms: int, run_id: str) -> tuple[int, str]:
    """Newest-first ordering key: ts, then the id (numeric ids compare as numbers)."""
    return ts_ms, run_id.zfill(40) if run_id.isdigit() else run_id


def scan_records(records: list[RunRecord], query: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                 status_fn: Callable[[RunRecord], tuple[str, int | None]], note: str) -> RunScan:
    """Filter already-listed runs client-side, newest first: static predicates first,
    then status (which may cost lookups) for at most `budget` runs."""
    records = sorted(records, key=lambda r: run_sort_key(r.ts_ms, r.run_id), reverse=True)
    scan = RunScan(runs=[], more=False, notes=[note])
    for rec in records:
        if after is not None and run_sort_key(rec.ts_ms, rec.run_id) >= run_sort_key(*after):
            continue
        if not query.matches_static(rec):
            continue
        if len(scan.runs) == limit:
            scan.more = True
            break
        if scan.scanned >= budget:
            scan.more, scan.complete = True, False
            scan.notes.append(f"status budget of {budget} runs reached; continue with next_cursor")
            break
        scan.scanned += 1
        rec.status, rec.finished_ms = status_fn(rec)
        scan.resume_after = (rec.ts_ms, rec.run_id)
        if query.status is None or rec.status == query.status:
            scan.runs.append(rec)
    return scan


@dataclass
class StepOutcomes:
    """Which tasks of a step started, and which recorded attempt_ok True/False."""

    step: str
    started: set[str]
    ok: set[str]
    failed: set[str]
    newest_ms: int = 0  # newest outcome timestamp seen in the step


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


class Backend(ABC):
    """Metadata plus datastore access for one deployment."""

    kind: str
    store: Datastore
    # True where a task's own activity is the only sign of life (no run heartbeat).
    tasks_outlive_run: bool = False

    @abstractmethod
    def check_flow(self, flow: str) -> None:
        """NotFound unless the flow exists."""

    @abstractmethod
    def scan_runs(self, flow: str, query: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, with_status: bool = True) -> RunScan:
        """Runs matching query, newest first, strictly after the (ts_ms, run_id) key
        (or from the service's own cursor, when a previous page ended on one).
        with_status=False skips status work (callers that only need the runs)."""

    @abstractmethod
    def get_run(self, flow: str, run_id: str) -> RunRecord:
        """One run; NotFound when absent."""

    def run_status(self, run: RunRecord) -> tuple[str, int | None]:
        """(status, finished_ms): a cheap check first, the full assessment when it cannot tell."""
        quick = self.quick_status(run)
        if quick is not None:
            return quick
        from .._outcomes import assess

        a = assess(self, run)
        return a.status, a.finished_ms

    @abstractmethod
    def quick_status(self, run: RunRecord) -> tuple[str, int | None] | None:
        """(status, finished_ms) when one cheap look settles it (end step succeeded; run long dead); else None."""

    @abstractmethod
    def run_live(self, run: RunRecord, outcomes: list[StepOutcomes]) -> bool:
        """Whether the run may still make progress (fresh heartbeat or recent activity)."""

    @abstractmethod
    def task_fresh(self, flow: str, run_id: str, step: str, task: str) -> bool:
        """Whether an unfinished task shows recent life (heartbeat or file activity)."""

    @abstractmethod
    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes]) -> int | None:
        """When a run that is over last recorded anything."""

    @abstractmethod
    def list_steps(self, flow: str, run_id: str) -> list[str]:
        """Step names of a run, _parameters excluded."""

    @abstractmethod
    def list_tasks(self, flow: str, run_id: str, step: str) -> list[str]:
        """Task ids of a step (the _parameters step included)."""

    @abstractmethod
    def step_outcomes(self, flow: str, run_id: str, steps: list[str]) -> list[StepOutcomes]:
        """Outcome sets for the given steps."""

    @abstractmethod
    def task_detail(self, flow: str, run_id: str, step: str, task: str) -> TaskDetail:
        """Attempts of one task with their outcomes; NotFound when absent."""

    @abstractmethod
    def check_task(self, flow: str, run_id: str, step: str, task: str) -> None:
        """NotFound unless the task exists."""

    def attempt_ended(self, flow: str, run_id: str, step: str, task: str, attempt: int) -> tuple[bool, int | None]:
        """Whether the runtime recorded the attempt's exit, and its return code."""
        rel = f"{flow}/{run_id}/{step}/{task}/{attempt}.runtime"
        if self.store.size(rel) is None:
            return False, None
        try:
            rc = json.loads(self.store.read_small(rel)).get("return_code")
        except (ValueError, AttributeError):
            rc = None
        return True, rc

    def capabilities(self) -> dict[str, object]:
        """Backend-specific facts for capabilities()."""
        return {}
