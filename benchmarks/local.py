"""The local section: naive Client API vs metaflow_agent vs the file-system floor, at 200 / 2,000 / 20,000.

Local Metaflow (local metadata + local datastore), worlds built by `localworld` (cached under
the work folder), six questions (`localcases.QUESTIONS`), each contender in its own process
(`localworker`), one process per size, contenders taking turns so a change in the shared
machine's load hits all three alike. Then the cold CLI: fresh processes, wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .localcases import QUESTIONS, case_args
from .localworld import sysroot

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("floor", "ours", "naive", "peer")
USER = "bench"

NAIVE_CLI = """
import json, sys
from metaflow import Flow, namespace
namespace(None)
failed = []
for run in Flow(sys.argv[1]).runs():
    # failed, not crashed: a task failed (a killed run's tasks all succeeded as far as they went)
    if not run.successful and any("_task_ok" in t and t["_task_ok"].data is False for s in run for t in s):
        failed.append(run.id)
        if len(failed) == 10:
            break
print(json.dumps(failed))
"""


def local_env(sysroot_dir: str, work: Path) -> dict[str, str]:
    """A clean Metaflow environment on one local root (no user config, no AWS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "AWS_"))}
    env.update(USER=USER, USERNAME=USER, METAFLOW_USER=USER, METAFLOW_HOME=str(work / "metaflow_home"), METAFLOW_DEFAULT_METADATA="local",
               METAFLOW_DEFAULT_DATASTORE="local", METAFLOW_DATASTORE_SYSROOT_LOCAL=sysroot_dir,
               METAFLOW_CLIENT_CACHE_PATH=str(work / "client_cache"), PYTHONPATH=str(REPO))
    return env


