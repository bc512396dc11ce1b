"""The runs the agent questions are asked about at size, written by Metaflow's own writers.

    python -m benchmarks.agent_questions.world local ROOT MANIFEST.json RUNS WIDTH
    python -m benchmarks.agent_questions.world service ROOT MANIFEST.json RUNS WIDTH ROWS.json

Four flows, through `benchmarks.synth.RunWriter` (Metaflow's metadata providers and
`TaskDataStore`), on a synthetic clock, each attempt lasting its own time:

- `TrainFlow`: 1,000 runs (RUNS), start → train (@retry times=1) → end, 30 minutes apart, with two
  parameters and a small `accuracy`; most complete, some fail in train (both attempts) or in end,
  some are killed in train (crashed), a few succeed on train's retry. The newest twelve are fixed so
  the last 3, 5 and 10 runs mix every outcome.
- `ForeachFlow`: one run, start → a 1,000-task (WIDTH) foreach `work` (16 at a time, @retry times=1): 8 tasks
  fail twice, one fails then succeeds; the runtime stopped there (no join).
- `PipelineFlow`: 3 completed runs of 8 steps (the flow with the most steps).
- `HelloFlow`: 4 runs of start → end, the newest killed in end (crashed).

On the service, the metadata goes to a service double through `ServiceMetadataProvider` (heartbeats
too), and its rows are then saved (ROWS.json) so later benchmark runs load them instead of
rebuilding; the datastore is local in both worlds.
"""

from __future__ import annotations

import heapq
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..synth import Attempt, RunWriter, SynthClock, TaskSpec, clock_patched

VERSION = 2  # bump when the world changes: a cached world of another version is rebuilt
TRAIN_FLOW, FOREACH_FLOW, PIPELINE_FLOW, HELLO_FLOW = "TrainFlow", "ForeachFlow", "PipelineFlow", "HelloFlow"
TRAIN_RUNS = 1000
WIDTH = 1000
LANES = 16  # foreach tasks running at once (--max-workers)
SPACING_S = 30 * 60
GAP_S = 1.0  # the runtime's pause between one task's end and the next task's registration
LAUNCH_S = 1.0  # a task's registration to its process's first rows (a local task process starts in ≈1.1 s)
PARAMS = ["learning_rate", "epochs"]
VALUE = "accuracy"
COMPARED = ["accuracy", "summary"]
# The newest TrainFlow runs, newest first: the last 3, 5 and 10 runs mix every outcome.
NEWEST = ["ok", "failed_train", "ok", "ok", "crashed", "ok", "retried", "failed_end", "ok", "ok", "crashed", "ok"]
FOREACH_FAILED_AT = (0.061, 0.187, 0.322, 0.455, 0.590, 0.702, 0.841, 0.968)  # of the width: 8 tasks fail twice
FOREACH_RETRIED_OK_AT = 0.5  # and this one fails, then succeeds


def train_outcome(i: int, n: int, rng: random.Random) -> str:
    """Run i of n of TrainFlow (0 the oldest): ≈84% ok, 5% fail in train, 3% in end, 4% crashed, 4% retried."""
    back = n - 1 - i
    if back < len(NEWEST):
        return NEWEST[back]
    r = rng.random()
    for outcome, upto in (("failed_train", 0.05), ("failed_end", 0.08), ("crashed", 0.12), ("retried", 0.16)):
        if r < upto:
            return outcome
    return "ok"


def _train_run(w: RunWriter, clock: SynthClock, i: int, outcome: str, rng: random.Random) -> str:
    params = {"learning_rate": round(0.001 * (1 + i % 7), 4), "epochs": 5 + (i % 4) * 5}
    run = w.new_run(tags=[f"team:{'abc'[i % 3]}"], steps=["start", "train", "end"], retry={"train": 1}, params=params)
    arts: dict[str, Any] = dict(params)
    arts.update(dataset=f"s3://data/v{i % 5}", rows=10_000 + i)
    clock.advance(GAP_S)
    w.task(run, TaskSpec("start", [Attempt(True, seconds=2 + 3 * rng.random())], dict(arts)))
    train_s = params["epochs"] * (8 + 6 * rng.random())
    accuracy = round(0.6 + 0.3 * rng.random(), 4)
    attempts = {
        "failed_train": [Attempt(False, seconds=train_s / 3, message="loss is NaN"), Attempt(False, seconds=train_s / 3, message="loss is NaN")],
        "crashed": [Attempt(None, seconds=train_s / 2)],
        "retried": [Attempt(False, seconds=train_s / 4, message="CUDA out of memory"), Attempt(True, seconds=train_s)],
    }.get(outcome, [Attempt(True, seconds=train_s)])
    ok = attempts[-1].ok is True
    if ok:
        arts.update(accuracy=accuracy, loss=round(1 - accuracy, 4), history=[round(accuracy * k / 5, 4) for k in range(1, 6)])
    clock.advance(GAP_S)
    w.task(run, TaskSpec("train", attempts, dict(arts)))
    if ok:
        arts["summary"] = {"accuracy": accuracy, "epochs": params["epochs"], "lr": params["learning_rate"]}
        end_ok = outcome != "failed_end"
        clock.advance(GAP_S)
        w.task(run, TaskSpec("end", [Attempt(end_ok, seconds=1 + 2 * rng.random(), message="could not publish")], arts))
    return run


