"""`python -m benchmarks`: build the data set, measure every question three ways, write the report.

    python -m benchmarks               # widths 10/100/1,000, 100 and 2,000 runs; local 200/2,000/20,000
    python -m benchmarks --quick       # widths 10/100, 100 runs; local 200/2,000: a smoke test
    python -m benchmarks --local-only  # only the local section (the other sections kept from results.json)
    python -m benchmarks --out DIR     # results elsewhere than benchmarks/results/

Three backends: local Metaflow (local metadata + local datastore) and the metadata service
double (tests/service_double, loopback only) in its master and released-2.5.1 modes, with a
local datastore. Three contenders per question: the naive Client API code, metaflow_agent,
and the peer metaflow-mcp-server 0.5.0 (installed into its own virtual environment under the
work folder). Then the local section (benchmarks/local.py): local Metaflow at 200 / 2,000 /
20,000 tasks and runs, naive vs metaflow_agent vs the file-system floor, and the cold CLI.
See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
USER = "bench"
PEER_REQS = ["metaflow==2.19.39", "metaflow-mcp-server==0.5.0", "mcp<2"]
BACKENDS = ("local", "master", "release")
_T0 = time.perf_counter()
_print_lock = threading.Lock()


def say(msg: str) -> None:
    with _print_lock:
        print(f"[{time.perf_counter() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def world_env(root: Path, work: Path, service_url: str | None = None) -> dict[str, str]:
    """The environment of every Metaflow process of one world: no user config, one root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "AWS_"))}
    env.update(
        USER=USER, USERNAME=USER, METAFLOW_USER=USER,
        METAFLOW_HOME=str(work / "metaflow_home"),
        METAFLOW_DEFAULT_METADATA="service" if service_url else "local",
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(root),
        METAFLOW_CLIENT_CACHE_PATH=str(work / "client_cache"),
    )
    if service_url:
        env["METAFLOW_SERVICE_URL"] = service_url
    return env


# --- the peer's virtual environment ------------------------------------------------------
class Peer:
    """metaflow-mcp-server 0.5.0 in its own venv (it needs mcp<2; this project uses mcp 2)."""

    def __init__(self, work: Path) -> None:
        self.venv = work / "peer-venv"
        self.python = self.venv / "bin" / "python"
        self.error: str | None = None
        self.versions: dict[str, str] = {}
        self._thread = threading.Thread(target=self._install, daemon=True)

    def start(self) -> "Peer":
        self._thread.start()
        return self

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)

    def _install(self) -> None:
        try:
            if not self.python.exists():
                proc = self._run([sys.executable, "-m", "venv", str(self.venv)])
                if proc.returncode:
                    raise RuntimeError(f"venv failed: {proc.stderr[-2000:]}")
            proc = self._run([str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_REQS])
            if proc.returncode:
                raise RuntimeError(f"pip install {' '.join(PEER_REQS)} failed: {proc.stderr[-2000:]}")
            code = ("import importlib.metadata as m, json, metaflow_mcp_server.server; "
                    "print(json.dumps({p: m.version(p) for p in ('metaflow-mcp-server', 'mcp', 'metaflow')}))")
            proc = self._run([str(self.python), "-c", code])
            if proc.returncode:
                raise RuntimeError(f"import metaflow_mcp_server.server failed: {proc.stderr[-2000:]}")
            self.versions = json.loads(proc.stdout.strip().splitlines()[-1])
        except Exception as exc:  # reported in the results, never skipped silently
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> bool:
        self._thread.join()
        return self.error is None


