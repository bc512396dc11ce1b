"""Typed results. Every field describes itself: the descriptions become the
MCP output schemas, so they are written for an agent reading them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr

if TYPE_CHECKING:
    from ._cost import CostMeter

from ._states import RunState, TaskState

ProblemKind = Literal["failed", "crashed", "retrying", "retried_ok", "unknown"]
Stream = Literal["stdout", "stderr", "both"]
Detail = Literal["brief", "full"]
_STATE_HELP = "running, completed, failed (a task failed for good), crashed (died without a failure: killed, lost), or unknown (no proof either way)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cost(_Model):
    """What answering cost."""

    metadata_requests: int = Field(description="HTTP requests sent to the metadata service (0 on local metadata).")
    metadata_bytes: int = Field(description="Response bytes received from the metadata service.")
    datastore_reads: int = Field(description="Datastore reads (local files opened or listed, S3 GETs).")
    datastore_bytes: int = Field(description="Bytes read from the datastore.")
    elapsed_ms: float = Field(description="Wall time of the query in milliseconds.")

    @classmethod
    def of(cls, meter: CostMeter) -> Cost:
        """Freeze a meter into an answer's cost."""
        return cls(
            metadata_requests=meter.metadata_requests,
            metadata_bytes=meter.metadata_bytes,
            datastore_reads=meter.datastore_reads,
            datastore_bytes=meter.datastore_bytes,
            elapsed_ms=meter.elapsed_ms,
        )


def list_field(model: type[BaseModel]) -> str:
    """The name of a page model's main list (its one list-of-models field)."""
    names = []
    for name, info in model.model_fields.items():
        args = getattr(info.annotation, "__args__", ())
        if getattr(info.annotation, "__origin__", None) is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            names.append(name)
    if len(names) != 1:
        raise TypeError(f"{model.__name__} has {len(names)} lists of models, not one")
    return names[0]


class Answer(_Model):
    """Common fields of every answer."""

    notes: list[str] = Field(default_factory=list, description="How the answer was obtained and any caveats (plan, fallbacks, budget).")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")


_P = TypeVar("_P", bound="Page")


class Page(Answer):
    """Common fields of every bounded list."""

    truncated: bool = Field(description="True when more items exist than were returned; pass next_cursor to continue.")
    next_cursor: str | None = Field(default=None, description="Opaque cursor for the next page, or null when this is the last page.")
    complete: bool = Field(default=True, description="False when the backend could not finish the scan within its budget; see `scanned`.")
    scanned: int | None = Field(default=None, description="How many candidates were examined (runs, tasks or artifacts).")
    # cursor_after(kept): a cursor resuming right after the first `kept` items of the main list.
    _cursor_after: Callable[[int], str | None] | None = PrivateAttr(default=None)

    def resumable(self: _P, cursor_after: Callable[[int], str | None]) -> _P:
        """Attach how to resume after any prefix of this page (see `metaflow_agent.resume_cursor`)."""
        self._cursor_after = cursor_after
        return self


# --- runs -------------------------------------------------------------------
class RunInfo(_Model):
    pathspec: str = Field(description="'Flow/RunId'.")
    run_id: str = Field(description="The run id.")
    status: RunState = Field(description=f"The run's state: {_STATE_HELP}.")
    created_at: str = Field(description="Run creation time, ISO-8601 UTC.")
    finished_at: str | None = Field(default=None, description="When the run last recorded anything, once it is over.")
    duration_s: float | None = Field(default=None, description="finished_at - created_at in seconds, once over.")
    user: str | None = Field(default=None, description="User that started the run.")
    tags: list[str] = Field(default_factory=list, description="User tags of the run.")


class RunList(Page):
    flow: str = Field(description="The flow queried.")
    runs: list[RunInfo] = Field(description="Matching runs, newest first.")


class FailureBrief(_Model):
    pathspec: str = Field(description="Task pathspec 'Flow/Run/step/task'.")
    exception_type: str | None = Field(default=None, description="Exception class name, when recorded.")
    message: str | None = Field(default=None, description="First part of the exception message.")


class TaskTime(_Model):
    task_id: str = Field(description="Task id.")
    duration_s: float | None = Field(default=None, description="Seconds from its first attempt's start to its last outcome.")


class Counts(_Model):
    tasks: int = Field(description="Tasks seen.")
    completed: int = Field(description="Latest attempt succeeded (retried ones included).")
    failed: int = Field(description="Latest attempt raised, no retry left.")
    crashed: int = Field(description="Died without recording an outcome.")
    running: int = Field(description="Still running (retrying ones included).")
    unknown: int = Field(default=0, description="No outcome and no proof of life or death.")
    retried_ok: int = Field(description="Failed an attempt, then succeeded (within completed).")
    retrying: int = Field(description="Failed an attempt, retry pending or running (within running).")


