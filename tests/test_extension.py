"""The Metaflow extension: registered under its own TYPE, a ServiceMetadataProvider
subclass, and light to import (every `import metaflow` loads it, remote tasks too)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_provider_registered_under_its_type():
    from metaflow.plugins import METADATA_PROVIDERS
    from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

    providers = {p.TYPE: p for p in METADATA_PROVIDERS}
    assert "agent" in providers and "service" in providers
    agent = providers["agent"]
    assert issubclass(agent, ServiceMetadataProvider) and agent is not ServiceMetadataProvider
    # Writes are the stock provider's, untouched.
    for name in ("new_run_id", "new_task_id", "register_metadata", "register_data_artifacts", "start_task_heartbeat"):
        assert getattr(agent, name) is getattr(ServiceMetadataProvider, name), name
    for name in ("query_runs", "task_outcomes", "task_attempts", "artifact_records", "run_task_metadata"):
        assert callable(getattr(agent, name))


def test_import_metaflow_stays_light():
    """Loading the extension must not pull in the query library, pydantic or requests sessions of ours."""
    code = "import sys, metaflow; print(sorted(m for m in sys.modules if m.startswith(('metaflow_agent', 'pydantic', 'mcp'))))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_agent_type_selects_the_service_backend(monkeypatch):
    from metaflow_agent._backend import get_backend, reset_backends

    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "agent")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", "http://127.0.0.1:9")
    reset_backends()
    backend = get_backend()
    assert backend.kind == "service" and backend.meta.url == "http://127.0.0.1:9"
    reset_backends()
