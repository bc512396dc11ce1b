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
    **dict.fromkeys(["artifact_preview", "list_artifacts", "search_artifacts"], "._artifacts"),
    "capabilities": "._capabilities",
    "compare_runs": "._compare",
    "task_logs": "._logs",
    **dict.fromkeys(["list_runs", "run_summary"], "._runs"),
    "failed_tasks": "._tasks",
    **dict.fromkeys(
        ["AgentError", "BackendError", "BadCursor", "BadInput", "BadLimit", "BadPathspec", "BadPattern", "BadTime",
         "NotFound", "PathEscape", "ServiceProtocolError", "ServiceUnavailable", "TooLarge"],
        "._errors",
    ),
    **dict.fromkeys(
        ["ArtifactList", "ArtifactPreview", "ArtifactSearch", "Capabilities", "Cost", "FailedTaskList", "RunComparison",
         "RunList", "RunSummary", "TaskLog"],
        "._models",
    ),
    **dict.fromkeys(["add_cost_hook", "metered", "remove_cost_hook"], "._cost"),
    "reset_backends": "._backend",
    "resume_cursor": "._public",
    "FUNCTIONS": "._public",
}

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
    "FailedTaskList",
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
    "add_cost_hook",
    "artifact_preview",
    "capabilities",
    "compare_runs",
    "failed_tasks",
    "list_artifacts",
    "list_runs",
    "metered",
    "remove_cost_hook",
    "reset_backends",
    "resume_cursor",
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
    from ._artifacts import artifact_preview, list_artifacts, search_artifacts
    from ._backend import reset_backends
    from ._capabilities import capabilities
    from ._compare import compare_runs
    from ._cost import add_cost_hook, metered, remove_cost_hook
    from ._errors import (
        AgentError,
        BackendError,
        BadCursor,
        BadInput,
        BadLimit,
        BadPathspec,
        BadPattern,
        BadTime,
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
    from ._public import FUNCTIONS, resume_cursor
    from ._runs import list_runs, run_summary
    from ._tasks import failed_tasks