def _foreach_run(w: RunWriter, clock: SynthClock, width: int, rng: random.Random) -> str:
    run = w.new_run(steps=["start", "work", "join", "end"], retry={"work": 1}, params={"width": width})
    clock.advance(GAP_S)
    w.task(run, TaskSpec("start", [Attempt(True, seconds=3)], {"width": width, "items": list(range(width))}))
    failed, retried_ok = {int(width * f) for f in FOREACH_FAILED_AT}, int(width * FOREACH_RETRIED_OK_AT)
    lanes = [clock.now + GAP_S] * LANES
    heapq.heapify(lanes)
    for i in range(width):
        clock.now = heapq.heappop(lanes)  # the next free worker: tasks overlap, as under --max-workers
        secs = 20 + 100 * rng.random()
        if i in failed:
            attempts = [Attempt(False, seconds=secs / 2, message="bad shard"), Attempt(False, seconds=secs / 2, message="bad shard")]
        elif i == retried_ok:
            attempts = [Attempt(False, seconds=secs / 2, message="connection reset"), Attempt(True, seconds=secs)]
        else:
            attempts = [Attempt(True, seconds=secs)]
        w.task(run, TaskSpec("work", attempts, {"width": width, "value": i * 2, "input": i}, foreach_index=i))
        heapq.heappush(lanes, clock.now + 0.5)
    clock.now = max(lanes)
    return run


def _pipeline_run(w: RunWriter, clock: SynthClock, rng: random.Random) -> str:
    steps = ["start", "extract", "clean", "features", "train", "evaluate", "publish", "end"]
    run = w.new_run(steps=steps, params={"source": "warehouse"})
    arts: dict[str, Any] = {"source": "warehouse"}
    for k, step in enumerate(steps):
        arts[f"{step}_rows"] = 1000 * (k + 1)
        clock.advance(GAP_S)
        w.task(run, TaskSpec(step, [Attempt(True, seconds=5 + 60 * rng.random())], dict(arts)))
    return run


def _hello_run(w: RunWriter, clock: SynthClock, killed: bool) -> str:
    run = w.new_run()
    clock.advance(GAP_S)
    w.task(run, TaskSpec("start", [Attempt(True, seconds=1.5)], {"greeting": "hello"}))
    clock.advance(GAP_S)
    w.task(run, TaskSpec("end", [Attempt(None if killed else True, seconds=1.0)], {"greeting": "hello"}))
    return run


