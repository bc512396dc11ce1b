"""The seams leaves build on: the function list and cursor re-paging."""

from __future__ import annotations

from typing import Any, Callable

from ._artifacts import artifact_preview, artifact_values, list_artifacts, search_artifacts
from ._capabilities import capabilities
from ._compare import compare_runs
from ._diagnose import diagnose_run
from ._flows import list_flows
from ._logs import task_logs
from ._models import Page, list_field
from ._runs import list_runs, run_stats, run_summary
from ._tasks import failed_tasks, list_tasks

# The query functions, in the order tools and CLI subcommands present them.
FUNCTIONS: tuple[Callable[..., Any], ...] = (
    list_flows,
    list_runs,
    run_summary,
    run_stats,
    diagnose_run,
    failed_tasks,
    list_tasks,
    task_logs,
    list_artifacts,
    artifact_preview,
    artifact_values,
    search_artifacts,
    compare_runs,
    capabilities,
)


def resume_cursor(result: Page, kept: int) -> str | None:
    """A cursor that resumes right after the first `kept` items of a page's main list.

    For callers that show only part of a page (an output budget): the next call
    with this cursor returns the items they did not show. `kept` equal to the
    page's length gives the page's own `next_cursor`.
    """
    items = getattr(result, list_field(type(result)))
    if not 0 < kept <= len(items):
        raise ValueError(f"kept={kept} must be between 1 and the page's {len(items)} items")
    if kept == len(items):
        return result.next_cursor
    cursor_after = result._cursor_after
    return cursor_after(kept) if cursor_after is not None else None
