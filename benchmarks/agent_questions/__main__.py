"""`python -m benchmarks.agent_questions`: the issue-10 agent questions at size, on every backend.

    python -m benchmarks.agent_questions                 # TrainFlow of 1,000 runs, a 1,000-task foreach
    python -m benchmarks.agent_questions --quick         # 40 runs, a 50-task foreach: a smoke test
    python -m benchmarks.agent_questions --rebuild       # build the world again even if cached
    python -m benchmarks.agent_questions --backends local,master

The world (`world.py`) is built once per size and kept under the work folder (default
benchmarks/.work/agent_questions, gitignored): the local datastore and metadata, and for the
service the datastore plus the service double's rows, loaded into a fresh double on each run.
Each backend is measured in its own process (`measure.py`): local Metaflow, then the double
in master, release (2.5.1) and release-2.6.1 modes. Results: benchmarks/results/agent_questions.json
and agent_questions.md (--quick: in its work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .world import TRAIN_RUNS, VERSION, WIDTH, cases

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BACKENDS = ("local", "master", "release", "release-2.6.1")
USER = "bench"
_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def world_env(root: Path, work: Path, service_url: str | None = None) -> dict[str, str]:
    """A Metaflow process of one world: no user config, one datastore root, this repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "AWS_"))}
    env.update(
        USER=USER, USERNAME=USER, METAFLOW_USER=USER,
        METAFLOW_HOME=str(work / "metaflow_home"),
        METAFLOW_DEFAULT_METADATA="service" if service_url else "local",
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(root),
        METAFLOW_CLIENT_CACHE_PATH=str(work / "client_cache"),
        PYTHONPATH=str(REPO),
    )
    if service_url:
        env["METAFLOW_SERVICE_URL"] = service_url
    return env


def ensure_world(work: Path, kind: str, runs: int, width: int, rebuild: bool) -> dict[str, Any]:
    """The cached world of this kind and size, built first when missing or stale."""
    root, manifest_path, rows = work / kind, work / f"{kind}.json", work / f"{kind}-rows.json"
    if not rebuild and manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if (m.get("version"), m.get("train_runs"), m.get("width")) == (VERSION, runs, width) and (kind == "local" or rows.exists()):
            say(f"{kind}: cached world from {m['built_at']} ({m['build_seconds']} s to build)")
            return m
    shutil.rmtree(root, ignore_errors=True)
    manifest_path.unlink(missing_ok=True)
    root.mkdir(parents=True)
    (work / "metaflow_home").mkdir(exist_ok=True)
    say(f"{kind}: building {runs} runs and a {width}-task foreach under {root}")
    cmd = [sys.executable, "-m", "benchmarks.agent_questions.world", kind, str(root / ".metaflow"), str(manifest_path), str(runs), str(width)]
    if kind == "service":
        cmd.append(str(rows))
    proc = subprocess.run(cmd, env=world_env(root, work), cwd=REPO, stderr=subprocess.PIPE, text=True, timeout=7200)
    for line in proc.stderr.strip().splitlines()[-20:]:
        say(line)
    if proc.returncode:
        raise SystemExit(f"building the {kind} world failed ({proc.returncode})")
    return json.loads(manifest_path.read_text())


def measure(backend: str, world: dict[str, Any], root: Path, work: Path, service_url: str | None) -> list[dict[str, Any]]:
    """Every case on one backend, asked in a process of its own."""
    plan = work / f"plan-{backend}.json"
    plan.write_text(json.dumps({"cases": [c.__dict__ for c in cases(world)]}))
    env = world_env(root, work, service_url)
    env["METAFLOW_CLIENT_CACHE_PATH"] = str(work / "client_cache" / backend)
    shutil.rmtree(env["METAFLOW_CLIENT_CACHE_PATH"], ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.agent_questions.measure", str(plan)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    results = []
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        res = json.loads(line)
        if "warmup" in res:
            continue
        res["backend"] = backend
        results.append(res)
        cost = res["cost"]
        flag = "ok " if res["within_budget"] and res["equal"] else "NO "
        say(f"{backend:13} {flag}{res['question']:36} {res['calls']} calls {res['bytes']:6} B  "
            f"{cost.get('metadata_requests', 0):5.0f} req {cost.get('datastore_reads', 0):6.0f} reads  "
            f"ask {res['ask_s']:6.2f} s  truth {res['truth_s']:7.1f} s" + (f"  {res['diffs'][0][:160]}" if res["diffs"] else ""))
    err = proc.stderr.read()
    if proc.wait() != 0 or len(results) < len(cases(world)):
        say(f"{backend}: measuring process exited {proc.returncode} after {len(results)} cases\n{err[-3000:]}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.agent_questions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 runs and a 50-task foreach (a smoke test)")
    ap.add_argument("--rebuild", action="store_true", help="build the world again even when a cached one fits")
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    ap.add_argument("--work", default=None, help="work folder holding the cached worlds (default benchmarks/.work/agent_questions[-quick])")
    ap.add_argument("--out", default=None, help="folder for agent_questions.json and .md (default benchmarks/results; --quick: the work folder)")
    args = ap.parse_args(argv)
    runs, width = (40, 50) if args.quick else (TRAIN_RUNS, WIDTH)
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backends {sorted(unknown)}")
    work = Path(args.work or HERE.parent / ".work" / ("agent_questions-quick" if args.quick else "agent_questions")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    worlds = {}
    if "local" in backends:
        worlds["local"] = ensure_world(work, "local", runs, width, args.rebuild)
    if set(backends) - {"local"}:
        worlds["service"] = ensure_world(work, "service", runs, width, args.rebuild)

    results: list[dict[str, Any]] = []
    double = None
    started = time.perf_counter()
    try:
        if "service" in worlds:
            sys.path.insert(0, str(REPO))
            from tests.service_double import ServiceDouble

            t0 = time.perf_counter()
            rows = json.loads((work / "service-rows.json").read_text())
            double = ServiceDouble(mode="master", records=rows)
            say(f"service double on {double.url}: {sum(map(len, rows.values())):,} rows loaded ({time.perf_counter() - t0:.0f} s)")
        for backend in backends:
            kind = "local" if backend == "local" else "service"
            if double is not None and kind == "service":
                double.mode = backend
            results += measure(backend, worlds[kind], work / kind, work, double.url if double is not None and kind == "service" else None)
    finally:
        if double is not None:
            double.stop()
    meta = {
        "quick": args.quick,
        "worlds": worlds,
        "backends": backends,
        "measure_seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": _versions(),
    }
    from .report import write

    out = Path(args.out or (work if args.quick else HERE.parent / "results"))
    name = "agent_questions-quick" if args.quick else "agent_questions"
    write(out, name, meta, results)
    say(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
    return 0


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("metaflow", "metaflow-agent", "mcp"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


if __name__ == "__main__":
    sys.exit(main())
