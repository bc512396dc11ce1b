"""Fixtures shared by the tests. Metaflow reads its config at import time, so the
environment is isolated here, before anything imports metaflow. Helpers live in
`helpers.py`; tests that need real flows are marked `slow` automatically."""

from __future__ import annotations

import json

import pytest
from helpers import (
    OTHER_USER,
    ROOT,
    S3_ENV,
    S3_PORT,
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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (the endpoint Metaflow read at import), bucket mfagent-test."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=S3_ENV["METAFLOW_S3_ENDPOINT_URL"]).create_bucket(Bucket="mfagent-test")
    yield server
    server.stop()


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


# --- PostgreSQL with the real metadata service's database (tests/pg.py) -------------
@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1, stopped and removed after the session."""
    from pg import PgCluster, PgUnavailable

    try:
        cluster = PgCluster.start()
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def service_db(pg_cluster) -> str:
    """DSN of a database restored from shared/service-db (written by the real service, master)."""
    from pg import service_db_dump

    return pg_cluster.create_db("metaflow", dump=service_db_dump())


# --- the query service (metaflow_agent_service) as real processes on the dump --------
QS_TOKEN = "test-token-0123456789"
MASTER_ONLY_INDEXES = ("runs_v3_idx_flow_ts_runnum_desc", "flows_v3_idx_ts_flow_desc", "tasks_v3_idx_flow_run_step_ts_task_desc",
                       "metadata_v3_idx_flow_run_ts_id_desc", "artifact_v3_idx_latest_attempt")


@pytest.fixture(scope="session")
def service_db_251(pg_cluster) -> str:
    """The same rows in a schema as 2.5.1 leaves it: without the five indexes master added."""
    from pg import service_db_dump

    dsn = pg_cluster.create_db("metaflow_251", dump=service_db_dump())
    pg_cluster.psql("metaflow_251", "; ".join(f"DROP INDEX {name}" for name in MASTER_ONLY_INDEXES))
    return dsn


def _serve(dsn: str, *args: str, token: str | None = None):
    from qs_server import ServiceProcess

    server = ServiceProcess(dsn, list(args), token=token).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def qs_master(service_db):
    """The service on the master-written dump: bearer token on, the `_now` test clock allowed."""
    yield from _serve(service_db, "--test-allow-now", token=QS_TOKEN)


@pytest.fixture(scope="session")
def qs_251(service_db_251):
    """The service on the 2.5.1-schema copy, with a scan budget of 3 runs (to exercise budget cursors)."""
    yield from _serve(service_db_251, "--test-allow-now", "--scan-budget", "3")


@pytest.fixture(scope="session")
def qs_plain(service_db):
    """The service as an operator starts it (no test clock, no token), with a 500 ms statement timeout."""
    yield from _serve(service_db, "--statement-timeout-ms", "500")


@pytest.fixture(scope="session")
def synthetic_db(pg_cluster) -> str:
    """A database with the dump's schema and synthetic rows shaped like its own (the scale
    benchmark's generator at its smallest: 300 runs, a 500-task run, retries, crashes, live runs)."""
    import asyncio

    from pg import service_db_dump

    from benchmarks.query_service.generate import QUICK, load

    dsn = pg_cluster.create_db("synthetic", dump=service_db_dump())
    asyncio.run(load(dsn, QUICK, progress=lambda msg: None))
    return dsn


@pytest.fixture(scope="session")
def qs_synthetic(synthetic_db):
    """The service on the synthetic database (test clock allowed)."""
    yield from _serve(synthetic_db, "--test-allow-now")


@pytest.fixture(scope="module")
def client(double):
    """The plain Client API pointed at a module's service double (its `double` fixture; global
    Metaflow state, tests only). Modules with local runs define their own `client`."""
    import metaflow

    metaflow.metadata(f"service@{double.url}")
    metaflow.namespace(None)
    yield metaflow
    metaflow.metadata("local")
