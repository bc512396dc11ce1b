"""The audit's tracer: what each question and each function costs, observed request by request.

Two kinds of trace, on the data set of audit/world.py:

* questions: the naive Client API code an agent would write (benchmarks/usecases.py), with the
  counting transport mounted on Metaflow's own HTTP session and an audit hook on file opens
  (benchmarks/measure.py), on each service generation;
* functions: every function of `metaflow_agent.FUNCTIONS` (audit/functions.py), on each
  generation, without and with the query service, its requests and datastore reads from the
  library's own meter.

Each is asked at two or three sizes of one dimension (runs, flows, steps, tasks, attempts, log
size, artifact size) with everything else fixed, so the tables show how each route's count
grows. Every count is checked against the servers' own logs: the double's request log and the
query service's access log.

Used by `python -m audit` (writes traces.json and the README tables) and by
tests/test_audit_consistency.py (re-traces and compares with traces.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Iterable

from .functions import CASES, Case
from .world import SIZES, World, service_world  # noqa: F401  (service_world re-exported for the test)

MODES = ("master", "release-2.6.1", "release")
MODE_NAMES = {"master": "master", "release-2.6.1": "2.6.1", "release": "2.5.1"}

# (question, dimension, the function call that answers it): the naive code is traced here,
# metaflow_agent's answer is the function trace of that call.
QUESTIONS: list[tuple[str, str, str]] = [
    ("latest_failed_runs", "runs", "list_runs(flow, status='failed', limit=10)"),
    ("runs_in_range", "runs", "list_runs(flow, since=…, until=…, limit=100)"),
    ("failed_tasks", "tasks", "failed_tasks(run)"),
    ("failed_tasks", "steps", "failed_tasks(run)"),
    ("failed_tasks", "attempts", "failed_tasks(run)"),
    ("artifact_metadata", "artifact_bytes", "list_artifacts(task)"),
    ("log_tail", "log_lines", "task_logs(task, tail=50)"),
    ("artifact_search", "runs", "search_artifacts(flow, name='model', runs=10)"),
    ("artifact_search", "tasks", "search_artifacts(flow, name='value', runs=10)"),
]
PLAN = [(q, d) for q, d, _ in QUESTIONS]

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def question_args(usecase: str, dimension: str, data: dict[str, Any], size: str) -> dict[str, Any]:
    d = data[dimension][size]
    if usecase == "failed_tasks":
        return {"run": d["run"]}
    if usecase == "latest_failed_runs":
        return {"flow": d["flow"]}
    if usecase == "runs_in_range":
        return {"flow": d["flow"], "since_ms": d["since_ms"], "until_ms": d["until_ms"]}
    if usecase in ("log_tail", "artifact_metadata"):
        return {"task": d["task"]}
    if usecase == "artifact_search":
        return {"flow": d["flow"], "name": d["name"]}
    raise ValueError(usecase)


# --- the naive Client API code ---------------------------------------------------------------
def trace_questions(world: World, modes: tuple[str, ...] = MODES, progress: Progress = _stderr) -> list[dict[str, Any]]:
    """The naive code of every question, size and generation: counts by route and by file kind."""
    from benchmarks.measure import instrument_metaflow_client, measure, read_pattern, url_pattern
    from benchmarks.usecases import RUNNERS

    double = world.double
    instrument_metaflow_client()
    probe = _probe(world.ds_root)
    cache = tempfile.mkdtemp(prefix="mfagent-audit-cache-")
    restore = _client_cache_path()
    out: list[dict[str, Any]] = []
    try:
        for mode in modes:
            double.mode = mode
            progress(f"audit: naive Client code on the {MODE_NAMES[mode]} service, {sum(len(SIZES[d]) for _, d in PLAN)} questions")
            for usecase, dimension in PLAN:
                for size in [str(s) for s in SIZES[dimension]]:
                    args = question_args(usecase, dimension, world.data, size)
                    shutil.rmtree(cache, ignore_errors=True)
                    _cold_client_cache(cache)
                    seen = len(double.requests_seen)
                    res = measure(lambda: RUNNERS["naive"](usecase, args), probe, own_meter=False)
                    server_side = len(double.requests_seen) - seen
                    if res["error"]:
                        raise RuntimeError(f"naive {usecase} {dimension}={size} {mode}: {res['error']}")
                    if server_side != res["requests"]:
                        raise RuntimeError(f"naive {usecase}: transport counted {res['requests']} requests, the double saw {server_side}")
                    out.append({
                        "usecase": usecase, "dimension": dimension, "size": int(size), "mode": mode,
                        "requests": res["requests"], "response_bytes": res["response_bytes"], "reads": res["files_read"],
                        "bytes_read": res["bytes_read"], "found": len(res["found"]),
                        "requests_by_route": _by_pattern(res["request_log"], lambda r: (url_pattern(r[0], r[1]), r[3])),
                        "reads_by_file": _by_pattern(res["read_log"], lambda r: (read_pattern(r[0]), r[1])),
                    })
    finally:
        double.mode = "master"
        _cold_client_cache(restore, create=False)  # later Client users of this process get their own cache back
        shutil.rmtree(cache, ignore_errors=True)
    return out


# --- metaflow_agent's functions ---------------------------------------------------------------
def _configure(world: World, qs: bool, env: dict[str, str | None] | None = None) -> None:
    """Point the library at the query service (or not) and forget cached backends and probes."""
    import metaflow_agent as ma

    os.environ["METAFLOW_AGENT_QUERY_SERVICE_URL"] = world.qs.url if qs and world.qs is not None else "off"
    for k, v in (env or {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    ma.reset_backends()


def _by_pattern(items: Iterable[Any], key: Callable[[Any], tuple[str, int]]) -> dict[str, list[int]]:
    """pattern -> [count, bytes], most frequent first."""
    out: dict[str, list[int]] = {}
    for item in items:
        pattern, nbytes = key(item)
        slot = out.setdefault(pattern, [0, 0])
        slot[0] += 1
        slot[1] += nbytes
    return dict(sorted(out.items(), key=lambda kv: -kv[1][0]))


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _trace_call(world: World, case: Case, size: str, mode: str, qs: bool) -> dict[str, Any]:
    from benchmarks.measure import read_pattern, url_pattern

    import metaflow_agent as ma

    double = world.double
    args = world.data[case.dimension][size]
    if case.cold or case.env:
        _configure(world, qs, case.env)
    seen_double = len(double.requests_seen)
    seen_qs = len(world.qs.requests_seen()) if qs and world.qs is not None else 0
    with ma.metered() as meter:
        result = case.run(args)
    to_double = [r for r in meter.requests if r.url.startswith(double.url + "/")]
    to_qs = [r for r in meter.requests if qs and world.qs is not None and r.url.startswith(world.qs.server.url + "/")]
    label = f"{case.call} by {case.dimension}={size} on {MODE_NAMES[mode]}{' with the query service' if qs else ''}"
    if len(to_double) + len(to_qs) != meter.metadata_requests or len(meter.requests) != meter.metadata_requests:
        raise RuntimeError(f"{label}: {meter.metadata_requests} requests counted, {len(to_double) + len(to_qs)} logged to known servers")
    if len(double.requests_seen) - seen_double != len(to_double):
        raise RuntimeError(f"{label}: transport counted {len(to_double)} requests to the metadata service, "
                           f"the double saw {len(double.requests_seen) - seen_double}")
    if qs and world.qs is not None:
        qs_proc = world.qs
        served = _settled(lambda: len(qs_proc.requests_seen()) - seen_qs, len(to_qs))
        if served != len(to_qs):
            raise RuntimeError(f"{label}: transport counted {len(to_qs)} requests to the query service, its access log has {served}")
    if case.cold or case.env:  # back to the primed state of the other calls
        _configure(world, qs)
        ma.capabilities()
    reads = list(meter.reads)
    return {
        "function": case.function, "call": case.call, "dimension": case.dimension, "size": int(size), "mode": mode, "qs": qs,
        "requests": meter.metadata_requests, "response_bytes": meter.metadata_bytes,
        "reads": meter.datastore_reads, "bytes_read": meter.datastore_bytes,
        "requests_by_route": _by_pattern([(r.method, r.url, r.status, r.bytes) for r in meter.requests],
                                       lambda r: (url_pattern(r[0], r[1]), r[3])),
        "reads_by_file": _by_pattern(reads, lambda r: (read_pattern(r[0]), r[1])),
        "answer": _digest(case.answer(result)) if case.answer else None,
        "_answer": case.answer(result) if case.answer else None,  # dropped before saving; shown when answers differ
    }


def _settled(count: Callable[[], int], want: int, wait_s: float = 2.0) -> int:
    """A log count, re-read briefly until it reaches `want` (the server writes its log line as it answers)."""
    deadline = time.monotonic() + wait_s
    got = count()
    while got < want and time.monotonic() < deadline:
        time.sleep(0.02)
        got = count()
    return got


def trace_functions(world: World, modes: tuple[str, ...] = MODES, cases: Iterable[Case] = CASES, *,
                    query_service: bool | None = None, progress: Progress = _stderr) -> list[dict[str, Any]]:
    """Every case at every size, on every generation, without and (when the world has one) with the
    query service. The flows dimension's second size is traced after the world grows its flows."""
    import metaflow_agent as ma

    cases = list(cases)
    passes = [False] + ([True] if world.qs is not None and query_service is not False else [])
    if query_service is True:
        passes = [True]
    first = {d: [str(s) for s in sizes[:1]] if d == "flows" else [str(s) for s in sizes] for d, sizes in SIZES.items()}
    later = {"flows": [str(s) for s in SIZES["flows"][1:]]}
    out: list[dict[str, Any]] = []
    for phase, sizes in enumerate((first, later)):
        if phase == 1:
            if not any(c.dimension in later for c in cases):
                break
            if len(world.data["flows"]["names"]) < SIZES["flows"][1]:
                world.grow_flows()
        for qs in passes:
            for mode in modes:
                world.double.mode = mode
                _configure(world, qs)
                ma.capabilities()  # the one-time probes are not part of any call (cold cases excepted)
                todo = [c for c in cases if c.dimension in sizes and (c.query_service or not qs)]
                what = "" if phase == 0 else f" after adding {SIZES['flows'][1] - SIZES['flows'][0]} flows"
                progress(f"audit: metaflow_agent on the {MODE_NAMES[mode]} service, {'with' if qs else 'without'} the query service, "
                         f"{sum(len(sizes[c.dimension]) for c in todo)} call{'s' if sum(len(sizes[c.dimension]) for c in todo) != 1 else ''}{what}")
                for case in todo:
                    for size in sizes[case.dimension]:
                        out.append(_trace_call(world, case, size, mode, qs))
    world.double.mode = "master"
    _configure(world, False)
    return out


