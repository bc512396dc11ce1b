"""`metaflow-agent demo`: real runs in a throwaway local root, then questions, two ways.

Builds, with the example flows shipped in `flows/` (each a subprocess
`python flow.py --no-pylint run ...` whose environment points at the root):

    DemoShardsFlow   a foreach of `width` shards; the last 3 fail, shard 1 fails
                     once and succeeds on retry (@retry)
    DemoTrainFlow    x3: two successful runs (lr 0.01, 0.02) with a ~10 MB log and
                     artifacts from a few bytes to 20 MB; one run that fails (lr 0)

then `ask.py` answers the same questions with metaflow_agent and with the plain
Client API in a child process and prints both, with their costs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from metaflow_agent import BadInput

FLOWS = Path(__file__).parent / "flows"
FAILING_SHARDS = 3
MAX_WIDTH = 1000
_MANIFEST = "demo_runs.json"


@dataclass
class Job:
    """One flow run and what its output said so far."""

    key: str
    script: str
    args: list[str]
    expect_ok: bool
    flow: str
    started: int = 0
    finished: int = 0
    failed: int = 0
    run_id: str | None = None
    returncode: int | None = None
    seconds: float = 0.0
    log: Path | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.returncode is not None

    @property
    def ok(self) -> bool:
        return self.run_id is not None and (self.returncode == 0) == self.expect_ok


def _demo_user() -> str:
    """The user Metaflow would see (it ignores 'root'), else 'demo'."""
    for name in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER"):
        value = os.environ.get(name)
        if value and value != "root":
            return value
    return "demo"


def demo_env(root: Path) -> dict[str, str]:
    """The environment of every child: Metaflow on a local root, no user config."""
    home = root / "metaflow_home"  # empty: the user's ~/.metaflowconfig does not apply
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update(
        METAFLOW_HOME=str(home),
        METAFLOW_DEFAULT_METADATA="local",
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(root),
        METAFLOW_CLIENT_CACHE_PATH=str(root / "client_cache"),
        METAFLOW_USER=_demo_user(),
        PYTHONUNBUFFERED="1",
        # The child that asks the questions imports this package, installed or not.
        PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p),
    )
    return env


def _run(job: Job, root: Path, env: dict[str, str]) -> None:
    """Run one flow, counting task events in its output (written to logs/<key>.log)."""
    started = time.perf_counter()
    id_file = root / "logs" / f"{job.key}.runid"
    job.log = root / "logs" / f"{job.key}.log"
    cmd = [sys.executable, str(root / "flows" / job.script), "--no-pylint", "run", "--run-id-file", str(id_file), *job.args]
    with open(job.log, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "Task is starting" in line:
                job.started += 1
            elif "Task finished successfully" in line:
                job.finished += 1
            elif "Task failed" in line:
                job.failed += 1
        proc.wait()
    job.run_id = id_file.read_text().strip() if id_file.exists() else None
    job.seconds = time.perf_counter() - started
    job.returncode = proc.returncode


def _jobs(width: int) -> list[list[Job]]:
    """Two lanes that run side by side; jobs within a lane run in order."""
    shards = Job("shards", "shards_flow.py",
                 ["--max-num-splits", str(max(200, width + 10)), "--max-workers", "8",
                  "--width", str(width), "--failing", str(FAILING_SHARDS)], False, "DemoShardsFlow")
    train = [
        Job("train_a", "train_flow.py", ["--lr", "0.01"], True, "DemoTrainFlow"),
        Job("train_b", "train_flow.py", ["--lr", "0.02"], True, "DemoTrainFlow"),
        Job("train_failed", "train_flow.py", ["--lr", "0"], False, "DemoTrainFlow"),
    ]
    return [[shards], train]


def _describe(job: Job) -> str:
    what = {
        "shards": "foreach, failing and retried shards",
        "train_a": "large log, artifacts up to 20 MB",
        "train_b": "same, another learning rate",
        "train_failed": "fails in train",
    }[job.key]
    tasks = f"{job.finished} task{'s' * (job.finished != 1)} ok, {job.failed} failed attempt{'s' * (job.failed != 1)}"
    return f"{job.flow}/{job.run_id} ({what}): {tasks}, {job.seconds:.1f}s"


def build(root: Path, width: int, env: dict[str, str]) -> dict[str, str]:
    """Run the example flows into root, showing progress; return their pathspecs."""
    stream = sys.stdout
    (root / "logs").mkdir(parents=True, exist_ok=True)
    shutil.copytree(FLOWS, root / "flows", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    lanes = _jobs(width)
    def run_lane(lane: list[Job]) -> None:
        for job in lane:
            _run(job, root, env)

    threads = [threading.Thread(target=run_lane, args=(lane,), daemon=True) for lane in lanes]
    for t in threads:
        t.start()
    jobs = [j for lane in lanes for j in lane]
    tty = hasattr(stream, "isatty") and stream.isatty()
    reported: set[str] = set()
    started = time.perf_counter()
    last_line = 0.0
    while True:
        alive = any(t.is_alive() for t in threads)
        for j in jobs:
            if j.done and j.key not in reported:
                reported.add(j.key)
                mark = "✓" if j.ok else "✗"
                print(("\r\033[K" if tty else "") + f"  {mark} {_describe(j)}", file=stream, flush=True)
        elapsed = time.perf_counter() - started
        shards = jobs[0]
        attempts = width + 2 + FAILING_SHARDS  # start, the shards, the flaky retry and the failing ones' retries
        status = (f"  … {elapsed:5.1f}s  shards: {shards.finished + shards.failed}/{attempts} task attempts,"
                  f" {shards.failed} failed · train runs: {sum(j.done for j in jobs[1:])}/{len(jobs) - 1}")
        if tty:
            print("\r\033[K" + status, end="", file=stream, flush=True)
        elif elapsed - last_line >= 10 and alive:
            print(status, file=stream, flush=True)
            last_line = elapsed
        if not alive:
            break
        time.sleep(0.25)
    if tty:
        print("\r\033[K", end="", file=stream, flush=True)
    bad = [j for j in jobs if not j.ok]
    if bad:
        for j in bad:
            tail = j.log.read_text(errors="replace").splitlines()[-30:] if j.log and j.log.exists() else []
            print(f"{j.script} {' '.join(j.args)} ended with code {j.returncode} (expected "
                  f"{'success' if j.expect_ok else 'a failure'}); last lines of {j.log}:", file=sys.stderr)
            print("\n".join("    " + ln for ln in tail), file=sys.stderr)
        raise RuntimeError("building the demo runs failed")
    return {j.key: f"{j.flow}/{j.run_id}" for j in jobs}


def run_demo(*, keep: str | None = None, width: int = 40) -> int:
    """Build the runs (or reuse those in `keep`), ask the questions, print the comparison."""
    if isinstance(width, bool) or not isinstance(width, int) or not FAILING_SHARDS + 2 <= width <= MAX_WIDTH:
        raise BadInput(f"width={width!r} is out of range", hint=f"pass --width between {FAILING_SHARDS + 2} and {MAX_WIDTH}")
    t0 = time.perf_counter()
    root = Path(keep).resolve() if keep else Path(tempfile.mkdtemp(prefix="metaflow-agent-demo-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        env = demo_env(root)
        manifest = root / _MANIFEST
        previous = json.loads(manifest.read_text()) if manifest.exists() else None
        if previous and previous.get("width") == width:
            runs = previous["runs"]
            print(f"Reusing the demo runs in {root}", flush=True)
        else:
            print(f"Building example runs in {root}", flush=True)
            print(f"  DemoShardsFlow: {width} shards, the last {FAILING_SHARDS} fail, one retried; "
                  f"DemoTrainFlow: 3 runs with a ~10 MB log and a 20 MB artifact", flush=True)
            try:
                runs = build(root, width, env)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            manifest.write_text(json.dumps({"width": width, "runs": runs}))
            print(f"Built in {time.perf_counter() - t0:.1f}s\n", flush=True)
        code = subprocess.call([sys.executable, "-m", "metaflow_agent.demo.ask", str(root)], env=env, cwd=root)
        print(f"\nDemo finished in {time.perf_counter() - t0:.1f}s.")
        if keep:
            user = env["METAFLOW_USER"]
            # Listing and search default to the reader's own namespace (user:<you>); runs made under
            # the stand-in name 'demo' are only seen with --no-namespace.
            everyone = " --no-namespace" if user == "demo" else ""
            print(f"The runs are kept in {root} (made by user {user!r}). Ask your own questions:\n"
                  f"  export METAFLOW_DEFAULT_METADATA=local METAFLOW_DATASTORE_SYSROOT_LOCAL={root}\n"
                  f"  metaflow-agent list-runs DemoTrainFlow{everyone}\n"
                  f"  metaflow-agent failed-tasks {runs['shards']}\n"
                  f"  metaflow-agent task-logs {runs['train_b']}/train/<task> --grep ERROR\n"
                  f"  metaflow-agent search-artifacts DemoTrainFlow --name 'model*'{everyone}")
        return code
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
