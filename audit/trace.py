"""The audit's tracer: what each agent question costs, observed request by request.

A small data set is registered on the metadata service double (tests/service_double) with
Metaflow's own provider and datastore (benchmarks/synth.py), in a local datastore. Each
question is then asked twice per service generation — the naive Client API code
(benchmarks/usecases.py) and metaflow_agent — with the counting transport mounted on
Metaflow's own HTTP session and an audit hook on file opens (benchmarks/measure.py). Each
question is asked at two or three sizes of one dimension (runs, steps, tasks, attempts,
log size, artifact size) with everything else fixed, so the tables show how each route's
count grows. The double's own request log is checked against the transport's count.

Used by `python -m audit` (writes traces.json and the README tables) and by
tests/test_audit_consistency.py (re-traces and compares with traces.json).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
MODES = ("master", "release")
MODE_NAMES = {"master": "master", "release": "2.5.1"}

# dimension -> sizes; kept small: the whole trace runs in seconds (the consistency test re-runs it)
SIZES: dict[str, list[int]] = {
    "runs": [20, 80],
    "tasks": [5, 20, 80],
    "steps": [2, 4, 8],
    "attempts": [1, 2, 3],
    "log_lines": [100, 10_000],
    "artifact_bytes": [100_000, 4_000_000],
}

# (use case, dimension): which questions are traced along which dimension
PLAN: list[tuple[str, str]] = [
    ("latest_failed_runs", "runs"),
    ("runs_in_range", "runs"),
    ("failed_tasks", "tasks"),
    ("failed_tasks", "steps"),
    ("failed_tasks", "attempts"),
    ("artifact_metadata", "artifact_bytes"),
    ("log_tail", "log_lines"),
    ("artifact_search", "runs"),
    ("artifact_search", "tasks"),
]


def build(url: str, ds_root: str, set_clock: Any) -> dict[str, Any]:
    """Register the audit's runs; {dimension: {size: case arguments}} per use case."""
    from benchmarks.synth import (RunWriter, SynthClock, artifact_run, chain_run, clock_patched, log_run, run_outcome, run_tags,
                                  simple_run, wide_run)

    spacing = 3600.0
    clock = SynthClock(time.time() - 30 * 86400)
    set_clock(clock.time)
    out: dict[str, Any] = {}
    try:
        with clock_patched(clock):
            for n in SIZES["runs"]:
                flow = f"AuditRuns{n}Flow"
                clock.now = time.time() - (n + 2) * spacing
                starts = []
                with RunWriter(flow, ds_root, service_url=url) as w:
                    for i in range(n):
                        starts.append(int(clock.now * 1000))
                        simple_run(w, run_outcome(i), run_tags(i))
                        clock.advance(spacing)
                k = n // 2
                out.setdefault("runs", {})[str(n)] = {"flow": flow, "since_ms": starts[k], "until_ms": starts[k + 5] - 1, "name": "model"}
            with RunWriter("AuditWideFlow", ds_root, service_url=url) as w:
                for width in SIZES["tasks"]:
                    run = wide_run(w, width, failed={width - 1}, retried_ok={1})
                    out.setdefault("tasks", {})[str(width)] = {"run": f"AuditWideFlow/{run}", "flow": f"AuditTasks{width}Flow", "name": "value"}
                for attempts in SIZES["attempts"]:
                    run = wide_run(w, 5, failed={4}, retried_ok=set(), fail_attempts=attempts)
                    out.setdefault("attempts", {})[str(attempts)] = {"run": f"AuditWideFlow/{run}"}
            for width in SIZES["tasks"]:  # one flow per width, for the search across its runs
                with RunWriter(f"AuditTasks{width}Flow", ds_root, service_url=url) as w:
                    wide_run(w, width, failed={width - 1}, retried_ok={1})
            with RunWriter("AuditChainFlow", ds_root, service_url=url) as w:
                for steps in SIZES["steps"]:
                    out.setdefault("steps", {})[str(steps)] = {"run": f"AuditChainFlow/{chain_run(w, steps, tasks_per_step=2)}"}
            with RunWriter("AuditLogFlow", ds_root, service_url=url) as w:
                for lines in SIZES["log_lines"]:
                    run = log_run(w, lines)
                    out.setdefault("log_lines", {})[str(lines)] = {"task": f"AuditLogFlow/{run}/start/{_first_task(url, 'AuditLogFlow', run, 'start')}"}
            with RunWriter("AuditArtifactFlow", ds_root, service_url=url) as w:
                for nbytes in SIZES["artifact_bytes"]:
                    run = artifact_run(w, nbytes)
                    out.setdefault("artifact_bytes", {})[str(nbytes)] = {"task": f"AuditArtifactFlow/{run}/start/{_first_task(url, 'AuditArtifactFlow', run, 'start')}"}
    finally:
        set_clock(time.time)
    return out


def _first_task(url: str, flow: str, run: str, step: str) -> str:
    import requests

    rows = requests.get(f"{url}/flows/{flow}/runs/{run}/steps/{step}/tasks", timeout=10).json()
    return str(rows[0]["task_id"])


def case_args(usecase: str, dimension: str, data: dict[str, Any], size: str) -> dict[str, Any]:
    d = data[dimension][size]
    if usecase in ("failed_tasks",):
        return {"run": d["run"]}
    if usecase in ("latest_failed_runs",):
        return {"flow": d["flow"]}
    if usecase == "runs_in_range":
        return {"flow": d["flow"], "since_ms": d["since_ms"], "until_ms": d["until_ms"]}
    if usecase in ("log_tail", "artifact_metadata"):
        return {"task": d["task"]}
    if usecase == "artifact_search":
        return {"flow": d["flow"], "name": d["name"]}
    raise ValueError(usecase)


