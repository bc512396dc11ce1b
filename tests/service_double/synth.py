"""Register runs through the service's REST API exactly as Metaflow does:
with Metaflow's own ServiceMetadataProvider (its POSTs, its system metadata,
its attempt / attempt_ok / attempt-done records). Used for data sets too
large to execute as real flows (1,000-task foreachs, 2,000 runs)."""

from __future__ import annotations

import contextlib
import platform
from typing import Iterator

from metaflow.metadata_provider import MetaDatum
from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider


class _Env:
    def get_environment_info(self, include_ext_info: bool = False) -> dict[str, str]:
        import metaflow

        return {
            "runtime": "dev",
            "python_version_code": platform.python_version(),
            "metaflow_version": metaflow.__version__,
            "script": "synth_flow.py",
        }


class _Flow:
    def __init__(self, name: str) -> None:
        self.name = name


@contextlib.contextmanager
def provider(url: str, flow: str) -> Iterator[ServiceMetadataProvider]:
    """A real ServiceMetadataProvider pointed at `url` for the block."""
    from metaflow.plugins.metadata_providers import service as module

    # INFO is a metaclass property over _INFO (setting it pings the URL).
    saved = ServiceMetadataProvider._INFO, module.SERVICE_URL
    ServiceMetadataProvider._INFO = module.SERVICE_URL = url.rstrip("/")
    try:
        yield ServiceMetadataProvider(_Env(), _Flow(flow), None, None)
    finally:
        ServiceMetadataProvider._INFO, module.SERVICE_URL = saved


def _attempt(p: ServiceMetadataProvider, run: str, step: str, task: str, attempt: int, ok: bool | None) -> None:
    tags = [f"attempt_id:{attempt}"]
    data = [MetaDatum(field="attempt", value=str(attempt), type="attempt", tags=tags)]
    if ok is not None:
        data += [
            MetaDatum(field="attempt_ok", value=str(ok), type="internal_attempt_status", tags=tags),
            MetaDatum(field="attempt-done", value=str(attempt), type="attempt-done", tags=tags),
        ]
    p.register_metadata(run, step, task, data)


def _sys_tags(p: ServiceMetadataProvider) -> list[str]:
    """The system tags the runtime attaches to a run (user:, runtime:, python_version:, ...)."""
    return [f"{k}:{v}" for k, v in p._get_system_info_as_dict().items()]


def register_task(p: ServiceMetadataProvider, run: str, step: str, outcomes: list[bool | None]) -> str:
    """One task whose attempts end as given (True ok, False failed, None crashed/running)."""
    task = str(p.new_task_id(run, step))
    for attempt, ok in enumerate(outcomes):
        _attempt(p, run, step, task, attempt, ok)
    return task


def register_wide_run(url: str, flow: str, width: int, failed: set[int] = frozenset(), retried_ok: set[int] = frozenset(),
                      crashed: set[int] = frozenset(), failed_then_crashed: set[int] = frozenset(),
                      tags: list[str] | None = None) -> str:
    """start → a foreach `work` of `width` tasks; no join/end (the runtime stopped, like WideFlow)."""
    with provider(url, flow) as p:
        run = str(p.new_run_id(tags=tags or [], sys_tags=_sys_tags(p)))
        register_task(p, run, "_parameters", [])
        register_task(p, run, "start", [True])
        for i in range(width):
            if i in failed:
                outcomes: list[bool | None] = [False, False]
            elif i in retried_ok:
                outcomes = [False, True]
            elif i in crashed:
                outcomes = [None]
            elif i in failed_then_crashed:
                outcomes = [False, None]
            else:
                outcomes = [True]
            register_task(p, run, "work", outcomes)
        return run


def register_simple_run(url: str, flow: str, *, end_ok: bool | None, tags: list[str] | None = None) -> str:
    """start → end, the end step succeeding (True), failing (False) or never run (None: killed)."""
    with provider(url, flow) as p:
        run = str(p.new_run_id(tags=tags or [], sys_tags=_sys_tags(p)))
        register_task(p, run, "_parameters", [])
        register_task(p, run, "start", [True])
        if end_ok is not None:
            register_task(p, run, "end", [end_ok])
        return run
