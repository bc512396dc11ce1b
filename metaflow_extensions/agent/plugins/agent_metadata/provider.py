"""The extended metadata provider (TYPE "agent"): Metaflow's service provider plus a query engine.

Every write is the stock `ServiceMetadataProvider`'s, so `METAFLOW_DEFAULT_METADATA=agent`
runs flows and serves the Client API exactly like `service`. On top, bounded, GET-only read
queries with typed results. `queries(url)` is the engine (`queries.ServiceQueries`, one per
service URL, cached): the metadata backend `metaflow_agent` uses on a service deployment.
The classmethods below are the same queries on the configured service, for scripts:

    from metaflow_extensions.agent.plugins.agent_metadata.provider import AgentMetadataProvider as P
    P.task_outcomes("TrainFlow/12")        # per step: tasks ok / failed / started, flat in tasks
    P.task_attempts("TrainFlow/12/train/3")
    P.query_runs("TrainFlow", RunQuery(status="failed"), limit=10)

Imported by every `import metaflow` (remote tasks too): this module imports nothing beyond
the stock provider at import time; the engine loads on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

if TYPE_CHECKING:
    from metaflow_agent._pathspec import Pathspec
    from metaflow_agent._records import RunQuery, RunScan, StepOutcomes, TaskDetail

    from .queries import ServiceQueries

_engines: dict[str, ServiceQueries] = {}
_lock = threading.Lock()


def _ps(value: str | Pathspec, kind: str) -> Pathspec:
    from metaflow_agent._pathspec import Pathspec

    return value if isinstance(value, Pathspec) else Pathspec.parse(value, kind)  # type: ignore[arg-type]  # kind is a Kind


class AgentMetadataProvider(ServiceMetadataProvider):
    """ServiceMetadataProvider plus bounded, filtered, counted read queries."""

    TYPE = "agent"

    @classmethod
    def queries(cls, url: str | None = None) -> ServiceQueries:
        """The query engine for a service URL (default: the configured one), one per URL."""
        from metaflow_agent import _config

        from .queries import ServiceQueries
        from .transport import ServiceTransport

        url = (url or _config.service_url()).rstrip("/")
        with _lock:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = ServiceQueries(ServiceTransport(url, headers=_config.service_headers()))
            return engine

    @classmethod
    def forget(cls) -> None:
        """Drop every cached engine and probed capability (configuration changed)."""
        from .capabilities import forget

        with _lock:
            _engines.clear()
        forget()

    @classmethod
    def query_runs(cls, flow: str, query: RunQuery, limit: int = 20, after: tuple[int, str] | None = None, budget: int = 300) -> RunScan:
        """Runs by time range / user / tags, newest first, bounded, with the service's own
        derived status (`service_status`); run states by our rule come from `metaflow_agent.list_runs`."""
        return cls.queries().scan_runs(flow, query, limit=limit, after=after, budget=budget)

    @classmethod
    def task_outcomes(cls, run: str | Pathspec) -> list[StepOutcomes]:
        """Per step: tasks that succeeded, failed, started (flat in the number of tasks)."""
        engine, ps = cls.queries(), _ps(run, "run")
        return engine.step_outcomes(ps, engine.list_steps(ps))

    @classmethod
    def task_attempts(cls, task: str | Pathspec) -> TaskDetail:
        """Attempts of one task with their outcomes."""
        return cls.queries().task_detail(_ps(task, "task"))

    @classmethod
    def artifact_records(cls, pathspec: str | Pathspec, limit: int = 5000) -> tuple[list[dict[str, Any]], bool]:
        """Artifact records of a run, a step or a task: (at most `limit` rows, complete)."""
        if not isinstance(pathspec, str):
            return cls.queries().artifacts(pathspec, limit=limit)
        depth = pathspec.strip("/").count("/")
        return cls.queries().artifacts(_ps(pathspec, ("run", "step", "task")[min(max(depth - 1, 0), 2)]), limit=limit)

    @classmethod
    def run_task_metadata(cls, run: str | Pathspec, limit: int = 20000) -> tuple[list[dict[str, Any]], bool]:
        """Metadata rows of all tasks of a run, from the run-level route: (rows, complete)."""
        return cls.queries().run_metadata(_ps(run, "run"), limit=limit)
