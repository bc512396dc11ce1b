"""Shared fixtures. Metaflow reads its config at import time, so the
environment is isolated here, before anything imports metaflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

_ROOT = Path(os.environ.get("METAFLOW_AGENT_TEST_ROOT") or tempfile.mkdtemp(prefix="mfagent-tests-"))
_ROOT.mkdir(parents=True, exist_ok=True)
FLOWS = Path(__file__).parent / "flows"
TEST_USER = "tester"

BASE_ENV = {
    "USER": TEST_USER,
    "USERNAME": TEST_USER,
    "METAFLOW_USER": TEST_USER,
    "METAFLOW_DEFAULT_METADATA": "local",
    "METAFLOW_DEFAULT_DATASTORE": "local",
    "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(_ROOT),
}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The S3 datastore of the service deployment tests: a moto server started on
# this port by the `s3_server` fixture. Metaflow reads the endpoint at import.
S3_PORT = free_port()
S3_ENV = {
    "METAFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "METAFLOW_DATASTORE_SYSROOT_S3": "s3://mfagent-test/metaflow",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
for _k in [k for k in os.environ if k.startswith(("METAFLOW_", "AWS_")) and k not in ("METAFLOW_AGENT_TEST_ROOT",)]:
    del os.environ[_k]
os.environ.update(BASE_ENV)
os.environ.update(S3_ENV)


@dataclass
class LocalRuns:
    """Run pathspecs of the real flows built once per session."""

    root: str
    wide: str
    retry: str
    crash: str
    log: str
    art_a: str
    art_b: str
    hello_ok: list[str]
    hello_failed: str


def run_flow(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a flow in a subprocess; return its 'Flow/run_id' (failures allowed)."""
    id_file = Path(tempfile.mkstemp(prefix="runid-", dir=_ROOT)[1])
    full_env = {**os.environ, **BASE_ENV, **(env or {})}
    cmd = [sys.executable, str(FLOWS / script), "--no-pylint", "run", "--run-id-file", str(id_file), *args]
    proc = subprocess.run(cmd, env=full_env, cwd=cwd or _ROOT, capture_output=True, text=True, timeout=600)
    run_id = id_file.read_text().strip()
    id_file.unlink()
    if not run_id:
        raise RuntimeError(f"{script} did not start:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    flow = {
        "wide_flow.py": "WideFlow",
        "retry_flow.py": "RetryFlow",
        "crash_flow.py": "CrashFlow",
        "log_flow.py": "LogFlow",
        "artifact_flow.py": "ArtifactFlow",
        "hello_flow.py": "HelloFlow",
    }[script]
    return f"{flow}/{run_id}"


def _build() -> LocalRuns:
    def hello_runs() -> tuple[list[str], str]:
        ok = [
            run_flow("hello_flow.py", "--tag", "team:a", "--tag", "batch:0"),
            run_flow("hello_flow.py", "--tag", "team:b", "--tag", "batch:0"),
            run_flow("hello_flow.py", "--tag", "team:a", "--tag", "batch:1"),
        ]
        failed = run_flow("hello_flow.py", "--tag", "team:b", "--fail_end", "true")
        return ok, failed

    with ThreadPoolExecutor(max_workers=3) as pool:
        wide = pool.submit(run_flow, "wide_flow.py", "--max-num-splits", "300", "--max-workers", "8")
        small = pool.submit(
            lambda: [
                run_flow("retry_flow.py"),
                run_flow("crash_flow.py"),
                run_flow("artifact_flow.py", "--alpha", "0.5"),
                run_flow("artifact_flow.py", "--alpha", "0.7"),
            ]
        )
        log = pool.submit(run_flow, "log_flow.py", "--max-log-size", "64")
        hello = pool.submit(hello_runs)
        retry, crash, art_a, art_b = small.result()
        hello_ok, hello_failed = hello.result()
        return LocalRuns(str(_ROOT), wide.result(), retry, crash, log.result(), art_a, art_b, hello_ok, hello_failed)


@pytest.fixture(scope="session")
def local_runs() -> LocalRuns:
    """Real runs on the local backend, built once (reused via METAFLOW_AGENT_TEST_ROOT)."""
    manifest = _ROOT / "runs.json"
    if manifest.exists():
        return LocalRuns(**json.loads(manifest.read_text()))
    runs = _build()
    manifest.write_text(json.dumps(asdict(runs)))
    return runs


@pytest.fixture(autouse=True)
def _fresh_backends():
    """Backends are cached per configuration; tests that switch config start clean."""
    from metaflow_agent._backend import reset_backends

    reset_backends()
    yield
    reset_backends()


OTHER_USER = "otheruser"


@pytest.fixture(scope="session")
def other_user_root() -> tuple[str, str]:
    """(datastore root, run pathspec): a separate root with one HelloFlow run
    by another user, so namespace tests don't change the shared runs' counts."""
    root = _ROOT / "other-user"
    root.mkdir(exist_ok=True)
    manifest = root / "run.json"
    if manifest.exists():
        return str(root), json.loads(manifest.read_text())["run"]
    who = {"USER": OTHER_USER, "USERNAME": OTHER_USER, "METAFLOW_USER": OTHER_USER}
    run = run_flow("hello_flow.py", "--tag", "team:z", env={**who, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root)}, cwd=root)
    manifest.write_text(json.dumps({"run": run}))
    return str(root), run


@pytest.fixture
def client_ns():
    """The Metaflow Client's global namespace, set by the test and restored after."""
    from metaflow import default_namespace, namespace

    yield namespace
    default_namespace()


@dataclass
class ClientOutcome:
    """A task's outcome as the plain Client API records it (attempt_ok metadata)."""

    pathspec: str
    outcome: str  # completed | failed | crashed (started, no attempt_ok on its latest attempt)
    attempts: int
    failed_attempts: list[int]


def _client_outcome(task) -> ClientOutcome | None:
    from metaflow import Task

    if "attempt" not in task.metadata_dict:
        return None  # registered but never started
    latest = task.current_attempt
    per = {a: (task if a == latest == 0 else Task(task.pathspec, attempt=a)).metadata_dict.get("attempt_ok") for a in range(latest + 1)}
    outcome = {"True": "completed", "False": "failed", None: "crashed"}[per[latest]]
    bad = [a for a, ok in per.items() if ok == "False" or (ok is None and (a != latest or outcome == "crashed"))]
    return ClientOutcome(task.pathspec, outcome, latest + 1, bad)


@pytest.fixture
def client_outcomes(client_ns):
    """run pathspec → {step: {task_id: ClientOutcome}} from the Client API (namespace(None))."""
    from metaflow import Run

    def get(run: str) -> dict[str, dict[str, ClientOutcome]]:
        client_ns(None)
        out: dict[str, dict[str, ClientOutcome]] = {}
        for step in Run(run):
            if step.id == "_parameters":
                continue
            out[step.id] = {t.id: o for t in step if (o := _client_outcome(t)) is not None}
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
