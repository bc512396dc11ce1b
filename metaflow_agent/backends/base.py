"""What a metadata backend must answer: the one interface local Metaflow and the metadata
service implement as siblings (`backends.local.LocalMetadata`, and the extended provider's
`ServiceQueries`). Records in and out (`metaflow_agent._records`); pathspecs as `Pathspec`;
liveness as a three-valued `Fact` (see `metaflow_agent._states`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Literal

from .._pathspec import Pathspec
from .._roots import DataRoot
from .._records import (
    DecidedFlow,
    DecidedStats,
    DecidedSummary,
    DecidedTasks,
    FailureLook,
    NameHitPage,
    RunQuery,
    RunRecord,
    RunScan,
    StepOutcomes,
    TaskDetail,
)
from .._states import Fact

Decide = Callable[[RunRecord], None]  # sets a run's status and finished_ms


class MetadataBackend(ABC):
    """Flows, runs, steps, tasks, their outcomes and liveness, as cheaply as the storage allows."""

    kind: Literal["local", "service"]
    # True where liveness is proved from a delayed signal (heartbeats): a run that has just
    # failed for good still looks alive for a while, so alive runs are checked for failures.
    liveness_lags: bool = False
    # True where a task's data may live under a root other than the configured one (the service:
    # each task records its own); False where the metadata lives in the datastore itself (local).
    records_roots: bool = False

    @abstractmethod
    def list_flows(self) -> list[str]:
        """Every flow name."""

    @abstractmethod
    def check_flow(self, flow: str) -> None:
        """NotFound unless the flow exists."""

    @abstractmethod
    def scan_runs(self, flow: str, query: RunQuery, *, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, decide: Decide | None = None) -> RunScan:
        """Runs matching query, newest first, strictly after the (ts_ms, run_id) key (or from
        the service's own cursor, when a previous page ended on one). `decide(run)` settles a
        run's state and finish (at most `budget` of them); None: states are not needed."""

    @abstractmethod
    def get_run(self, run: Pathspec) -> RunRecord:
        """One run; NotFound when absent."""

    @abstractmethod
    def end_outcome(self, run: RunRecord) -> tuple[bool | None, int | None]:
        """(ok, finished_ms) of the end step's latest attempt: True/False when it recorded an
        outcome, None when it has none (no end task yet, or it died)."""

    @abstractmethod
    def run_liveness(self, run: RunRecord) -> Fact:
        """True when the run is proved alive, False when proved dead, None when nobody can tell."""

    @abstractmethod
    def task_liveness(self, task: Pathspec) -> Fact:
        """The same, for one task's current attempt."""

    def failure_look(self, run: RunRecord) -> FailureLook | None:
        """Tasks whose latest attempt failed, from one cheap look at what the run recorded last;
        None when there is no such look (then the steps are searched)."""
        return None

    @abstractmethod
    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes], *, completed: bool = False) -> int | None:
        """When a run that is over last recorded anything (a completed run: its end step's outcome);
        from `outcomes` when given, else as cheaply as the backend can; None when it cannot say."""

    @abstractmethod
    def list_steps(self, run: Pathspec) -> list[str]:
        """Step names of a run in execution order, _parameters excluded; NotFound when the run is absent."""

    def step_names(self, run: Pathspec) -> list[str]:
        """Step names of a run in a stable order, as cheaply as the backend can (list_steps'
        execution order where that costs nothing more); NotFound when the run is absent."""
        return self.list_steps(run)

    def newest_runs(self, flow: str, n: int) -> list[RunRecord] | None:
        """The flow's n newest runs, ids and creation times only, where the listing alone orders
        them (no record read); None where it does not (then scan_runs)."""
        return None

    @abstractmethod
    def list_tasks(self, step: Pathspec) -> list[str]:
        """Task ids of a step (the _parameters step included)."""

    @abstractmethod
    def step_outcomes(self, run: Pathspec, steps: list[str], *, times: bool = False) -> list[StepOutcomes]:
        """Outcome sets for the given steps; with each task's start and finish when `times`."""

    @abstractmethod
    def failed_tasks_of(self, step: Pathspec) -> set[str]:
        """Tasks of a step with an attempt that recorded attempt_ok False (one cheap look)."""

    @abstractmethod
    def task_detail(self, task: Pathspec) -> TaskDetail:
        """Attempts of one task with their outcomes; NotFound when absent."""

    @abstractmethod
    def check_task(self, task: Pathspec) -> None:
        """NotFound (for the task, its step or its run, whichever is missing) unless the task exists."""

    def run_root(self, run: Pathspec, *, exact: bool = False) -> DataRoot | None:
        """Where the run recorded its data (one look, as cheap as the backend allows; without
        `exact`, the root its flow's runs recorded may stand in, see `root_guessed`); None: not
        recorded, or not needed (the metadata lives in the configured datastore)."""
        return None

    def call_notes(self) -> list[str]:
        """What this call's answer should say about how the backend dated or decided things."""
        return []

    def root_guessed(self, run: Pathspec) -> bool:
        """Whether `run_root(run)` answered with its flow's root, not the run's own record."""
        return False

    def task_root(self, task: Pathspec) -> DataRoot | None:
        """Where this task recorded its data (`ds-type`/`ds-root` of its latest attempt)."""
        return None

    # Where the backend decides states itself (the query service), whole answers in one look;
    # None: not available here, and the question modules gather the facts themselves.
    def decided_tasks(self, run: Pathspec, states: list[str], *, step: str | None = None) -> DecidedTasks | None:
        """Tasks of a run in the given states (and `retried_ok`), every one of them within a bound."""
        return None

    def decided_summary(self, run: Pathspec) -> DecidedSummary | None:
        """The run with its state, per-step counts by state and timing."""
        return None

    def decided_stats(self, flows: list[str], query: RunQuery, last: int | None, per_step: bool) -> list[DecidedStats] | None:
        """Runs counted by state, success rates and durations per flow."""
        return None

    def decided_flows(self, query: RunQuery) -> list[DecidedFlow] | None:
        """Every flow with its latest run among those `query`'s tags select (state and finish set)."""
        return None

    def artifact_name_hits(self, flow: str, glob: str, *, include_private: bool, runs: int, query: RunQuery,
                           limit: int, cursor: str | None) -> NameHitPage | None:
        """Artifacts of the latest attempts whose names match `glob`, in the newest `runs` runs
        matching `query` (since/until/tags), `limit` per page in walk order; `cursor` is a previous
        page's `next_cursor`."""
        return None

    def capabilities(self) -> dict[str, object]:
        """Backend-specific facts for capabilities()."""
        return {}
