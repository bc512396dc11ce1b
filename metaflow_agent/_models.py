"""Typed results. Every field describes itself: the descriptions become the
MCP output schemas, so they are written for an agent reading them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["completed", "failed", "running", "crashed", "pending"]
RunStatus = Literal["completed", "failed", "running"]
Stream = Literal["stdout", "stderr"]
Detail = Literal["brief", "full"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cost(_Model):
    """What answering cost."""

    metadata_requests: int = Field(description="HTTP requests sent to the metadata service (0 on local metadata).")
    metadata_bytes: int = Field(description="Response bytes received from the metadata service.")
    datastore_reads: int = Field(description="Datastore reads (local files opened or listed, S3 GETs).")
    datastore_bytes: int = Field(description="Bytes read from the datastore.")
    elapsed_ms: float = Field(description="Wall time of the query in milliseconds.")


class Page(_Model):
    """Common fields of every bounded list."""

    truncated: bool = Field(description="True when more items exist than were returned; pass next_cursor to continue.")
    next_cursor: str | None = Field(default=None, description="Opaque cursor for the next page, or null when this is the last page.")
    complete: bool = Field(default=True, description="False when the backend could not finish the scan within its budget; see `scanned`.")
    scanned: int | None = Field(default=None, description="How many candidates were examined (runs, tasks or artifacts).")
    notes: list[str] = Field(default_factory=list, description="How the answer was obtained and any caveats (plan, fallbacks, budget).")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")


# --- runs -------------------------------------------------------------------
class RunInfo(_Model):
    pathspec: str = Field(description="'Flow/RunId'.")
    run_id: str = Field(description="The run id.")
    status: RunStatus = Field(description="completed (end step succeeded), failed, or running.")
    created_at: str = Field(description="Run creation time, ISO-8601 UTC.")
    user: str | None = Field(default=None, description="User that started the run.")
    tags: list[str] = Field(default_factory=list, description="User tags of the run.")


class RunList(Page):
    flow: str = Field(description="The flow queried.")
    runs: list[RunInfo] = Field(description="Matching runs, newest first.")


class FailureBrief(_Model):
    pathspec: str = Field(description="Task pathspec 'Flow/Run/step/task'.")
    exception_type: str | None = Field(default=None, description="Exception class name, when recorded.")
    message: str | None = Field(default=None, description="First part of the exception message.")


class StepSummary(_Model):
    step: str = Field(description="Step name.")
    tasks: int = Field(description="Tasks seen in this step.")
    completed: int = Field(description="Tasks whose latest attempt succeeded (retried ones included).")
    failed: int = Field(description="Tasks whose latest attempt failed.")
    running: int = Field(description="Tasks still running.")
    retrying: int = Field(description="Tasks whose latest attempt failed and that will be retried.")
    crashed: int = Field(description="Tasks that died without recording an outcome.")
    retried_ok: int = Field(description="Tasks that failed an attempt and then succeeded on retry (counted in completed).")


class RunSummary(_Model):
    pathspec: str = Field(description="'Flow/RunId'.")
    status: RunStatus = Field(description="completed, failed or running.")
    created_at: str = Field(description="Run creation time, ISO-8601 UTC.")
    finished_at: str | None = Field(default=None, description="Time of the last recorded outcome, when the run is over.")
    duration_s: float | None = Field(default=None, description="finished_at - created_at in seconds, when over.")
    user: str | None = Field(default=None, description="User that started the run.")
    tags: list[str] = Field(default_factory=list, description="User tags.")
    steps: list[StepSummary] = Field(description="Per step task counts by outcome (the _parameters pseudo-step excluded).")
    first_failure: FailureBrief | None = Field(default=None, description="The earliest failed or crashed task, if any.")
    notes: list[str] = Field(default_factory=list, description="How the answer was obtained and any caveats.")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")


# --- tasks ------------------------------------------------------------------
class FailedTask(_Model):
    pathspec: str = Field(description="Task pathspec 'Flow/Run/step/task'.")
    step: str = Field(description="Step name.")
    task_id: str = Field(description="Task id.")
    status: Literal["failed", "crashed", "retrying", "retried_ok"] = Field(
        description="failed: the latest attempt raised and no retry is left; crashed: died without recording an outcome; "
        "retrying: an attempt failed and a retry is pending or running; "
        "retried_ok: an attempt failed but a retry succeeded (not a failure)."
    )
    attempts: int = Field(description="Number of attempts made.")
    failed_attempts: list[int] = Field(description="Attempt numbers that failed or crashed.")
    exception_type: str | None = Field(default=None, description="Exception class of the latest failed attempt.")
    message: str | None = Field(default=None, description="Exception message, bounded.")
    traceback: str | None = Field(default=None, description="Last lines of the traceback, bounded; omitted when detail='brief'.")
    return_code: int | None = Field(default=None, description="Process return code when the runtime recorded one (e.g. -9 for SIGKILL).")
    foreach_index: str | None = Field(default=None, description="Foreach position, e.g. 'items=3', when the task is in a foreach.")


class FailedTaskList(Page):
    run: str = Field(description="'Flow/RunId'.")
    failed: list[FailedTask] = Field(description="Failed and crashed tasks (and retried_ok ones, which are not failures), in task order.")
    total_failed: int = Field(description="Tasks whose final outcome is failed.")
    total_crashed: int = Field(description="Tasks that crashed.")
    total_retrying: int = Field(default=0, description="Tasks that failed an attempt and are being retried.")
    total_retried_ok: int = Field(description="Tasks that failed an attempt and then succeeded.")


# --- logs -------------------------------------------------------------------
class LogLine(_Model):
    n: int | None = Field(default=None, description="1-based line number when known (head, grep); null for tail.")
    text: str = Field(description="The line, without the mflog prefix, bounded in length.")
    match: bool = Field(default=False, description="True for a grep match, False for context lines.")


class TaskLog(_Model):
    pathspec: str = Field(description="Task pathspec.")
    stream: Stream = Field(description="Which stream.")
    attempt: int = Field(description="Attempt whose log was read.")
    mode: Literal["tail", "head", "grep"] = Field(description="How the log was read.")
    log_size: int = Field(description="Total size of the log file(s) in bytes.")
    bytes_read: int = Field(description="Bytes actually read to answer.")
    lines: list[LogLine] = Field(description="The lines returned.")
    truncated: bool = Field(description="True when the answer omits matching or requested lines (byte cap, max_matches, or lines cut).")
    notes: list[str] = Field(default_factory=list, description="Caveats.")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")


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


class ArtifactPreview(_Model):
    task: str = Field(description="Task pathspec.")
    name: str = Field(description="Artifact name.")
    type: str | None = Field(default=None, description="Python type.")
    size: int | None = Field(default=None, description="Serialized size in bytes.")
    summary: dict[str, Any] = Field(description="Type-aware summary: shape/dtype for arrays and frames, keys for dicts, length for sequences.")
    repr: str = Field(description="Truncated repr of the value.")
    truncated: bool = Field(description="True when repr was cut.")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")


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
    value_a: str | None = Field(default=None, description="Short repr in run A (parameters and small values only).")
    value_b: str | None = Field(default=None, description="Short repr in run B.")


class RunComparison(_Model):
    run_a: str = Field(description="First run pathspec.")
    run_b: str = Field(description="Second run pathspec.")
    status_a: RunStatus = Field(description="Status of run A.")
    status_b: RunStatus = Field(description="Status of run B.")
    parameters: list[ArtifactDiff] = Field(description="Parameters that differ.")
    artifacts: list[ArtifactDiff] = Field(description="Artifacts of the end (or last) step that differ, by sha.")
    equal: int = Field(description="Artifacts equal by sha (not loaded).")
    truncated: bool = Field(description="True when the diff list was cut.")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")


# --- capabilities -----------------------------------------------------------
class Capabilities(_Model):
    backend: Literal["local", "service"] = Field(description="Where metadata comes from.")
    metadata_url: str | None = Field(default=None, description="Service URL when backend=service.")
    datastore: str = Field(description="Datastore type: local or s3.")
    datastore_root: str | None = Field(default=None, description="Datastore root.")
    service_version: str | None = Field(default=None, description="Version the service reports (master also says 2.5.1).")
    server_filters: bool = Field(description="True when the service applies run filters itself (detected, not assumed).")
    server_cursors: bool = Field(description="True when the service paginates (X-Limit/X-Next-Cursor seen).")
    filtered_tasks: bool = Field(description="True when the filtered_tasks route answers.")
    run_metadata_route: bool = Field(description="True when GET .../runs/{r}/metadata answers.")
    limits: dict[str, int] = Field(description="Default and hard-cap limits in force.")
    cost: Cost = Field(description="Requests, reads and bytes this answer cost.")
