"""Runs written the way Metaflow writes them, without executing a flow.

Each task attempt goes through Metaflow's own code, in the order its runtime uses:
the metadata provider (`LocalMetadataProvider`, or `ServiceMetadataProvider` posting
to the metadata service's REST API) registers the run, the task and its system
metadata, the attempt's `attempt` / `ds-*` / `foreach-*` rows and `attempt_ok`;
Metaflow's `TaskDataStore` pickles and stores the artifacts (content-addressed,
gzip'd), the mflog-formatted logs, `<attempt>.data.json`, the DONE marker, and,
in `done()`, registers `attempt-done` and the artifact records. The runtime's
own exit record (`<attempt>.runtime`) is written as the runtime writes it.

So the Client API, `metaflow_agent` and any other reader see the same files and
rows a real run leaves (compare `tests/flows/wide_flow.py` runs), at the scale of
1,000-task foreachs and 2,000-run flows that would take an hour to execute.

Timestamps come from a synthetic clock (`SynthClock`) patched into the providers'
`time`: every call advances it by 1 ms (the local provider names metadata files
by millisecond, so rows of one task never collide), and runs are spread over
days, all well past the 360 s heartbeat cutoff.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time as _time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

MFLOG_SOURCE = "runtime"


class SynthClock:
    """A `time`-module stand-in whose `time()` moves 1 ms per call."""

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def time(self) -> float:
        self.now += 0.001
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


@contextlib.contextmanager
def clock_patched(clock: SynthClock) -> Iterator[None]:
    """Metaflow's providers and datastore read `time.time()`: give them the clock."""
    from metaflow.datastore import task_datastore
    from metaflow.metadata_provider import metadata
    from metaflow.plugins.metadata_providers import local

    modules = (local, metadata, task_datastore)
    saved = [m.time for m in modules]
    for m in modules:
        m.time = clock  # type: ignore[assignment]
    try:
        yield
    finally:
        for m, t in zip(modules, saved):
            m.time = t  # type: ignore[assignment]


class _Env:
    """The slice of MetaflowEnvironment the providers and the datastore call."""

    def __init__(self, script: str) -> None:
        self.script = script

    def get_environment_info(self, include_ext_info: bool = False) -> dict[str, str]:
        import metaflow

        return {
            "runtime": "dev",
            "python_version_code": platform.python_version(),
            "metaflow_version": metaflow.__version__,
            "script": self.script,
        }


class _Flow:
    def __init__(self, name: str) -> None:
        self.name = name


@dataclass
class Attempt:
    """How one attempt of a task ends: True ok, False raised, None killed (no outcome)."""

    ok: bool | None
    stdout_lines: int = 3
    message: str = "boom"
    seconds: float = 0.0  # how long it runs, on the writer's clock (RunWriter(clock=...))


@dataclass
class TaskSpec:
    step: str
    attempts: list[Attempt]
    artifacts: dict[str, Any] = field(default_factory=dict)
    foreach_index: int | None = None


