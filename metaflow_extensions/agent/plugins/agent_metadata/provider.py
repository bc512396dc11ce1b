"""The extended metadata provider (TYPE "agent").

Imported by every `import metaflow` (also inside remote tasks), so this
module imports nothing beyond the stock service provider: the query code is
loaded on first use. All writes are the stock ServiceMetadataProvider's.
"""

from __future__ import annotations

import threading
from typing import Any

from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

_queries: dict[str, Any] = {}
_lock = threading.Lock()


class AgentMetadataProvider(ServiceMetadataProvider):
    """ServiceMetadataProvider plus bounded, filtered, counted read queries."""

    TYPE = "agent"

    @classmethod
    def agent_queries(cls, url: str | None = None) -> Any:
        """The query object for a service URL (default: the configured one), cached."""
        from metaflow.metaflow_config import SERVICE_HEADERS, SERVICE_URL

        from metaflow_agent.service.queries import ServiceQueries
        from metaflow_agent.service.transport import ServiceTransport

        url = (url or SERVICE_URL or "").rstrip("/")
        with _lock:
            if url not in _queries:
                _queries[url] = ServiceQueries(ServiceTransport(url, headers=dict(SERVICE_HEADERS or {})))
            return _queries[url]

    # Convenience entry points mirroring the query plans (all GET-only).
    @classmethod
    def query_runs(cls, flow: str, query: Any, limit: int = 20, after: Any = None, budget: int = 300) -> Any:
        """Runs by status / time range / user / tags, newest first, bounded."""
        return cls.agent_queries().scan_runs(flow, query, limit, after, budget)

    @classmethod
    def task_outcomes(cls, flow: str, run_id: str) -> Any:
        """Per step: tasks that succeeded, failed, started (flat in the number of tasks)."""
        q = cls.agent_queries()
        return q.step_outcomes(flow, run_id, q.list_steps(flow, run_id))

    @classmethod
    def task_attempts(cls, flow: str, run_id: str, step: str, task: str) -> Any:
        """Attempts of one task with their outcomes."""
        return cls.agent_queries().task_detail(flow, run_id, step, task)

    @classmethod
    def artifact_records(cls, flow: str, run_id: str, step: str | None = None, task: str | None = None, limit: int = 5000) -> Any:
        """Artifact records of a task, a step or a run: (at most `limit` rows, complete)."""
        return cls.agent_queries().artifacts(flow, run_id, step, task, limit=limit)

    @classmethod
    def run_task_metadata(cls, flow: str, run_id: str, limit: int = 20000) -> Any:
        """Metadata rows of all tasks of a run, from the run-level route: (rows, complete)."""
        return cls.agent_queries().run_metadata(flow, run_id, limit=limit)
