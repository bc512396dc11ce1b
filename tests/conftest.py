"""Fixtures shared by the tests. Metaflow reads its config at import time, so the
environment is isolated here, before anything imports metaflow. Helpers live in
`helpers.py`; tests that need real flows are marked `slow` automatically."""

from __future__ import annotations

import json

import pytest
from helpers import (
    OTHER_USER,
    ROOT,
    LocalRuns,
    build_local_runs,
    client_outcome,
    isolate_environment,
    run_flow,
)

isolate_environment()

# Fixtures that build or start something slow; a test using any of them is `slow`.
SLOW_FIXTURES = {"local_runs", "other_user_root", "service_runs", "s3_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def local_runs() -> LocalRuns:
    """Real runs on the local backend, built once (reused via METAFLOW_AGENT_TEST_ROOT)."""
    manifest = ROOT / "runs.json"
    if manifest.exists():
        return LocalRuns(**json.loads(manifest.read_text()))
    runs = build_local_runs()
    manifest.write_text(json.dumps(runs.__dict__))
    return runs


@pytest.fixture(autouse=True)
def _fresh_backends():
    """Backends are cached per configuration; tests that switch config start clean."""
    from metaflow_agent import reset_backends

    reset_backends()
    yield
    reset_backends()


@pytest.fixture(scope="session")
def other_user_root() -> tuple[str, str]:
    """(datastore root, run pathspec): a separate root with one HelloFlow run
    by another user, so namespace tests don't change the shared runs' counts."""
    root = ROOT / "other-user"
    root.mkdir(exist_ok=True)
    manifest = root / "run.json"
    if manifest.exists():
        return str(root), json.loads(manifest.read_text())["run"]
    who = {"USER": OTHER_USER, "USERNAME": OTHER_USER, "METAFLOW_USER": OTHER_USER}
    run = run_flow("hello_flow.py", "--tag", "team:z", env={**who, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root)}, cwd=root)
    manifest.write_text(json.dumps({"run": run}))
    return str(root), run


@pytest.fixture
def flow_only_root(tmp_path, monkeypatch) -> str:
    """A local root that knows flow HelloFlow and nothing else: for not-found paths without real runs."""
    meta = tmp_path / ".metaflow" / "HelloFlow" / "_meta"
    meta.mkdir(parents=True)
    (meta / "_self.json").write_text(json.dumps({"flow_id": "HelloFlow", "ts_epoch": 0}))
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path))
    return str(tmp_path)


@pytest.fixture
def client_ns():
    """The Metaflow Client's global namespace, set by the test and restored after."""
    from metaflow import default_namespace, namespace

    yield namespace
    default_namespace()


@pytest.fixture
def client_outcomes(client_ns):
    """run pathspec → {step: {task_id: ClientOutcome}} from the Client API (namespace(None))."""
    from metaflow import Run

    def get(run: str):
        client_ns(None)
        out = {}
        for step in Run(run):
            if step.id == "_parameters":
                continue
            out[step.id] = {t.id: o for t in step if (o := client_outcome(t)) is not None}
        return out

    return get