@contextmanager
def service_world(tmp: str | None = None) -> Iterator[dict[str, Any]]:
    """A double on 127.0.0.1, the audit's runs registered on it, and this process configured to read them:
    metaflow_agent through METAFLOW_* (read at call time), the Client through metaflow.metadata()."""
    sys.path.insert(0, str(REPO))
    from tests.service_double import ServiceDouble

    import metaflow

    root = Path(tmp or tempfile.mkdtemp(prefix="mfagent-audit-"))
    ds_root = str(root / ".metaflow")
    saved_env = {k: os.environ.get(k) for k in ("METAFLOW_DEFAULT_METADATA", "METAFLOW_SERVICE_URL", "METAFLOW_DATASTORE_SYSROOT_LOCAL",
                                                 "METAFLOW_DEFAULT_DATASTORE")}
    with ServiceDouble(mode="master") as double:
        data = build(double.url, ds_root, lambda c: setattr(double.store, "clock", c))
        os.environ.update(METAFLOW_DEFAULT_METADATA="service", METAFLOW_SERVICE_URL=double.url,
                          METAFLOW_DATASTORE_SYSROOT_LOCAL=str(root), METAFLOW_DEFAULT_DATASTORE="local")
        from metaflow.client import core

        previous = (core.current_metadata, getattr(core.current_metadata, "_INFO", None))
        metaflow.metadata(f"service@{double.url}")
        metaflow.namespace(None)
        try:
            yield {"double": double, "data": data, "root": str(root), "ds_root": ds_root}
        finally:
            from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

            ServiceMetadataProvider._INFO = None
            core.current_metadata = previous[0]
            if previous[0]:
                previous[0]._INFO = previous[1]
            metaflow.default_namespace()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            from metaflow_agent import reset_backends

            reset_backends()


def trace(world: dict[str, Any], plan: list[tuple[str, str]] = PLAN, modes: tuple[str, ...] = MODES) -> list[dict[str, Any]]:
    """Every (use case, dimension, size, mode, contender): counts by route and by file kind."""
    import shutil

    from benchmarks.measure import instrument_metaflow_client, measure, read_pattern, summarize, url_pattern
    from benchmarks.usecases import RUNNERS

    import metaflow_agent as ma
    from metaflow_agent import reset_backends

    double = world["double"]
    instrument_metaflow_client()
    probe = _probe(world["ds_root"])
    cache = tempfile.mkdtemp(prefix="mfagent-audit-cache-")
    out = []
    groups, started = len(modes) * len(plan), time.perf_counter()
    for mode in modes:
        double.mode = mode
        reset_backends()
        ma.capabilities()  # the one-time capability probe is not part of any question
        for usecase, dimension in plan:
            done = len({(t["mode"], t["usecase"], t["dimension"]) for t in out})
            print(f"audit: [{done + 1}/{groups}] {MODE_NAMES.get(mode, mode)} service, {usecase} by {dimension} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
            for size in [str(s) for s in SIZES[dimension]]:
                args = case_args(usecase, dimension, world["data"], size)
                for contender in ("naive", "ours"):
                    shutil.rmtree(cache, ignore_errors=True)
                    _cold_client_cache(cache)
                    seen = len(double.requests_seen)
                    res = measure(lambda: RUNNERS[contender](usecase, args), probe, own_meter=contender == "ours")
                    server_side = len(double.requests_seen) - seen
                    if res["error"]:
                        raise RuntimeError(f"{contender} {usecase} {dimension}={size} {mode}: {res['error']}")
                    if server_side != res["requests"]:
                        raise RuntimeError(f"transport counted {res['requests']} requests, the double saw {server_side}")
                    out.append({
                        "usecase": usecase, "dimension": dimension, "size": int(size), "mode": mode, "contender": contender,
                        "requests": res["requests"],
                        "response_bytes": res["response_bytes"],
                        "reads": res["files_read"],
                        "bytes_read": res["bytes_read"],
                        "output_bytes": res["output_bytes"],
                        "found": len(res["found"]),
                        "requests_by_route": summarize(res["request_log"], lambda r: (url_pattern(r[0], r[1]), r[3])),
                        "reads_by_file": summarize(res["read_log"], lambda r: (read_pattern(r[0]), r[1])),
                    })
    double.mode = "master"
    shutil.rmtree(cache, ignore_errors=True)
    return out


_PROBES: dict[str, Any] = {}


def _probe(ds_root: str) -> Any:
    """One audit hook per root per process (hooks cannot be removed)."""
    from benchmarks.measure import FileProbe

    if ds_root not in _PROBES:
        _PROBES[ds_root] = FileProbe(ds_root, keep_log=True)
    return _PROBES[ds_root]


def _cold_client_cache(path: str) -> None:
    """Point the Client's file cache at an empty folder (it caches blobs and data.json on disk)."""
    from metaflow.client import core

    os.makedirs(path, exist_ok=True)
    core.filecache = None  # rebuilt on next use
    from metaflow import metaflow_config

    metaflow_config.CLIENT_CACHE_PATH = path
    from metaflow.client import filecache

    filecache.CLIENT_CACHE_PATH = path


def counts(traces: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """What must not drift: per trace, request and read counts overall and by route / file kind."""
    return {
        (t["usecase"], t["dimension"], t["size"], t["mode"], t["contender"]): (
            t["requests"], t["reads"], tuple(sorted((k, v[0]) for k, v in t["requests_by_route"].items())),
            tuple(sorted((k, v[0]) for k, v in t["reads_by_file"].items())),
        )
        for t in traces
    }