class StepSummary(Counts):
    step: str = Field(description="Step name.")
    started_at: str | None = Field(default=None, description="First task start, ISO-8601 UTC.")
    finished_at: str | None = Field(default=None, description="Last task outcome, once every task has one.")
    duration_s: float | None = Field(default=None, description="finished_at - started_at in seconds.")
    slowest: list[TaskTime] = Field(default_factory=list, description="Up to 3 slowest finished tasks.")


class RunSummary(Answer):
    pathspec: str = Field(description="'Flow/RunId'.")
    status: RunState = Field(description=f"The run's state: {_STATE_HELP}.")
    created_at: str = Field(description="Run creation time, ISO-8601 UTC.")
    finished_at: str | None = Field(default=None, description="Time of the last recorded outcome, when the run is over.")
    duration_s: float | None = Field(default=None, description="finished_at - created_at in seconds, when over.")
    user: str | None = Field(default=None, description="User that started the run.")
    tags: list[str] = Field(default_factory=list, description="User tags.")
    totals: Counts = Field(description="Task counts of the whole run.")
    steps: list[StepSummary] = Field(description="Per step: counts by state and timing (the _parameters pseudo-step excluded).")
    first_failure: FailureBrief | None = Field(default=None, description="The earliest failed or crashed task, if any.")


class RunStats(_Model):
    flow: str = Field(description="The flow.")
    examined: int = Field(description="Runs whose state was decided.")
    complete: bool = Field(description="False when a budget stopped the count before every run in range.")
    counts: dict[RunState, int] = Field(description="Runs by state.")
    success_rate: float | None = Field(default=None, description="completed / examined.")
    finished_success_rate: float | None = Field(default=None, description="completed / (completed + failed + crashed): runs that are over.")
    duration_s: dict[str, float] = Field(default_factory=dict, description="Successful runs' durations: n, min, median, p90, max.")
    steps: dict[str, dict[str, float]] = Field(default_factory=dict, description="Per step, when asked: runs, failed, and duration median/max (s) over the examined runs.")
    notes: list[str] = Field(default_factory=list, description="How the runs were counted; caveats.")


class RunStatsList(Answer):
    flows: list[RunStats] = Field(description="One entry per flow asked for.")
    window: str = Field(description="Which runs were counted (time window or last N).")


class FlowInfo(_Model):
    flow: str = Field(description="Flow name.")
    latest_run: str | None = Field(default=None, description="Pathspec of its newest run.")
    status: RunState | None = Field(default=None, description="State of that run.")
    created_at: str | None = Field(default=None, description="When that run started, ISO-8601 UTC.")
    steps: int | None = Field(default=None, description="Steps in that run (_parameters excluded).")


class FlowList(Page):
    flows: list[FlowInfo] = Field(description="Flows, most recently run first.")


# --- tasks ------------------------------------------------------------------
class AttemptTime(_Model):
    attempt: int = Field(description="Attempt number (0 first).")
    ok: bool | None = Field(default=None, description="Outcome: true, false (raised), null (none recorded).")
    started_at: str | None = Field(default=None, description="Start, ISO-8601 UTC.")
    duration_s: float | None = Field(default=None, description="Seconds to its outcome.")


class FailedTask(_Model):
    pathspec: str = Field(description="Task pathspec 'Flow/Run/step/task'.")
    step: str = Field(description="Step name.")
    task_id: str = Field(description="Task id.")
    status: ProblemKind = Field(
        description="failed: the latest attempt raised, no retry follows; crashed: died without recording an outcome; "
        "retrying: an attempt failed, a retry is pending or running; retried_ok: an attempt failed, a retry succeeded "
        "(not a failure); unknown: no outcome and no proof of life or death."
    )
    attempts: int = Field(description="Number of attempts made.")
    failed_attempts: list[int] = Field(description="Attempt numbers that failed or crashed.")
    timing: list[AttemptTime] = Field(default_factory=list, description="Each attempt's outcome and timing.")
    exception_type: str | None = Field(default=None, description="Exception class of the latest failed attempt.")
    message: str | None = Field(default=None, description="Exception message, bounded.")
    traceback: str | None = Field(default=None, description="Last lines of the traceback, bounded; omitted when detail='brief'.")
    return_code: int | None = Field(default=None, description="Process return code when the runtime recorded one (e.g. -9 for SIGKILL).")
    foreach_index: str | None = Field(default=None, description="Foreach position, e.g. 'items=3', when the task is in a foreach.")