# --- real flows -------------------------------------------------------------------------------
def run_flow(script: Path, args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run a flow; its run id (a flow that fails on purpose still has one)."""
    fd, id_file = tempfile.mkstemp(prefix="runid-", dir=cwd)
    os.close(fd)
    cmd = [sys.executable, str(script), "--no-pylint", "run", "--run-id-file", id_file, *args]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1200)
    run_id = Path(id_file).read_text().strip()
    os.unlink(id_file)
    if not run_id:
        raise RuntimeError(f"{script.name} did not start:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return run_id


def only_task(root: Path, flow: str, run: str, step: str) -> str:
    tasks = [n for n in os.listdir(root / ".metaflow" / flow / run / step) if not n.startswith("_")]
    return f"{flow}/{run}/{step}/{sorted(tasks, key=int)[0]}"


def real_flows(world: str, root: Path, env: dict[str, str], quick: bool) -> dict[str, Any]:
    lines = 20_000 if quick else 215_000  # ≈165 bytes a line: 215,000 lines ≈ 35.6 MB of stdout
    big_mb = 12 if quick else 120
    t0 = time.perf_counter()
    log = run_flow(REPO / "tests/flows/log_flow.py", ["--lines", str(lines), "--max-log-size", "64"], env, root)
    art = run_flow(HERE / "flows/big_artifact_flow.py", ["--big_mb", str(big_mb)], env, root)
    wide = run_flow(REPO / "tests/flows/wide_flow.py", ["--width", "10", "--failing", "1", "--max-workers", "4"], env, root)
    out = {
        "log_task": only_task(root, "LogFlow", log, "noisy"),
        "artifact_task": only_task(root, "BigArtifactFlow", art, "start"),
        "real_wide_run": f"WideFlow/{wide}",
        "warmup_task": only_task(root, "WideFlow", wide, "start"),
    }
    logs = list((root / ".metaflow" / "LogFlow" / log / "noisy").glob("*/0.*_stdout.log"))
    out["log_bytes"] = sum(p.stat().st_size for p in logs)
    blob = max((root / ".metaflow" / "BigArtifactFlow" / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    out["artifact_bytes"] = blob.stat().st_size
    say(f"{world}: real flows done ({time.perf_counter() - t0:.0f} s): log {out['log_bytes'] / 1e6:.1f} MB, "
        f"artifact blob {out['artifact_bytes'] / 1e6:.0f} MB")
    return out


# --- cases ---------------------------------------------------------------------------------------
def cases_for(world: dict[str, Any]) -> list[dict[str, Any]]:
    real, m = world["real"], world["manifest"]
    cases = []
    for width, info in m["wide"].items():
        cases.append({"usecase": "failed_tasks", "size": f"width={width}", "axis": "width", "x": int(width), "args": {"run": info["run"]}})
    cases.append({"usecase": "failed_tasks", "size": "real WideFlow width=10", "axis": "real", "x": 10, "args": {"run": real["real_wide_run"]}})
    for n, info in m["many"].items():
        common = {"axis": "runs", "x": int(n), "size": f"runs={n}"}
        cases.append({"usecase": "latest_failed_runs", **common, "args": {"flow": info["flow"]}})
        cases.append({"usecase": "runs_in_range", **common, "args": {"flow": info["flow"], "since_ms": info["since_ms"], "until_ms": info["until_ms"]}})
        cases.append({"usecase": "artifact_search", **common, "args": {"flow": info["flow"], "name": "model"}})
    cases.append({"usecase": "log_tail", "size": f"log={real['log_bytes'] / 1e6:.1f} MB", "axis": "log", "x": real["log_bytes"], "args": {"task": real["log_task"]}})
    cases.append({"usecase": "artifact_metadata", "size": f"artifact={real['artifact_bytes'] / 2**20:.0f} MiB", "axis": "artifact", "x": real["artifact_bytes"],
                  "args": {"task": real["artifact_task"]}})
    for i, c in enumerate(cases):
        c["id"] = i
    return cases


def run_worker(python: Path, contender: str, backend: str, world: dict[str, Any], env: dict[str, str], work: Path,
               cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    plan = {
        "contender": contender,
        "backend": backend,
        "repo": str(REPO),
        "datastore_root": str(Path(world["root"]) / ".metaflow"),
        "client_cache": str(work / "client_cache" / f"{backend}-{contender}"),
        "warmup": {"usecase": "log_tail", "args": {"task": world["real"]["warmup_task"]}},
        "cases": cases,
    }
    plan_path = work / f"plan-{backend}-{contender}.json"
    plan_path.write_text(json.dumps(plan))
    env = {**env, "METAFLOW_CLIENT_CACHE_PATH": plan["client_cache"]}
    if contender == "peer":
        env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([str(python), str(HERE / "worker.py"), str(plan_path)], env=env, cwd=world["root"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = []
    by_id = {c["id"]: c for c in cases}
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        res = json.loads(line)
        case = by_id[res["id"]]
        res.update(axis=case["axis"], x=case["x"], args=case["args"])
        results.append(res)
        flag = f"  ERROR {res['error']}" if res["error"] else ""
        say(f"{backend:7} {contender:5} {res['usecase']:18} {res['size']:24} {res['requests']:6} req "
            f"{res['bytes_read'] / 1e6:8.2f} MB read {res['wall_ms']:9.0f} ms{flag}")
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0 or len(results) < len(cases):
        say(f"{backend} {contender}: worker exited {proc.returncode}, {len(results)}/{len(cases)} cases\n{err[-3000:]}")
        done = {r["id"] for r in results}
        for c in cases:
            if c["id"] not in done:
                results.append({"id": c["id"], "usecase": c["usecase"], "size": c["size"], "axis": c["axis"], "x": c["x"], "args": c["args"],
                                "contender": contender, "backend": backend, "error": f"worker failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}"})
    return results


# --- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="widths 10/100 and 100 runs, small log and artifact (a smoke test)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for results.json, REPORT.md and the plots")
    ap.add_argument("--work", default=None, help="work folder, kept at the end; its peer venv is reused (default: a temp folder, removed)")
    ap.add_argument("--local-only", action="store_true", help="only the local section; the other sections are kept from the existing results.json")
    ap.add_argument("--no-local", action="store_true", help="skip the local section (it is kept from the existing results.json)")
    ap.add_argument("--local-cache", default=None, help="where the local worlds are built and kept (default: WORK/local-worlds with --work, "
                    "else benchmarks/.work/local-worlds)")
    ap.add_argument("--reps", type=int, default=7, help="local section: timed warm answers per question (median reported)")
    ap.add_argument("--cold-reps", type=int, default=3, help="local section: timed answers after evicting the flow's files from the page cache (0: none)")
    ap.add_argument("--budget", type=float, default=30.0, help="local section: seconds of repetitions per question and contender (at least one)")
    args = ap.parse_args(argv)
    quick = args.quick
    local_sizes = [200, 2000] if quick else [200, 2000, 20000]
    cache = Path(args.local_cache or (Path(args.work) / "local-worlds" if args.work else HERE / ".work" / "local-worlds")).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.local_only:
        return _local_only(out, cache, local_sizes, args)
    widths = [10, 100] if quick else [10, 100, 1000]
    nruns = [100] if quick else [100, 2000]
    keep = args.work is not None
    work = Path(args.work or tempfile.mkdtemp(prefix="mfagent-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    say(f"work folder {work}; widths {widths}; runs {nruns}; local sizes {'none' if args.no_local else local_sizes}")

    roots = {"local": work / "local", "service": work / "service"}
    for r in [*roots.values(), work / "client_cache"]:
        shutil.rmtree(r, ignore_errors=True)  # the data set is always rebuilt; only the peer's venv is reused
    for r in roots.values():
        r.mkdir()
    (work / "metaflow_home").mkdir(exist_ok=True)
    # This process registers the service world: Metaflow must see that world's root at import.
    os.environ.update(world_env(roots["service"], work))
    sys.path.insert(0, str(REPO))
    from tests.service_double import ServiceDouble

    peer = Peer(work).start()
    double = ServiceDouble(mode="master")
    say(f"service double on {double.url}; installing the peer into {peer.venv}")
    envs = {"local": world_env(roots["local"], work), "service": world_env(roots["service"], work, double.url)}
    worlds: dict[str, dict[str, Any]] = {w: {"root": str(roots[w])} for w in roots}
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            real_local = pool.submit(real_flows, "local", roots["local"], envs["local"], quick)
            real_service = pool.submit(real_flows, "service", roots["service"], envs["service"], quick)
            man_path = work / "manifest-local.json"

            def build_local() -> dict[str, Any]:
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "benchmarks.build", str(roots["local"] / ".metaflow"), str(man_path),
                                       ",".join(map(str, widths)), ",".join(map(str, nruns))],
                                      env={**envs["local"], "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True, timeout=1800)
                if proc.returncode:
                    raise RuntimeError(f"local build failed:\n{proc.stderr[-3000:]}")
                for line in proc.stderr.strip().splitlines():
                    say(f"local: {line}")
                say(f"local: registered runs built ({time.perf_counter() - t0:.0f} s)")
                return json.loads(man_path.read_text())

            local_manifest = pool.submit(build_local)
            worlds["service"]["real"] = real_service.result()  # real flows first: they need the real clock
            from benchmarks.build import build_world

            t0 = time.perf_counter()
            worlds["service"]["manifest"] = build_world(
                str(roots["service"] / ".metaflow"), widths, nruns, service_url=double.url,
                set_clock=lambda c: setattr(double.store, "clock", c), progress=lambda s: say(f"service: {s}"))
            say(f"service: registered runs built ({time.perf_counter() - t0:.0f} s)")
            worlds["local"]["real"] = real_local.result()
            worlds["local"]["manifest"] = local_manifest.result()
        build_s = time.perf_counter() - started
        peer_ok = peer.ready()
        say("peer: " + (f"installed {peer.versions}" if peer_ok else f"NOT AVAILABLE: {peer.error}"))

        results: list[dict[str, Any]] = []
        measure_started = time.perf_counter()
        for backend in BACKENDS:
            world = worlds["local" if backend == "local" else "service"]
            env = envs["local" if backend == "local" else "service"]
            double.mode = "master" if backend == "local" else backend
            cases = cases_for(world)
            contenders = [("naive", Path(sys.executable)), ("ours", Path(sys.executable))]
            if peer_ok:
                contenders.append(("peer", peer.python))
            for contender, python in contenders:
                results += run_worker(python, contender, backend, world, {**env, "PYTHONPATH": str(REPO)}, work, cases)
        measure_s = time.perf_counter() - measure_started
    finally:
        double.stop()
    local = _previous(out).get("local") if args.no_local else _run_local(work, cache, local_sizes, args, peer.python if peer_ok else None)

    meta = {
        "quick": quick,
        "widths": widths,
        "runs": nruns,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": _versions(),
        "peer": {"available": peer_ok, "error": peer.error, "versions": peer.versions, "requirements": PEER_REQS},
        "worlds": {w: {"real": worlds[w]["real"], "manifest": worlds[w]["manifest"]} for w in worlds},
        "build_seconds": round(build_s, 1),
        "measure_seconds": round(measure_s, 1),
        "total_seconds": round(time.perf_counter() - _T0, 1),
    }
    from benchmarks.report import write_all

    write_all(out, meta, results, local)
    say(f"wrote {out}/results.json, REPORT.md and the figures")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _previous(out: Path) -> dict[str, Any]:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_local(work: Path, cache: Path, sizes: list[int], args: argparse.Namespace, peer_python: Path | None) -> dict[str, Any]:
    from benchmarks.local import run_local

    return run_local(work, cache, sizes, reps=args.reps, cold_reps=args.cold_reps, budget_s=args.budget, cli_reps=5, say=say,
                     peer_python=peer_python)


def _local_only(out: Path, cache: Path, sizes: list[int], args: argparse.Namespace) -> int:
    """Measure the local section only; keep the service sections of the existing results."""
    prev = _previous(out)
    if not prev:
        say(f"no {out}/results.json to keep the other sections from: only the local section will be reported")
    work = Path(args.work or tempfile.mkdtemp(prefix="mfagent-bench-local-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "metaflow_home").mkdir(exist_ok=True)
    peer = Peer(Path(args.work).resolve() if args.work else HERE / ".work").start()  # its venv is reused when present
    say(f"local section only: sizes {sizes}; worlds cached in {cache}; peer venv {peer.venv}")
    peer_ok = peer.ready()
    say("peer: " + (f"installed {peer.versions}" if peer_ok else f"NOT AVAILABLE: {peer.error}"))
    local = _run_local(work, cache, sizes, args, peer.python if peer_ok else None)
    meta = prev.get("meta") or {"quick": args.quick, "machine": {"python": platform.python_version(), "platform": platform.platform(),
                                                                  "cpus": os.cpu_count()}, "versions": _versions()}
    from benchmarks.report import write_all

    write_all(out, meta, prev.get("results", []), local)
    say(f"wrote {out}/results.json, REPORT.md and the figures")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("metaflow", "metaflow-agent", "pydantic", "requests", "aiohttp"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


if __name__ == "__main__":
    sys.exit(main())
