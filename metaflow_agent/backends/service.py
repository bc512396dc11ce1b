"""Metadata service + datastore (local or S3), through the extended provider."""

from __future__ import annotations

import os

from .._datastore import Datastore, LocalDatastore, S3Datastore
from .._errors import BackendError
from ..service.queries import ServiceQueries
from .base import Backend, RunQuery, RunRecord, RunScan, StepOutcomes, TaskDetail


def make_datastore(kind: str) -> Datastore:
    """The datastore Metaflow is configured with (read at call time)."""
    from metaflow import metaflow_config

    if kind == "s3":
        root = os.environ.get("METAFLOW_DATASTORE_SYSROOT_S3") or metaflow_config.DATASTORE_SYSROOT_S3
        if not root:
            raise BackendError("the S3 datastore has no root", hint="set METAFLOW_DATASTORE_SYSROOT_S3")
        return S3Datastore(root)
    from .local import local_root

    root = local_root()
    if root is None:
        raise BackendError(
            "no local datastore (.metaflow) found for this service deployment",
            hint="set METAFLOW_DATASTORE_SYSROOT_LOCAL or run from the flow's folder",
        )
    return LocalDatastore(root)


class ServiceBackend(Backend):
    kind = "service"

    def __init__(self, url: str, datastore: str = "local") -> None:
        from metaflow_extensions.agent.plugins.agent_metadata.provider import (
            AgentMetadataProvider,
        )

        self.q: ServiceQueries = AgentMetadataProvider.agent_queries(url)
        self.url = self.q.t.url
        self._datastore_kind = datastore
        self._store: Datastore | None = None

    @property
    def store(self) -> Datastore:  # type: ignore[override]
        """The datastore, resolved on first use (metadata-only queries never need it)."""
        if self._store is None:
            self._store = make_datastore(self._datastore_kind)
        return self._store

    def check_flow(self, flow: str) -> None:
        self.q.check_flow(flow)

    def scan_runs(self, flow: str, query: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, with_status: bool = True) -> RunScan:
        status_fn = self.run_status if with_status else lambda run: (run.status or "running", None)
        return self.q.scan_runs(flow, query, limit, after, budget, server_cursor, status_fn)

    def get_run(self, flow: str, run_id: str) -> RunRecord:
        return self.q.get_run(flow, run_id)

    def quick_status(self, run: RunRecord) -> tuple[str, int | None] | None:
        return self.q.quick_status(run)

    def run_live(self, run: RunRecord, outcomes: list[StepOutcomes]) -> bool:
        return self.q._fresh(run.last_heartbeat_s)

    def task_fresh(self, flow: str, run_id: str, step: str, task: str) -> bool:
        return self.q._fresh(self.q.task_heartbeat(flow, run_id, step, task))

    def finished_ms(self, run: RunRecord, outcomes: list[StepOutcomes]) -> int | None:
        return int(run.last_heartbeat_s * 1000) if run.last_heartbeat_s else None

    def list_steps(self, flow: str, run_id: str) -> list[str]:
        return self.q.list_steps(flow, run_id)

    def list_tasks(self, flow: str, run_id: str, step: str) -> list[str]:
        return self.q.list_tasks(flow, run_id, step)

    def step_outcomes(self, flow: str, run_id: str, steps: list[str]) -> list[StepOutcomes]:
        return self.q.step_outcomes(flow, run_id, steps)

    def task_detail(self, flow: str, run_id: str, step: str, task: str) -> TaskDetail:
        return self.q.task_detail(flow, run_id, step, task)

    def check_task(self, flow: str, run_id: str, step: str, task: str) -> None:
        self.q.check_task(flow, run_id, step, task)

    def capabilities(self) -> dict[str, object]:
        caps = self.q.caps
        try:
            store_kind, store_root = self.store.kind, self.store.root
        except BackendError as exc:  # metadata queries still work without a datastore
            store_kind, store_root = f"{self._datastore_kind} (unresolved: {exc.message})", None
        return {
            "metadata_url": self.url,
            "datastore": store_kind,
            "datastore_root": store_root,
            "service_version": caps.version,
            "server_filters": caps.filters,
            "server_cursors": caps.cursors,
            "filtered_tasks": caps.filtered_tasks is not False,
            "run_metadata_route": caps.run_metadata is not False,
        }
