"""metaflow_agent: bounded, typed, cheap Metaflow queries for agents and scripts.

Every function takes pathspec strings and keyword-only options, returns a
pydantic model with a `cost`, bounds every list and says when it truncated.
Errors are `AgentError` subclasses with a `hint`.

Names load on first use (PEP 562), so importing the package, or one of its
low modules from the metadata provider, costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["artifact_preview", "artifact_values", "list_artifacts", "search_artifacts"], "._artifacts"),
    "capabilities": "._capabilities",
    "compare_runs": "._compare",
    "diagnose_run": "._diagnose",
    "list_flows": "._flows",
    "task_logs": "._logs",
    **dict.fromkeys(["list_runs", "run_stats", "run_summary"], "._runs"),
    **dict.fromkeys(["failed_tasks", "list_tasks"], "._tasks"),
    **dict.fromkeys(
        ["AgentError", "BackendError", "BadCursor", "BadInput", "BadLimit", "BadPathspec", "BadPattern", "BadTime",
         "Damaged", "DeadlineExceeded", "NotAllowed", "NotFound", "PathEscape", "ServiceProtocolError", "ServiceUnavailable", "TooLarge"],
        "._errors",
    ),
    **dict.fromkeys(
        ["ArtifactList", "ArtifactPreview", "ArtifactSearch", "ArtifactValues", "Capabilities", "Cost", "Diagnosis",
         "FailedTaskList", "FlowList", "RunComparison", "RunList", "RunStatsList", "RunSummary", "TaskList", "TaskLog"],
        "._models",
    ),
    **dict.fromkeys(["add_cost_hook", "metered", "remove_cost_hook"], "._cost"),
    "reset_backends": "._backend",
    **dict.fromkeys(["deadline", "deadline_seconds"], "._deadline"),
    **dict.fromkeys(["FunctionDoc", "function_doc"], "._docs"),
    "resume_cursor": "._public",
    "FUNCTIONS": "._public",
}

__all__ = [
    "FUNCTIONS",
    "AgentError",
    "ArtifactList",
    "ArtifactPreview",
    "ArtifactSearch",
    "ArtifactValues",
    "BackendError",
    "BadCursor",
    "BadInput",
    "BadLimit",
    "BadPathspec",
    "BadPattern",
    "BadTime",
    "Capabilities",
    "Cost",
    "Damaged",
    "DeadlineExceeded",
    "Diagnosis",
    "FailedTaskList",
    "FlowList",
    "FunctionDoc",
    "NotAllowed",
    "NotFound",
    "PathEscape",
    "RunComparison",
    "RunList",
    "RunStatsList",
    "RunSummary",
    "ServiceProtocolError",
    "ServiceUnavailable",
    "TaskList",
    "TaskLog",
    "TooLarge",
    "__version__",
    "add_cost_hook",
    "artifact_preview",
    "artifact_values",
    "capabilities",
    "compare_runs",
    "deadline",
    "deadline_seconds",
    "diagnose_run",
    "failed_tasks",
    "function_doc",
    "list_artifacts",
    "list_flows",
    "list_runs",
    "list_tasks",
    "metered",
    "remove_cost_hook",
    "reset_backends",
    "resume_cursor",
    "run_stats",
    "run_summary",
    "search_artifacts",
    "task_logs",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metaflow_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from ._artifacts import (
        artifact_preview,
        artifact_values,
        list_artifacts,
        search_artifacts,
    )
    from ._backend import reset_backends
    from ._capabilities import capabilities
    from ._compare import compare_runs
    from ._cost import add_cost_hook, metered, remove_cost_hook
    from ._deadline import deadline, deadline_seconds
    from ._diagnose import diagnose_run
    from ._docs import FunctionDoc, function_doc
    from ._errors import (
        AgentError,
        BackendError,
        BadCursor,
        BadInput,
        BadLimit,
        BadPathspec,
        BadPattern,
        BadTime,
        Damaged,
        DeadlineExceeded,
        NotAllowed,
        NotFound,
        PathEscape,
        ServiceProtocolError,
        ServiceUnavailable,
        TooLarge,
    )
    from ._flows import list_flows
    from ._logs import task_logs
    from ._models import (
        ArtifactList,
        ArtifactPreview,
        ArtifactSearch,
        ArtifactValues,
        Capabilities,
        Cost,
        Diagnosis,
        FailedTaskList,
        FlowList,
        RunComparison,
        RunList,
        RunStatsList,
        RunSummary,
        TaskList,
        TaskLog,
    )
    from ._public import FUNCTIONS, resume_cursor
    from ._runs import list_runs, run_stats, run_summary
    from ._tasks import failed_tasks, list_tasks
