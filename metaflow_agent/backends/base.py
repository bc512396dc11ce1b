"""What a metadata backend must answer: the one interface local Metaflow and the metadata
service implement as siblings (`backends.local.LocalMetadata`, and the extended provider's
`ServiceQueries`). Records in and out (`metaflow_agent._records`); pathspecs as `Pathspec`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Literal

from .._pathspec import Pathspec
from .._records import RunQuery, RunRecord, RunScan, StepOutcomes, TaskDetail

Decide = Callable[[RunRecord], "tuple[str, int | None]"]


class MetadataBackend(ABC):
    """Runs, steps, tasks and their outcomes, as cheaply as the storage allows."""

    kind: Literal["local", "service"]
    # True where a task's own activity is the only sign of life (no run heartbeat).
    tasks_outlive_run: bool = False

    @abstractmethod
    def check_flow(self, flow: str) -> None:
        """NotFound unless the flow exists."""

    @abstractmethod
    def scan_runs(self, flow: str, query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, decide: Decide | None = None) -> RunScan:
        """Runs matching query, newest first, strictly after the (ts_ms, run_id) key (or from
        the service's own cursor, when a previous page ended on one). `decide(run)` gives a
        run's (status, finished_ms) where the backend cannot tell cheaply; None: status unneeded."""

    @abstractmethod
    def get_run(self, run: Pathspec) -> RunRecord:
        """One run; NotFound when absent."""

    @abstractmethod
    def quick_status(self, run: RunRecord) -> tuple[str, int | None] | None:
        """(status, finished_ms) when one cheap look settles it (end step succeeded; run long dead); else None."""

    @abstractmethod
    def run_live(self, run: RunRecord, outcomes: list[StepOutcomes]) -> bool:
        """Whether the run may still make progress (fresh heartbeat or recent activity)."""

    @abstractmethod
    def task_fresh(self, task: Pathspec) -> bool:
        """Whether an unfinished task shows recent life (heartbeat or file activity)."""

    @abstractmethod
    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes]) -> int | None:
        """When a run that is over last recorded anything."""

    @abstractmethod
    def list_steps(self, run: Pathspec) -> list[str]:
        """Step names of a run in execution order, _parameters excluded; NotFound when the run is absent."""

    @abstractmethod
    def list_tasks(self, step: Pathspec) -> list[str]:
        """Task ids of a step (the _parameters step included)."""

    @abstractmethod
    def step_outcomes(self, run: Pathspec, steps: list[str]) -> list[StepOutcomes]:
        """Outcome sets for the given steps."""

    @abstractmethod
    def task_detail(self, task: Pathspec) -> TaskDetail:
        """Attempts of one task with their outcomes; NotFound when absent."""

    @abstractmethod
    def check_task(self, task: Pathspec) -> None:
        """NotFound (for the task, its step or its run, whichever is missing) unless the task exists."""

    def capabilities(self) -> dict[str, object]:
        """Backend-specific facts for capabilities()."""
        return {}