class FailedTaskList(Page):
    run: str = Field(description="'Flow/RunId'.")
    failed: list[FailedTask] = Field(description="Failed, crashed, unknown, retrying, then retried_ok tasks; task-id order within each.")
    total_failed: int = Field(description="Tasks whose final outcome is failed.")
    total_crashed: int = Field(description="Tasks that crashed.")
    total_unknown: int = Field(default=0, description="Tasks with no outcome and no proof of life or death.")
    total_retrying: int = Field(default=0, description="Tasks that failed an attempt and are being retried.")
    total_retried_ok: int = Field(description="Tasks that failed an attempt and then succeeded.")


class TaskInfo(_Model):
    pathspec: str = Field(description="Task pathspec.")
    step: str = Field(description="Step name.")
    task_id: str = Field(description="Task id.")
    state: TaskState = Field(description="running, completed, failed, crashed or unknown.")
    retried: bool = Field(default=False, description="An attempt failed before the latest one.")
    started_at: str | None = Field(default=None, description="First attempt start, ISO-8601 UTC.")
    duration_s: float | None = Field(default=None, description="Seconds from start to last outcome.")


class TaskList(Page):
    run: str = Field(description="'Flow/RunId'.")
    tasks: list[TaskInfo] = Field(description="Tasks in task-id order (the order they were created).")
    counts: dict[TaskState, int] = Field(description="Tasks of the run (or step) by state, all of them, not just this page.")


# --- logs -------------------------------------------------------------------
class LogLine(_Model):
    n: int | None = Field(default=None, description="1-based line number when known (head, grep); null for tail.")
    text: str = Field(description="The line, without the mflog prefix, bounded in length.")
    match: bool = Field(default=False, description="True for a grep match, False for context lines.")
    stream: Literal["stdout", "stderr"] | None = Field(default=None, description="Its stream, when both were read.")


class TaskLog(Answer):
    pathspec: str = Field(description="Task pathspec.")
    stream: Stream = Field(description="Which stream (both: merged in time order, each line labelled).")
    attempt: int = Field(description="Attempt whose log was read.")
    mode: Literal["tail", "head", "grep"] = Field(description="How the log was read.")
    log_size: int = Field(description="Total size of the log file(s) in bytes.")
    bytes_read: int = Field(description="Bytes actually read to answer.")
    line_count: int | None = Field(default=None, description="Lines in the log, when it was read whole (small logs).")
    lines: list[LogLine] = Field(description="The lines returned.")
    truncated: bool = Field(description="True when the answer omits matching or requested lines (byte cap, max_matches, or lines cut).")


# --- artifacts ----------------------------------------------------------------
class ArtifactInfo(_Model):
    name: str = Field(description="Artifact name.")
    size: int | None = Field(default=None, description="Serialized size in bytes (from data.json).")
    type: str | None = Field(default=None, description="Python type, e.g. 'numpy.ndarray'.")
    encoding: str | None = Field(default=None, description="Serialization, e.g. 'pickle-v4'.")
    sha: str | None = Field(default=None, description="Content hash; equal sha means equal value.")


class ArtifactList(Page):
    task: str = Field(description="Task pathspec.")
    attempt: int = Field(description="Attempt whose artifacts are listed.")
    artifacts: list[ArtifactInfo] = Field(description="Artifacts sorted by name; private (_) ones included only when asked.")


class ArtifactPreview(Answer):
    task: str = Field(description="Task pathspec.")
    name: str = Field(description="Artifact name.")
    type: str | None = Field(default=None, description="Python type.")
    size: int | None = Field(default=None, description="Serialized size in bytes.")
    summary: dict[str, Any] = Field(description="Type-aware summary: shape/dtype for arrays and frames, keys for dicts, length for sequences.")
    repr: str = Field(description="Truncated repr of the value.")
    truncated: bool = Field(description="True when repr was cut.")


class ArtifactHit(_Model):
    task: str = Field(description="Task pathspec holding the artifact.")
    name: str = Field(description="Artifact name.")
    size: int | None = Field(default=None, description="Serialized size in bytes.")
    type: str | None = Field(default=None, description="Python type.")
    sha: str | None = Field(default=None, description="Content hash.")


class ArtifactSearch(Page):
    flow: str = Field(description="Flow searched.")
    hits: list[ArtifactHit] = Field(description="Matching artifacts, newest run first.")
    runs_searched: list[str] = Field(description="Run ids covered by this page.")