def build(ds_root: str, *, train_runs: int = TRAIN_RUNS, width: int = WIDTH, service_url: str | None = None,
          set_clock: Callable[[Callable[[], float]], None] | None = None, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write the four flows under `ds_root` (and to the service at `service_url`); the manifest."""
    if train_runs < len(NEWEST) or width < 10:
        raise ValueError(f"at least {len(NEWEST)} runs and a width of 10")
    started = time.perf_counter()
    now = time.time()
    clock = SynthClock(now - train_runs * SPACING_S - 2 * 3600)
    if set_clock:
        set_clock(clock.time)
    rng = random.Random(10)
    manifest: dict[str, Any] = {"version": VERSION, "train_flow": TRAIN_FLOW, "train_runs": train_runs, "foreach_flow": FOREACH_FLOW,
                                "width": width, "params": PARAMS, "artifacts": COMPARED, "value": VALUE,
                                "flows": [TRAIN_FLOW, FOREACH_FLOW, PIPELINE_FLOW, HELLO_FLOW]}

    def writer(flow: str) -> RunWriter:
        return RunWriter(flow, ds_root, service_url=service_url, clock=clock, tracebacks=True, launch_s=LAUNCH_S)

    try:
        with clock_patched(clock):
            with writer(TRAIN_FLOW) as w:
                runs, outcomes = [], []
                for i in range(train_runs):
                    clock.now = now - (train_runs - i) * SPACING_S - 3600  # the newest run started 1.5 h ago
                    outcome = train_outcome(i, train_runs, rng)
                    runs.append(f"{TRAIN_FLOW}/{_train_run(w, clock, i, outcome, rng)}")
                    outcomes.append(outcome)
                    if (i + 1) % 100 == 0:
                        progress(f"{TRAIN_FLOW}: {i + 1} runs ({time.perf_counter() - started:.0f} s)")
            manifest["outcomes"] = {o: outcomes.count(o) for o in sorted(set(outcomes))}
            ok = [r for r, o in zip(runs, outcomes) if o == "ok"]
            manifest["compare"] = [ok[-2], ok[-1]]
            with writer(FOREACH_FLOW) as w:
                clock.now = now - 5 * 3600
                manifest["foreach_run"] = f"{FOREACH_FLOW}/{_foreach_run(w, clock, width, rng)}"
                progress(f"{FOREACH_FLOW}: a {width}-task foreach ({time.perf_counter() - started:.0f} s)")
            with writer(PIPELINE_FLOW) as w:
                for days in (3, 2, 1):
                    clock.now = now - days * 86400
                    _pipeline_run(w, clock, rng)
            with writer(HELLO_FLOW) as w:
                for k in range(4):
                    clock.now = now - (4 - k) * 1800
                    _hello_run(w, clock, killed=k == 3)
    finally:
        if set_clock:
            set_clock(time.time)
    manifest["build_seconds"] = round(time.perf_counter() - started, 1)
    manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return manifest


def service_rows(store: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of the service double's store, in the shapes its seeding loads back."""
    with store.lock:
        return {
            "flows": list(store.flows.values()),
            "runs": list(store.runs.values()),
            "steps": list(store.steps.values()),
            "tasks": list(store.tasks.values()),
            "metadata": [m for rows in store.metadata.values() for m in rows],
            "artifacts": [a for table in store.artifacts.values() for a in table.values()],
        }


# --- what the questions are asked about ----------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One question about one subject of the world (`subject` names it the same in every world)."""

    question: str
    args: dict[str, Any]
    subject: str


def cases(m: dict[str, Any]) -> list[Case]:
    """Every question, about the world's largest subjects (and the latest failure twice: a run, a foreach)."""
    train, runs = m["train_flow"], f"{m['train_flow']} ({m['train_runs']:,} runs)"
    foreach = f"the {m['foreach_flow']} run ({m['width']:,}-task foreach)"
    return [
        Case("list_flows", {}, "all flows"),
        Case("last_3_runs", {"flow": train}, runs),
        Case("step_breakdown", {"run": m["foreach_run"]}, foreach),
        Case("slowest_step", {"run": m["foreach_run"]}, foreach),
        Case("slowest_step_last_3", {"flow": train}, runs),
        Case("latest_failure", {"flow": train}, runs),
        Case("latest_failure", {"flow": m["foreach_flow"]}, foreach),
        Case("success_rate_last_10", {"flow": train}, runs),
        Case("counted_by_state", {"flow": train}, runs),
        Case("fastest_and_median_of_5_successful", {"flow": train}, runs),
        Case("several_flows", {}, "all flows"),
        Case("value_across_runs", {"flow": train, "name": m["value"]}, f"{runs}, `{m['value']}`"),
        Case("compare_two_runs", {"run_a": m["compare"][0], "run_b": m["compare"][1], "params": m["params"], "artifacts": m["artifacts"]},
             f"the 2 newest completed {train} runs"),
        Case("most_steps", {}, "all flows"),
    ]


def main(argv: list[str]) -> int:
    kind, root, out, runs, width = argv[:5]
    n, w = int(runs), int(width)
    say = lambda s: print(f"{kind}: {s}", file=sys.stderr, flush=True)  # noqa: E731
    if kind == "local":
        manifest = build(root, train_runs=n, width=w, progress=say)
    elif kind == "service":
        from tests.service_double import ServiceDouble

        with ServiceDouble(mode="master") as double:
            manifest = build(root, train_runs=n, width=w, service_url=double.url, set_clock=lambda c: setattr(double.store, "clock", c), progress=say)
            rows = service_rows(double.store)
        Path(argv[5]).write_text(json.dumps(rows, separators=(",", ":")))
        manifest["rows"] = {k: len(v) for k, v in rows.items()}
    else:
        raise SystemExit(f"unknown world {kind!r}: local or service")
    Path(out).write_text(json.dumps(manifest, indent=1))
    say(f"built in {manifest['build_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
