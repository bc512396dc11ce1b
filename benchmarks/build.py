"""The benchmark's registered runs, for one backend ("world").

    python -m benchmarks.build ROOT MANIFEST.json WIDTHS RUNS     # local metadata, in its own process

The service world is built in the benchmark's own process (`build_world(..., service_url=)`),
because the service double's clock must follow the synthetic clock while it registers.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

from .synth import (
    RunWriter,
    SynthClock,
    clock_patched,
    run_outcome,
    run_tags,
    simple_run,
    wide_run,
)

WIDE_FLOW = "BenchWideFlow"
SPACING_S = 40 * 60  # runs 40 minutes apart: 2,000 runs span 55 days, like the captured SynthFlow
WINDOW_RUNS = 39  # runs in the time window (the captured window held 39)


def many_flow(n: int) -> str:
    return f"ManyRuns{n}Flow"


def wide_failures(width: int) -> tuple[set[int], set[int]]:
    """(failed twice, failed then ok): 1 failure at 10 and 100, 8 at 1,000 (the captured runs 2, 3, 6)."""
    k = max(1, round(width * 0.008))
    return set(range(width - k, width)), {1}


def build_world(ds_root: str, widths: list[int], runs: list[int], *, service_url: str | None = None,
                set_clock: Callable[[Callable[[], float]], None] | None = None,
                progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    total_span = max(runs) * SPACING_S + 3600 * 24
    clock = SynthClock(time.time() - total_span - 3600)
    if set_clock:
        set_clock(clock.time)
    manifest: dict[str, Any] = {"wide": {}, "many": {}}
    with clock_patched(clock):
        w = RunWriter(WIDE_FLOW, ds_root, service_url=service_url)
        for width in widths:
            t0 = time.perf_counter()
            failed, retried = wide_failures(width)
            run = wide_run(w, width, failed, retried)
            manifest["wide"][str(width)] = {"run": f"{WIDE_FLOW}/{run}", "failed": len(failed), "retried_ok": len(retried)}
            progress(f"registered {WIDE_FLOW}/{run}: foreach of {width} ({time.perf_counter() - t0:.0f} s)")
            clock.advance(SPACING_S)
        for n in runs:
            t0 = time.perf_counter()
            flow = many_flow(n)
            clock.now = time.time() - n * SPACING_S - 3600  # each flow's newest run is an hour old
            w = RunWriter(flow, ds_root, service_url=service_url)
            starts = []

            for i in range(n):
                starts.append(int(clock.now * 1000))
                simple_run(w, run_outcome(i), run_tags(i))
                clock.advance(SPACING_S)
            k = n // 2
            manifest["many"][str(n)] = {
                "flow": flow,
                "runs": n,
                "since_ms": starts[k],
                "until_ms": starts[k + WINDOW_RUNS] - 1,
                "window_runs": WINDOW_RUNS,
            }
            progress(f"registered {n} runs of {flow} ({time.perf_counter() - t0:.0f} s)")
    if set_clock:
        set_clock(time.time)
    return manifest


if __name__ == "__main__":
    root, out, widths, nruns = sys.argv[1:5]
    m = build_world(root, [int(x) for x in widths.split(",") if x], [int(x) for x in nruns.split(",") if x],
                    progress=lambda s: print(s, file=sys.stderr, flush=True))
    with open(out, "w") as f:
        json.dump(m, f)