class ArtifactDiff(_Model):
    name: str = Field(description="Artifact or parameter name.")
    step: str | None = Field(default=None, description="Step whose (latest) task holds it.")
    change: Literal["changed", "only_in_a", "only_in_b"] = Field(description="How it differs.")
    sha_a: str | None = Field(default=None, description="sha in run A.")
    sha_b: str | None = Field(default=None, description="sha in run B.")
    size_a: int | None = Field(default=None, description="Size in run A.")
    size_b: int | None = Field(default=None, description="Size in run B.")
    value_a: JsonValue = Field(default=None, description="Value in run A, when small and of a plain type (numbers, strings, short lists and dicts).")
    value_b: JsonValue = Field(default=None, description="Value in run B, likewise.")


class RunComparison(Answer):
    run_a: str = Field(description="First run pathspec.")
    run_b: str = Field(description="Second run pathspec.")
    status_a: RunState = Field(description="State of run A.")
    status_b: RunState = Field(description="State of run B.")
    parameters: list[ArtifactDiff] = Field(description="Parameters that differ.")
    artifacts: list[ArtifactDiff] = Field(description="Artifacts of the end (or last) step that differ, by sha.")
    equal: int = Field(description="Artifacts equal by sha (not loaded).")
    truncated: bool = Field(description="True when the diff list was cut.")


class ArtifactValue(_Model):
    run: str = Field(description="Run pathspec.")
    created_at: str = Field(description="Run creation time, ISO-8601 UTC.")
    status: RunState | None = Field(default=None, description="The run's state.")
    task: str | None = Field(default=None, description="Task holding the artifact; null when the run has none.")
    value: JsonValue = Field(default=None, description="The value, when small and of a plain type; else null (see type, size).")
    type: str | None = Field(default=None, description="Python type.")
    size: int | None = Field(default=None, description="Serialized size in bytes.")
    note: str | None = Field(default=None, description="Why the value is not shown, when it is not.")


class ArtifactValues(Answer):
    flow: str = Field(description="The flow.")
    name: str = Field(description="The artifact.")
    values: list[ArtifactValue] = Field(description="One row per run, in the order asked.")
    complete: bool = Field(default=True, description="False when a budget stopped the run scan early.")


class DiagnosedTask(_Model):
    pathspec: str = Field(description="Task pathspec.")
    status: ProblemKind = Field(description="failed, crashed, retrying or unknown.")
    exception: str | None = Field(default=None, description="Exception type and message, bounded.")
    return_code: int | None = Field(default=None, description="Process return code, when recorded.")
    log: list[str] = Field(default_factory=list, description="Log lines around the error (stderr and stdout, labelled, time order).")


class Diagnosis(Answer):
    run: str = Field(description="'Flow/RunId'.")
    status: RunState = Field(description=f"The run's state: {_STATE_HELP}.")
    created_at: str = Field(description="Run creation time, ISO-8601 UTC.")
    duration_s: float | None = Field(default=None, description="Seconds, once over.")
    parameters: dict[str, JsonValue] = Field(default_factory=dict, description="Run parameters (small plain values; type otherwise).")
    failures: list[DiagnosedTask] = Field(description="Failed, crashed and unknown tasks, first in step order, with their logs.")
    total_failures: int = Field(description="How many such tasks the run has.")
    truncated: bool = Field(default=False, description="True when tasks or lines were left out to stay within max_bytes.")


# --- capabilities -----------------------------------------------------------
class Capabilities(Answer):
    backend: Literal["local", "service"] = Field(description="Where metadata comes from.")
    metadata_url: str | None = Field(default=None, description="Service URL when backend=service.")
    datastore: str = Field(description="Datastore type: local or s3.")
    datastore_root: str | None = Field(default=None, description="Datastore root.")
    service_version: str | None = Field(default=None, description="Version the service reports (master also says 2.5.1).")
    server_filters: bool | None = Field(default=None, description="True when the service applies run filters itself (detected, not assumed); null on local (no server).")
    server_cursors: bool | None = Field(default=None, description="True when the service paginates (X-Limit/X-Next-Cursor seen); null on local.")
    filtered_tasks: bool | None = Field(default=None, description="True when the filtered_tasks route answers; null until first used.")
    run_metadata_route: bool | None = Field(default=None, description="True when GET .../runs/{r}/metadata answers; null until first used.")
    query_service: str | None = Field(default=None, description="URL of the query service answering beside the metadata service, if one was found.")
    limits: dict[str, int] = Field(description="Default and hard-cap limits in force.")