def cases_for(worlds: dict[str, dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for n in sizes:
        for q, kind, _ in QUESTIONS:
            w = worlds[f"{kind}-{n}"]
            cases.append({"id": len(cases), "question": q, "kind": kind, "size": n, "flow": w["flow"], "args": case_args(q, w)})
    return cases


def _worker(contender: str, cases: list[dict[str, Any]], env: dict[str, str], work: Path, cache: str, ds_root: str,
            reps: int, cold_reps: int, budget_s: float, say: Callable[[str], None], python: Path | None = None) -> dict[int, dict[str, Any]]:
    plan = {"contender": contender, "repo": str(REPO), "datastore_root": ds_root, "cache": cache, "reps": reps, "cold_reps": cold_reps,
            "budget_s": budget_s, "client_cache": str(work / "client_cache" / f"local-{contender}"), "cases": cases}
    path = work / f"plan-local-{contender}-{cases[0]['size']}.json"
    path.write_text(json.dumps(plan))
    if python is None:
        cmd = [sys.executable, "-m", "benchmarks.localworker", str(path)]
    else:  # the peer's interpreter: a script, no PYTHONPATH, so Metaflow loads only the peer's own extensions
        cmd = [str(python), str(REPO / "benchmarks" / "localworker.py"), str(path)]
        env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(cmd, env=env, cwd=ds_root if python else str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[int, dict[str, Any]] = {}
    by_id = {c["id"]: c for c in cases}
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if "floor_imported_metaflow" in msg:
            if msg["floor_imported_metaflow"]:
                raise RuntimeError("the floor's process imported Metaflow: it would not be a floor")
            continue
        row = out.setdefault(msg["id"], {})
        row.update(msg)
        if not msg.get("counts"):
            c = by_id[msg["id"]]
            cold = f", cold {msg['cold_wall_ms']:,.1f} ms" if "cold_wall_ms" in msg else ""
            err = f"  ERROR {msg['error']}" if msg.get("error") else ""
            say(f"local {c['size']:>6} {contender:5} {c['question']:18} {msg.get('wall_ms', float('nan')):>10,.1f} ms "
                f"(median of {len(msg.get('warm_ms', []))}{cold}; load {msg['load']:.1f}){err}")
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        say(f"local {contender}: worker exited {proc.returncode}\n{err[-3000:]}")
    for c in cases:
        if c["id"] not in out or "wall_ms" not in out[c["id"]] and not out[c["id"]].get("error"):
            out.setdefault(c["id"], {})["error"] = f"worker failed: {(err.strip().splitlines() or ['?'])[-1]}"
    return out


def _run_cmd(cmd: list[str], env: dict[str, str], reps: int) -> tuple[list[float], str, int]:
    times, stdout, rc = [], "", 0
    for _ in range(reps):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=600)
        times.append((time.perf_counter() - t0) * 1000)
        stdout, rc = proc.stdout, proc.returncode
        if rc:
            stdout = proc.stderr[-500:]
            break
    return times, stdout, rc


def cli_measures(worlds: dict[str, dict[str, Any]], sizes: list[int], env: dict[str, str], reps: int,
                 say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Fresh processes, wall time: --help, a cold list-runs query three ways, Python's own start."""
    agent = Path(sys.executable).parent / "metaflow-agent"
    agent_cmd = [str(agent)] if agent.exists() else [sys.executable, "-m", "metaflow_agent"]
    rows = []

    def one(name: str, cmd: list[str], size: int | None, parse: Callable[[str], Any] | None = None) -> None:
        times, out, rc = _run_cmd(cmd, env, reps)
        found = None
        if parse and rc == 0:
            try:
                found = parse(out)
            except ValueError as exc:
                found = f"unparsable: {exc}"
        rows.append({"what": name, "size": size, "cmd": " ".join(cmd[:2] + ["..."] if len(cmd) > 4 else cmd)[:160], "wall_ms": round(statistics.median(times), 1),
                     "runs_ms": [round(t, 1) for t in times], "rc": rc, "error": out if rc else None, "found": found, "load": os.getloadavg()[0]})
        say(f"cli {name:28} {size or '':>6} {statistics.median(times):8.0f} ms (median of {len(times)}; load {os.getloadavg()[0]:.1f})")

    one("python -c pass", [sys.executable, "-c", "pass"], None)
    one("python -c 'import metaflow'", [sys.executable, "-c", "import metaflow"], None)
    one("metaflow-agent --help", agent_cmd + ["--help"], None)
    for n in sizes:
        w = worlds[f"runs-{n}"]
        one("floor (fresh process)", [sys.executable, "-m", "benchmarks.floor", w["root"], "latest_failed_runs", json.dumps({"flow": w["flow"]})], n,
            lambda s: [x["run"].rsplit("/", 1)[1] for x in json.loads(s)])
        one("metaflow-agent list-runs", agent_cmd + ["list-runs", w["flow"], "--status", "failed", "--limit", "10", "--no-namespace", "--json"], n,
            lambda s: [x["run_id"] for x in json.loads(s)["runs"]])
        one("naive (fresh process)", [sys.executable, "-c", NAIVE_CLI, w["flow"]], n, json.loads)
    return rows


def run_local(work: Path, cache: Path, sizes: list[int], *, reps: int, cold_reps: int, budget_s: float, cli_reps: int,
              say: Callable[[str], None], peer_python: Path | None = None) -> dict[str, Any]:
    """Build or reuse the worlds, measure every question three ways and the cold CLI."""
    t0 = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    (work / "metaflow_home").mkdir(parents=True, exist_ok=True)
    root_dir = sysroot(str(cache))
    ds_root = os.path.join(root_dir, ".metaflow")
    env = local_env(root_dir, work)
    # Built in a process of its own: Metaflow's writers (the verification) read the environment at import.
    specs = [f"{k}-{n}" for k in ("tasks", "runs") for n in sizes]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.localworld", str(cache), *specs], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        say(f"local: {line.rstrip()}")
    worlds = json.loads(proc.stdout.read() or "{}")
    if proc.wait() != 0 or not worlds:
        raise RuntimeError("building the local worlds failed (see the lines above)")
    build_s = time.perf_counter() - t0
    shutil.rmtree(work / "client_cache", ignore_errors=True)
    cases = cases_for(worlds, sizes)
    rows: list[dict[str, Any]] = []
    t1 = time.perf_counter()
    for n in sizes:
        mine = [c for c in cases if c["size"] == n]
        for contender in CONTENDERS:
            if contender == "peer" and peer_python is None:
                continue
            res = _worker(contender, mine, env, work, str(cache), ds_root, reps, cold_reps, budget_s, say,
                          python=peer_python if contender == "peer" else None)
            for c in mine:
                r = res.get(c["id"], {"error": "no result"})
                rows.append({"question": c["question"], "kind": c["kind"], "size": n, "contender": contender, "args": c["args"],
                             **{k: v for k, v in r.items() if k not in ("id", "contender", "counts")}})
    measure_s = time.perf_counter() - t1
    cli = cli_measures(worlds, sizes, env, cli_reps, say)
    return {
        "sizes": sizes,
        "reps": reps,
        "cold_reps": cold_reps,
        "budget_s": budget_s,
        "worlds": worlds,
        "rows": rows,
        "cli": cli,
        "peer": peer_python is not None,
        "build_seconds": round(build_s, 1),
        "measure_seconds": round(measure_s, 1),
        "loadavg_end": os.getloadavg(),
    }
