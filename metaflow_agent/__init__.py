"""metaflow_agent: bounded, typed, cheap Metaflow queries for agents and scripts.

Every function takes pathspec strings and keyword-only options, returns a
pydantic model with a `cost`, bounds every list and says when it truncated.
Errors are `AgentError` subclasses with a `hint`.
"""

from __future__ import annotations

from ._artifacts import artifact_preview, list_artifacts, search_artifacts
from ._capabilities import capabilities
from ._compare import compare_runs
from ._errors import (
    AgentError,
    BackendError,
    BadCursor,
    BadInput,
    BadLimit,
    BadPathspec,
    BadPattern,
    BadTime,
    DeadlineExceeded,
    NotAllowed,
    NotFound,
    PathEscape,
    ServiceProtocolError,
    ServiceUnavailable,
    TooLarge,
)
from ._logs import task_logs
from ._models import (
    ArtifactList,
    ArtifactPreview,
    ArtifactSearch,
    Capabilities,
    Cost,
    FailedTaskList,
    RunComparison,
    RunList,
    RunSummary,
    TaskLog,
)
from ._runs import list_runs, run_summary
from ._tasks import failed_tasks

__version__ = "0.1.0"

# The query functions, in the order tools and CLI subcommands present them.
FUNCTIONS = (
    list_runs,
    run_summary,
    failed_tasks,
    task_logs,
    list_artifacts,
    artifact_preview,
    search_artifacts,
    compare_runs,
    capabilities,
)

__all__ = [
    "FUNCTIONS",
    "AgentError",
    "ArtifactList",
    "ArtifactPreview",
    "ArtifactSearch",
    "BackendError",
    "BadCursor",
    "BadInput",
    "BadLimit",
    "BadPathspec",
    "BadPattern",
    "BadTime",
    "Capabilities",
    "Cost",
    "DeadlineExceeded",
    "FailedTaskList",
    "NotAllowed",
    "NotFound",
    "PathEscape",
    "RunComparison",
    "RunList",
    "RunSummary",
    "ServiceProtocolError",
    "ServiceUnavailable",
    "TaskLog",
    "TooLarge",
    "__version__",
    "artifact_preview",
    "capabilities",
    "compare_runs",
    "failed_tasks",
    "list_artifacts",
    "list_runs",
    "run_summary",
    "search_artifacts",
    "task_logs",
]