def disagreements(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls whose answer differs between generations or with the query service (same data)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for t in traces:
        if t.get("answer") is not None:
            groups.setdefault((t["call"], t["dimension"], t["size"]), []).append(t)
    out = []
    for (call, dim, size), rows in groups.items():
        if len({r["answer"] for r in rows}) > 1:
            by: dict[str, list[str]] = {}
            for r in rows:
                by.setdefault(r["answer"], []).append(MODE_NAMES[r["mode"]] + (" + query service" if r["qs"] else ""))
            answers = {r["answer"]: r.get("_answer") for r in rows}
            out.append({"call": call, "dimension": dim, "size": size, "answers": {h: {"where": w, "answer": answers[h]} for h, w in by.items()}})
    return out


def strip(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if not k.startswith("_")} for t in traces]


_PROBES: dict[str, Any] = {}


def _probe(ds_root: str) -> Any:
    """One audit hook per root per process (hooks cannot be removed)."""
    from benchmarks.measure import FileProbe

    if ds_root not in _PROBES:
        _PROBES[ds_root] = FileProbe(ds_root, keep_log=True)
    return _PROBES[ds_root]


def _client_cache_path() -> str:
    from metaflow.client import filecache

    return str(filecache.CLIENT_CACHE_PATH)


def _cold_client_cache(path: str, *, create: bool = True) -> None:
    """Point the Client's file cache at an empty folder (it caches blobs and data.json on disk)."""
    from metaflow.client import core

    if create:
        os.makedirs(path, exist_ok=True)
    core.filecache = None  # rebuilt on next use
    from metaflow import metaflow_config

    metaflow_config.CLIENT_CACHE_PATH = path
    from metaflow.client import filecache

    filecache.CLIENT_CACHE_PATH = path