def _graph_info(steps: list[str], retry: dict[str, int] | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `_graph_info` artifact every task carries, shaped like metaflow.graph's (retry decorators included)."""
    retry = retry or {}

    def decorators(step: str) -> list[dict[str, Any]]:
        if step not in retry:
            return []
        return [{"name": "retry", "attributes": {"times": retry[step], "minutes_between_retries": 0},
                 "statically_defined": True, "inserted_by": None}]

    return {
        "file": "synth_flow.py",
        "start_step": "start",
        "end_step": "end",
        "parameters": [{"name": k, "type": "Parameter"} for k in params or {}],
        "constants": [],
        "steps": {s: {"name": s, "type": "linear", "line": 10 + i, "doc": "", "decorators": decorators(s),
                      "next": steps[i + 1:i + 2], "node_info": {}} for i, s in enumerate(steps)},
        "graph_structure": steps,
        "doc": "",
        "decorators": [],
        "extensions": {},
    }


class RunWriter:
    """Writes runs of one flow through a metadata provider and Metaflow's datastore.

    clock: the patched SynthClock; attempts then last `Attempt.seconds` on it, and on the
    service the run and its tasks send heartbeats (Metaflow's own heartbeat request) at each
    attempt's start and end, as the runtime's and the task's heartbeat sidecars do.
    tracebacks: a failed attempt's stderr holds the exception's traceback and "Task failed.",
    as a real task's does (default: one "Task failed." line on stdout).
    launch_s: with a clock, the time from the runtime's registering a task (or starting a retry) to
    the task process's own first rows (`attempt`, ...): its start-up, about 1 s for a local process.
    """

    def __init__(self, flow: str, ds_root: str, *, service_url: str | None = None, user: str = "bench",
                 clock: SynthClock | None = None, tracebacks: bool = False, launch_s: float = 0.0) -> None:
        from metaflow.datastore import FlowDataStore
        from metaflow.plugins.datastores.local_storage import LocalStorage

        self.flow = flow
        self.clock = clock
        self.tracebacks = tracebacks
        self.launch_s = launch_s
        self.env = _Env(f"{flow.lower()}.py")
        self.ds_root = ds_root
        self.service_url = service_url
        self._restore: tuple | None = None
        if service_url:
            from metaflow.plugins.metadata_providers import service as module
            from metaflow.plugins.metadata_providers.service import (
                ServiceMetadataProvider,
            )

            # INFO is a metaclass property over _INFO (setting it pings the URL); close() restores both.
            self._restore = (ServiceMetadataProvider._INFO, module.SERVICE_URL)
            ServiceMetadataProvider._INFO = module.SERVICE_URL = service_url.rstrip("/")
            self.provider = ServiceMetadataProvider(self.env, _Flow(flow), None, None)
        else:
            from metaflow.plugins.metadata_providers.local import LocalMetadataProvider

            LocalStorage.datastore_root = ds_root
            self.provider = LocalMetadataProvider(self.env, _Flow(flow), None, None)
        self.flow_ds = FlowDataStore(flow, self.env, metadata=self.provider, storage_impl=LocalStorage, ds_root=ds_root)

    def close(self) -> None:
        """Give Metaflow back the service URL it had (the provider's URL is process-wide)."""
        if self._restore is not None:
            from metaflow.plugins.metadata_providers import service as module
            from metaflow.plugins.metadata_providers.service import (
                ServiceMetadataProvider,
            )

            ServiceMetadataProvider._INFO, module.SERVICE_URL = self._restore
            self._restore = None

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sys_tags(self) -> list[str]:
        return [f"{k}:{v}" for k, v in self.provider._get_system_info_as_dict().items()]

    # -- a run --------------------------------------------------------------------
    def new_run(self, tags: list[str] | None = None, steps: list[str] | None = None, retry: dict[str, int] | None = None,
                params: dict[str, Any] | None = None) -> str:
        """A run and its `_parameters` task; `steps` and `retry` (step -> @retry times) shape its graph info,
        `params` are the run's parameter values (artifacts of `_parameters`, as the runtime persists them)."""
        from metaflow.metadata_provider import MetaDatum

        self._graph = _graph_info(steps or ["start", "end"], retry, params)
        self.provider._task_id_seq = -1  # the local provider numbers tasks per run
        run = str(self.provider.new_run_id(tags=tags or [], sys_tags=self._sys_tags()))
        self._params_task(run, params or {})
        self.provider.register_metadata(run, "_parameters", self._last_params, [
            MetaDatum(field="start_step", value="start", type="start_step", tags=["attempt_id:0"]),
        ])
        return run

    def _params_task(self, run: str, params: dict[str, Any]) -> None:
        task = str(self.provider.new_task_id(run, "_parameters"))
        self._last_params = task
        ds = self.flow_ds.get_task_datastore(run, "_parameters", task, attempt=0, mode="w")
        ds.init_task()
        ds.save_artifacts(iter([*params.items(), ("name", self.flow), ("_task_ok", True), ("_success", True),
                                ("_graph_info", self._graph), ("_transition", None), ("_configs_processed", True),
                                ("_foreach_stack", [])]))
        ds.done()

    def _beat(self, run: str, step: str | None = None, task: str | None = None) -> None:
        """One heartbeat of the run (or of its task) through Metaflow's own heartbeat request."""
        if not (self.service_url and self.clock):
            return
        from metaflow.metadata_provider.heartbeat import (
            HeartBeatException,
            MetadataHeartBeat,
        )

        beat = MetadataHeartBeat()
        where = f"flows/{self.flow}/runs/{run}" + (f"/steps/{step}/tasks/{task}" if step else "")
        beat.hb_url = f"{self.service_url.rstrip('/')}/{where}/heartbeat"
        try:
            beat._heartbeat()
        except HeartBeatException:
            pass  # the service refuses beats under 10 s apart; the sidecar simply beats again later

    def task(self, run: str, spec: TaskSpec) -> str:
        """One task with its attempts, as the runtime and the task process write it."""
        from metaflow.exception import MetaflowExceptionWrapper
        from metaflow.metadata_provider import MetaDatum
        from metaflow.mflog.mflog import decorate

        p = self.provider
        task = str(p.new_task_id(run, spec.step))
        for n, att in enumerate(spec.attempts):
            tags = [f"attempt_id:{n}"]
            if self.clock is not None and self.launch_s:
                self.clock.advance(self.launch_s)  # the runtime starts the task's process; it registers once it runs
            p.register_task_id(run, spec.step, task, n)  # the task process registers itself again
            rows = [
                MetaDatum(field="attempt", value=str(n), type="attempt", tags=tags),
                MetaDatum(field="origin-run-id", value="None", type="origin-run-id", tags=tags),
                MetaDatum(field="ds-type", value="local", type="ds-type", tags=tags),
                MetaDatum(field="ds-root", value=self.ds_root, type="ds-root", tags=tags),
            ]
            if spec.foreach_index is not None:
                rows += [
                    MetaDatum(field="foreach-stack", value="{items=%d}" % spec.foreach_index, type="foreach-stack", tags=tags),
                    MetaDatum(field="foreach-execution-path", value="%s:%d" % (spec.step, spec.foreach_index), type="foreach-execution-path", tags=tags),
                ]
            p.register_metadata(run, spec.step, task, rows)
            ds = self.flow_ds.get_task_datastore(run, spec.step, task, attempt=n, mode="w")
            ds.init_task()
            ds.save_metadata({"task_begin": {"code_package_metadata": "", "code_package_sha": None, "code_package_ds": None,
                                             "code_package_url": None, "retry_count": n}})
            self._beat(run, spec.step, task)
            if self.clock is not None and att.seconds:
                self.clock.advance(att.seconds)
                self._beat(run, spec.step, task)
                self._beat(run)
            lines = [f"working on item {spec.foreach_index} attempt {n} line {i}" for i in range(att.stdout_lines)]
            errors: list[str] = []
            exc = None
            if att.ok is False:
                try:
                    raise ValueError(f"{att.message} item={spec.foreach_index}")
                except ValueError as e:
                    exc = MetaflowExceptionWrapper(e)
                    if self.tracebacks:
                        errors = "".join(traceback.format_exception(e)).splitlines() + ["", "Task failed."]
                if not self.tracebacks:
                    lines.append("Task failed.")
            stdout = b"".join(decorate(MFLOG_SOURCE, ln) + b"\n" for ln in lines)
            stderr = b"".join(decorate(MFLOG_SOURCE, ln) + b"\n" for ln in errors)
            ds.save_logs(MFLOG_SOURCE, {"stdout": stdout, "stderr": stderr})
            if att.ok is None:
                continue  # killed: nothing else is written, not even the runtime's exit record
            arts = {
                "name": self.flow,
                "_task_ok": att.ok,
                "_success": att.ok,
                "_exception": exc,
                "_current_step": spec.step,
                "_graph_info": self._graph,
                "_transition": None if att.ok is False else ([spec.step], None, None),
                "_configs_processed": True,
                "_foreach_stack": [] if spec.foreach_index is None else [(spec.foreach_index, 0, None)],
                "_foreach_num_splits": None,
                "_foreach_var": None,
                "_foreach_values": None,
                "_iteration_stack": [],
                **spec.artifacts,
            }
            ds.save_artifacts(iter(arts.items()))
            p.register_metadata(run, spec.step, task, [
                MetaDatum(field="attempt_ok", value=str(bool(att.ok)), type="internal_attempt_status", tags=tags),
            ])
            ds.save_metadata({"task_end": {}})
            ds.done()
            ds._dangerous_save_metadata_post_done({"runtime": {"return_code": 0 if att.ok else 1, "killed": False, "success": bool(att.ok)}})
        return task


# --- the shapes the benchmark and the audit use -----------------------------------------
def wide_run(w: RunWriter, width: int, failed: set[int], retried_ok: set[int], crashed: set[int] = frozenset(),
             stdout_lines: int = 3, fail_attempts: int = 2) -> str:
    """start → a foreach `work` of `width` tasks, no join/end (the runtime stopped on the failures),
    like the captured WideFlow runs. Failed tasks fail `fail_attempts` times (@retry)."""
    times = max(fail_attempts - 1, 1 if retried_ok else 0)  # failed tasks used up their retries
    run = w.new_run(steps=["start", "work", "join", "end"], retry={"work": times} if times else None)
    w.task(run, TaskSpec("start", [Attempt(True)], {"items": list(range(width))}))
    for i in range(width):
        if i in failed:
            atts = [Attempt(False, stdout_lines) for _ in range(fail_attempts)]
        elif i in retried_ok:
            atts = [Attempt(False, stdout_lines), Attempt(True, stdout_lines)]
        elif i in crashed:
            atts = [Attempt(None, stdout_lines)]
        else:
            atts = [Attempt(True, stdout_lines)]
        w.task(run, TaskSpec("work", atts, {"value": i * 2, "input": i}, foreach_index=i))
    return run


def simple_run(w: RunWriter, outcome: str, tags: list[str], model_bytes: int = 2048) -> str:
    """start → end: outcome 'ok', 'end_failed' (end raises) or 'killed' (no end step)."""
    run = w.new_run(tags=tags)
    w.task(run, TaskSpec("start", [Attempt(True)], {"greeting": "hello"}))
    if outcome != "killed":
        ok = outcome == "ok"
        arts = {"score": 0.5, "metrics": {"acc": 0.9, "loss": 0.1}, "model": os.urandom(model_bytes)} if ok else {}
        w.task(run, TaskSpec("end", [Attempt(ok)], arts))
    return run


def chain_run(w: RunWriter, steps: int, tasks_per_step: int = 1) -> str:
    """start → step1 → … : `steps` steps in a line, the last one failing (the runtime stopped there)."""
    names = ["start"] + [f"step{i}" for i in range(1, steps)]
    run = w.new_run(steps=names + ["end"])
    for k, name in enumerate(names):
        for _ in range(tasks_per_step):
            w.task(run, TaskSpec(name, [Attempt(k < steps - 1)], {"value": k}))
    return run


def log_run(w: RunWriter, lines: int) -> str:
    """start (printing `lines` lines) → end."""
    run = w.new_run()
    w.task(run, TaskSpec("start", [Attempt(True, stdout_lines=lines)]))
    w.task(run, TaskSpec("end", [Attempt(True)]))
    return run


def artifact_run(w: RunWriter, big_bytes: int) -> str:
    """start with one incompressible artifact of `big_bytes` and a few small ones → end."""
    run = w.new_run()
    arts = {"big": os.urandom(big_bytes), "config": {"lr": 0.01, "layers": [64, 32]}, "numbers": list(range(1000)), "note": "hello " * 50}
    w.task(run, TaskSpec("start", [Attempt(True)], arts))
    w.task(run, TaskSpec("end", [Attempt(True)], {"score": 0.93}))
    return run


MIX = (("killed", 26, 25), ("end_failed", 14, 13))  # (outcome, modulus, residue): ≈3.8% killed, ≈7.1% end failures


def run_outcome(i: int) -> str:
    for outcome, mod, res in MIX:
        if i % mod == res:
            return outcome
    return "ok"


def run_tags(i: int) -> list[str]:
    return [f"team:{'abc'[i % 3]}", f"env:{('prod', 'dev')[i % 2]}"]


def many_runs(w: RunWriter, n: int, clock: SynthClock, spacing_s: float) -> list[str]:
    """n runs with the captured SynthFlow mix, `spacing_s` apart on the synthetic clock."""
    runs = []
    for i in range(n):
        runs.append(simple_run(w, run_outcome(i), run_tags(i)))
        clock.advance(spacing_s)
    return runs
