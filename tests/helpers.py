"""Helpers shared by the tests (import them from here, not from conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(os.environ.get("METAFLOW_AGENT_TEST_ROOT") or tempfile.mkdtemp(prefix="mfagent-tests-"))
ROOT.mkdir(parents=True, exist_ok=True)
FLOWS = Path(__file__).parent / "flows"
TEST_USER = "tester"
OTHER_USER = "otheruser"

BASE_ENV = {
    "USER": TEST_USER,
    "USERNAME": TEST_USER,
    "METAFLOW_USER": TEST_USER,
    "METAFLOW_DEFAULT_METADATA": "local",
    "METAFLOW_DEFAULT_DATASTORE": "local",
    "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(ROOT),
    "METAFLOW_AGENT_QUERY_SERVICE_URL": "off",  # tests that want one set it
}
# Our own knobs that must survive the isolation of the environment.
KEEP_ENV = ("METAFLOW_AGENT_TEST_ROOT", "METAFLOW_AGENT_SHARED")


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


def isolate_environment() -> None:
    """No Metaflow or AWS setting of the developer's leaks into the tests."""
    for key in [k for k in os.environ if k.startswith(("METAFLOW_", "AWS_")) and k not in KEEP_ENV]:
        del os.environ[key]
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


_FLOW_CLASSES = {
    "sleep_flow.py": "SleepFlow",
    "wide_flow.py": "WideFlow",
    "retry_flow.py": "RetryFlow",
    "crash_flow.py": "CrashFlow",
    "log_flow.py": "LogFlow",
    "artifact_flow.py": "ArtifactFlow",
    "hello_flow.py": "HelloFlow",
}


def run_flow(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a flow in a subprocess; return its 'Flow/run_id' (failures allowed)."""
    id_file = Path(tempfile.mkstemp(prefix="runid-", dir=ROOT)[1])
    full_env = {**os.environ, **BASE_ENV, **(env or {})}
    cmd = [sys.executable, str(FLOWS / script), "--no-pylint", "run", "--run-id-file", str(id_file), *args]
    proc = subprocess.run(cmd, env=full_env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=600)
    run_id = id_file.read_text().strip()
    id_file.unlink()
    if not run_id:
        raise RuntimeError(f"{script} did not start:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return f"{_FLOW_CLASSES[script]}/{run_id}"


def build_local_runs() -> LocalRuns:
    """The shared real runs, built in parallel (about a minute on 2 cores)."""

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
        return LocalRuns(str(ROOT), wide.result(), retry, crash, log.result(), art_a, art_b, hello_ok, hello_failed)


@dataclass
class ClientOutcome:
    """A task's outcome as the plain Client API records it (attempt_ok metadata)."""

    pathspec: str
    outcome: str  # completed | failed | crashed (started, no attempt_ok on its latest attempt)
    attempts: int
    failed_attempts: list[int]


def client_outcome(task) -> ClientOutcome | None:
    """The outcome of a Client `Task` from its metadata (None: registered, never started)."""
    from metaflow import Task

    if "attempt" not in task.metadata_dict:
        return None
    latest = task.current_attempt
    per = {a: (task if a == latest == 0 else Task(task.pathspec, attempt=a)).metadata_dict.get("attempt_ok") for a in range(latest + 1)}
    outcome = {"True": "completed", "False": "failed", None: "crashed"}[per[latest]]
    bad = [a for a, ok in per.items() if ok == "False" or (ok is None and (a != latest or outcome == "crashed"))]
    return ClientOutcome(task.pathspec, outcome, latest + 1, bad)


def client_run_state(run) -> str:
    """A finished run's state by the plain Client API: completed when successful, failed when a
    task's latest attempt recorded attempt_ok False, else crashed (something died)."""
    if run.successful:
        return "completed"
    for step in run:
        for task in step:
            outcome = client_outcome(task)
            if outcome is not None and outcome.outcome == "failed":
                return "failed"
    return "crashed"


@dataclass
class LiveRun:
    """A SleepFlow run whose nap task is running, in its own root; `kill()` SIGKILLs it all."""

    root: str
    run: str
    proc: subprocess.Popen

    def kill(self) -> None:
        import os
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the runtime and every task it started
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def start_live_run(root: Path, seconds: int = 600, timeout_s: float = 120) -> LiveRun:
    """Start a SleepFlow run in `root` and wait until its nap task has started."""
    import time

    root.mkdir(parents=True, exist_ok=True)
    id_file = root / f"runid-{time.time_ns()}"
    env = {**os.environ, **BASE_ENV, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root)}
    cmd = [sys.executable, str(FLOWS / "sleep_flow.py"), "--no-pylint", "run", "--run-id-file", str(id_file), "--seconds", str(seconds)]
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        nap = root / ".metaflow" / "SleepFlow" / run_id / "nap"
        if run_id and nap.is_dir() and any(p.name.startswith("sysmeta_attempt_") for p in nap.glob("*/_meta/*")):
            return LiveRun(str(root), f"SleepFlow/{run_id}", proc)
        if proc.poll() is not None:
            raise RuntimeError(f"sleep_flow.py exited with {proc.returncode} before its nap step started")
        time.sleep(0.3)
    LiveRun(str(root), "", proc).kill()
    raise RuntimeError("the nap step did not start in time")


def expect_error(exc_type, fn, *args, **kwargs):
    """Call fn; it must raise exc_type (or a subclass) with a message, a hint and a matching dict form."""
    import pytest

    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.message and err.hint.strip(), f"{type(err).__name__} without a hint: {err}"
    d = err.to_dict()
    assert d == {"error": err.code, "message": err.message, "hint": err.hint}
    return err


def raw_cursor(obj) -> str:
    """A cursor made by hand (base64 JSON), as a forger would."""
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def within(seconds: float, fn: Callable[[], Any], what: str = "the call") -> Any:
    """fn() on a daemon thread: its result or its exception, or a test failure after `seconds` (a hang)."""
    import pytest

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what} still running after {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]