def question_counts(traces: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """What must not drift: per naive trace, request and read counts overall and by route / file kind."""
    return {
        (t["usecase"], t["dimension"], t["size"], t["mode"]): (
            t["requests"], t["reads"], tuple(sorted((k, v[0]) for k, v in t["requests_by_route"].items())),
            tuple(sorted((k, v[0]) for k, v in t["reads_by_file"].items())),
        )
        for t in traces
    }


def function_counts(traces: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """What must not drift: per function trace, request and read counts overall and by route / file kind."""
    return {
        (t["call"], t["dimension"], t["size"], t["mode"], t["qs"]): (
            t["requests"], t["reads"], tuple(sorted((k, v[0]) for k, v in t["requests_by_route"].items())),
            tuple(sorted((k, v[0]) for k, v in t["reads_by_file"].items())),
        )
        for t in traces
    }


def trace_endpoints(world: World, progress: Progress = _stderr) -> list[dict[str, Any]]:
    """Query-service endpoints the library does not use yet, called directly: requests, bytes, rows."""
    from benchmarks.measure import url_pattern

    import metaflow_agent as ma

    from .gaps import endpoint_calls

    qs = world.qs
    if qs is None:
        return []
    out = []
    progress("audit: query-service endpoints the library does not use, called directly")
    for call, dimension, fn in endpoint_calls():
        for size in [str(s) for s in SIZES[dimension]]:
            seen = len(qs.requests_seen())
            with ma.metered() as meter:
                body = fn(qs.url, world.data[dimension][size])
            served = _settled(lambda: len(qs.requests_seen()) - seen, meter.metadata_requests)
            if served != meter.metadata_requests:
                raise RuntimeError(f"{call}: transport counted {meter.metadata_requests} requests, the query service logged {served}")
            out.append({"call": call, "dimension": dimension, "size": int(size), "requests": meter.metadata_requests,
                        "response_bytes": meter.metadata_bytes, "rows": len(body.get("data", [])),
                        "requests_by_route": _by_pattern([(r.method, r.url, r.status, r.bytes) for r in meter.requests],
                                                       lambda r: (url_pattern(r[0], r[1]), r[3]))})
    return out
