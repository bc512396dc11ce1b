"""One contender of the local section in its own process: time each question, then count its files.

    python -m benchmarks.localworker PLAN.json
    PEER-VENV/bin/python benchmarks/localworker.py PLAN.json   # the peer: a script, so the repository
                                                              # is not on sys.path when Metaflow loads

For each case: one untimed answer (imports, the page cache, the answer kept for comparison),
then `reps` timed answers (median reported) within `budget_s`; with `cold_reps`, more answers
each after evicting the flow's files from the page cache (`POSIX_FADV_DONTNEED` on every file:
file data goes cold, the kernel's dentry and inode caches stay warm, that needs root). Files
are counted last, by the audit-hook probe installed only then, so no timed answer pays for it.
The Client's on-disk cache is emptied before every naive answer. One JSON line per case.
The floor's process never imports Metaflow (checked).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import time
from typing import Any, Callable, Iterator


def evict(list_path: str, folder: str) -> int:
    """Drop the folder's file data from the page cache; the file list is kept beside the world."""
    if not os.path.exists(list_path):
        with open(list_path + ".tmp", "w") as out:
            for d, _, files in os.walk(folder):
                for f in files:
                    out.write(os.path.join(d, f) + "\n")
        os.replace(list_path + ".tmp", list_path)
    n = 0
    with open(list_path) as paths:
        for line in paths:
            try:
                fd = os.open(line[:-1], os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def _exact_bytes(contender: str) -> Callable[[], Any]:
    """Bytes actually read, where the contender reads by range: metaflow_agent's own meter, the floor's counter.
    The naive Client reads whole files: the probe's size-at-open is exact for it."""

    @contextlib.contextmanager
    def none() -> Iterator[dict[str, int]]:
        yield {}

    @contextlib.contextmanager
    def ours() -> Iterator[dict[str, int]]:
        from metaflow_agent import metered

        got: dict[str, int] = {}
        with metered() as meter:
            yield got
        got["bytes"] = meter.datastore_bytes

    @contextlib.contextmanager
    def floor() -> Iterator[dict[str, int]]:
        from benchmarks.floor import READ

        got: dict[str, int] = {}
        before = READ["bytes"]
        yield got
        got["bytes"] = READ["bytes"] - before

    return {"ours": ours, "floor": floor}.get(contender, none)


def _timed(fn: Callable[[], Any], before: Callable[[], None], reps: int, budget_s: float) -> tuple[list[float], list[float]]:
    """Wall and CPU (this process's user + system) milliseconds of up to `reps` answers within the budget.
    CPU time does not count waiting for a CPU, which the shared machine's load adds to wall time."""
    wall: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(wall) < reps and (not wall or time.perf_counter() - started < budget_s):
        before()
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    contender = plan["contender"]
    if contender == "peer":
        import metaflow  # noqa: F401  (first: its extensions come from the peer's own environment)
    sys.path.insert(0, plan["repo"])
    from benchmarks.localcases import floor_runner, run_naive, run_ours, run_peer

    clear: Callable[[], None] = lambda: None
    runner: Callable[[str, dict[str, Any]], tuple[str, list]]
    if contender in ("naive", "peer"):
        from metaflow import namespace

        namespace(None)  # every user's runs
        cache = plan["client_cache"]

        def clear() -> None:
            from metaflow.client import core

            shutil.rmtree(cache, ignore_errors=True)
            os.makedirs(cache, exist_ok=True)
            core.filecache = None

        runner = run_naive if contender == "naive" else run_peer
    elif contender == "ours":
        runner = run_ours
    else:
        runner = floor_runner(plan["datastore_root"])
    ds_root = plan["datastore_root"]
    for case in plan["cases"]:
        args = case["args"]
        flow_dir = os.path.join(ds_root, case["flow"])
        res: dict[str, Any] = {"id": case["id"], "contender": contender, "error": None}
        try:
            clear()
            text, found = runner(case["question"], args)  # untimed: warms imports and the page cache
            res.update(output_bytes=len(text.encode()), found=found)
            if text.startswith("{") and '"error"' in text[:40]:  # the peer's tools answer errors as text
                body = json.loads(text)
                if isinstance(body, dict) and "error" in body:
                    res["error"] = f"answered an error: {body.get('error')}: {str(body.get('message'))[:200]}"
            warm, cpu = _timed(lambda: runner(case["question"], args), clear, plan["reps"], plan["budget_s"])
            res.update(warm_ms=[round(t, 2) for t in warm], wall_ms=round(statistics.median(warm), 2), cpu_ms=round(statistics.median(cpu), 2))
            if plan.get("cold_reps"):
                list_path = os.path.join(plan["cache"], f"files-{case['flow']}.txt")
                os.sync()  # only clean pages can be evicted

                def cold_before() -> None:
                    clear()
                    evict(list_path, flow_dir)

                cold, _ = _timed(lambda: runner(case["question"], args), cold_before, plan["cold_reps"], plan["budget_s"])
                res.update(cold_ms=[round(t, 2) for t in cold], cold_wall_ms=round(statistics.median(cold), 2))
        except Exception as exc:  # a contender that fails is a result
            res["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        res["load"] = os.getloadavg()[0]
        print(json.dumps(res, default=str), flush=True)
    # Files, listings and bytes: one more answer per case under the audit-hook probe.
    # The package's lazy __init__ imports nothing heavy: the floor stays Metaflow-free (checked below).
    from metaflow_agent.demo.fileprobe import FileProbe

    probe = FileProbe(ds_root, keep_log=False)
    exact = _exact_bytes(contender)
    for case in plan["cases"]:
        clear()
        with probe.measure() as m, exact() as got:
            try:
                runner(case["question"], case["args"])
            except Exception:
                pass
        print(json.dumps({"id": case["id"], "contender": contender, "counts": True, "opens": m.opens, "listings": m.listings,
                          "bytes": got.get("bytes", m.bytes), "bytes_at_open": m.bytes}), flush=True)
    if contender == "floor":
        print(json.dumps({"floor_imported_metaflow": "metaflow" in sys.modules}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
