"""The agent's questions (issue 10): how a scripted agent asks each one through the MCP tools,
and what the plain Metaflow Client API answers on the same runs.

One definition for both users: tests/test_agent_questions.py asks them on the small real test
runs, `python -m benchmarks.agent_questions` on a flow of 1,000 runs and a 1,000-task foreach.
A question is about `Args` (flow names, run pathspecs) that the caller picks for its runs.

`ask` returns the facts the agent extracted from the tool answers, `truth` the same facts from
the Client API (the caller sets `metaflow.namespace(None)` and the metadata it reads), `check`
lists where they differ (empty: equal). Everything returned is plain JSON.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

MAX_CALLS, MAX_BYTES = 2, 4096  # the bound per question
DURATION_TOL_S = 0.2  # run and step durations from exact metadata timestamps
# Durations the answer itself flags approximate (task times from the service's heartbeats, which
# are stored in whole seconds and at most every 10 s): one heartbeat period, plus the rounding.
HEARTBEAT_TOL_S = 11.0

Args = dict[str, Any]
Diffs = list[str]
TIMING = "timing: "  # starts every difference in a duration (the rest are differences in facts)


# --- the agent ----------------------------------------------------------------------------------
class ToolClient(Protocol):
    """What the agent needs of an MCP client session (`mcp.client.Client`)."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any: ...


class ToolError(Exception):
    """A tool answered with an error (its one-line text is the message)."""


@dataclass
class Call:
    """One tool call: what was asked, how many bytes came back, what it cost the server."""

    tool: str
    args: dict[str, Any]
    bytes: int
    error: str | None = None
    cost: dict[str, float] | None = None


@dataclass
class Agent:
    """A scripted agent: calls tools and counts what answering took (calls, bytes of tool output)."""

    client: ToolClient
    log: list[Call] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.log)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.log)

    def cost(self) -> dict[str, float]:
        """The `cost` of every answer, summed (calls that failed carry none)."""
        total: dict[str, float] = {}
        for c in self.log:
            for k, v in (c.cost or {}).items():
                total[k] = round(total.get(k, 0) + v, 1)
        return total

    async def ask(self, tool: str, **args: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, args)
        text = result.content[0].text
        call = Call(tool, args, len(text.encode()))
        self.log.append(call)
        if result.is_error:
            call.error = text
            raise ToolError(f"{tool}: {text}")
        data = json.loads(text)
        call.cost = data.get("cost")
        return data


# --- the Client API's side ---------------------------------------------------------------------------
def client_outcome(task: Any) -> str | None:
    """A Client `Task`'s outcome from its latest attempt's attempt_ok: completed, failed or
    crashed (started, no outcome); None when it never started."""
    if "attempt" not in task.metadata_dict:
        return None
    from metaflow import Task

    latest = task.current_attempt
    ok = (task if latest == 0 else Task(task.pathspec, attempt=latest)).metadata_dict.get("attempt_ok")
    return {"True": "completed", "False": "failed", None: "crashed"}[ok]


def client_run_state(run: Any) -> str:
    """A finished run's state by the Client API: completed when successful, failed when a task's
    latest attempt recorded attempt_ok False, else crashed (something died)."""
    if run.successful:
        return "completed"
    for step in run:
        for task in step:
            if client_outcome(task) == "failed":
                return "failed"
    return "crashed"


def newest_runs(flow: str, n: int | None = None) -> list[Any]:
    """A flow's runs by the Client, newest first (by created_at)."""
    from metaflow import Flow

    runs = sorted(Flow(flow).runs(), key=lambda r: r.created_at, reverse=True)
    return runs if n is None else runs[:n]


def client_run_seconds(run: Any) -> float | None:
    return (run.finished_at - run.created_at).total_seconds() if run.finished_at else None


def client_step_seconds(step: Any) -> float | None:
    """First task created to last task finished; None while a task has no outcome."""
    tasks = list(step)
    ends = [t.finished_at for t in tasks]
    if not tasks or any(e is None for e in ends):
        return None
    return (max(ends) - min(t.created_at for t in tasks)).total_seconds()


def client_steps(run: Any) -> list[Any]:
    return [s for s in run if s.id != "_parameters"]


def client_value(run: Any, name: str) -> Any:
    """An artifact's value in a run: the end task's (run.data), else the first task that saved it."""
    end = run.end_task
    if end is not None and name in end:
        return end[name].data
    for step in client_steps(run):
        for task in step:
            if name in task:
                return task[name].data
    return None


def client_rates(states: list[str]) -> list[float | None]:
    """[success rate, success rate among finished runs], rounded as run_stats rounds them."""
    over = [s for s in states if s in ("completed", "failed", "crashed")]
    return [round(states.count("completed") / len(states), 4) if states else None,
            round(over.count("completed") / len(over), 4) if over else None]


# --- checks ---------------------------------------------------------------------------------------------
def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def equal(got: Any, want: Any) -> Diffs:
    return [] if got == want else [f"agent {_short(got)} != Client {_short(want)}"]


def _close(what: str, got: float | None, want: float | None, tol: float) -> Diffs:
    if got is None or want is None:
        return [] if got is None and want is None else [f"{TIMING}{what}: agent {got} != Client {want}"]
    return [] if abs(got - want) <= tol else [f"{TIMING}{what}: agent {got} != Client {want:.3f} (off by {got - want:+.3f} s)"]


# --- the questions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    name: str
    text: str
    ask: Callable[[Agent, Args], Awaitable[Any]]
    truth: Callable[[Args], Any]
    check: Callable[[Any, Any], Diffs] = equal


async def ask_list_flows(agent: Agent, a: Args) -> Any:
    got = await agent.ask("list_flows", namespace=None)
    return sorted(f["flow"] for f in got["flows"])


def truth_list_flows(a: Args) -> Any:
    from metaflow import Metaflow

    return sorted(f.id for f in Metaflow().flows)


async def ask_last_3_runs(agent: Agent, a: Args) -> Any:
    got = await agent.ask("list_runs", flow=a["flow"], limit=3, namespace=None)
    return [[r["pathspec"], r["status"]] for r in got["runs"]]


def truth_last_3_runs(a: Args) -> Any:
    return [[r.pathspec, client_run_state(r)] for r in newest_runs(a["flow"], 3)]


def _approximate(summary: dict[str, Any]) -> bool:
    return any("approximate" in n for n in summary.get("notes") or [])


async def ask_step_breakdown(agent: Agent, a: Args) -> Any:
    got = await agent.ask("run_summary", run=a["run"])
    steps = {s["step"]: {"tasks": s["tasks"], "duration_s": s["duration_s"]} for s in got["steps"]}
    return {"steps": steps, "approximate": _approximate(got)}


def truth_step_breakdown(a: Args) -> Any:
    from metaflow import Run

    return {s.id: {"tasks": len(list(s)), "duration_s": client_step_seconds(s)} for s in client_steps(Run(a["run"]))}


def check_step_breakdown(got: Any, want: Any) -> Diffs:
    steps = got["steps"]
    if set(steps) != set(want):
        return [f"steps: agent {sorted(steps)} != Client {sorted(want)}"]
    tol = HEARTBEAT_TOL_S if got["approximate"] else DURATION_TOL_S
    diffs: Diffs = []
    for name, w in want.items():
        if steps[name]["tasks"] != w["tasks"]:
            diffs.append(f"{name}: agent {steps[name]['tasks']} tasks != Client {w['tasks']}")
        diffs += _close(f"{name} duration", steps[name]["duration_s"], w["duration_s"], tol)
    return diffs


def _slowest(durations: dict[str, float | None]) -> str | None:
    dated = {k: v for k, v in durations.items() if v is not None}
    return max(dated, key=lambda k: (dated[k], k)) if dated else None


async def ask_slowest_step(agent: Agent, a: Args) -> Any:
    got = await agent.ask("run_summary", run=a["run"])
    return _slowest({s["step"]: s["duration_s"] for s in got["steps"]})


def truth_slowest_step(a: Args) -> Any:
    from metaflow import Run

    return _slowest({s.id: client_step_seconds(s) for s in client_steps(Run(a["run"]))})


async def ask_slowest_step_last_3(agent: Agent, a: Args) -> Any:
    got = await agent.ask("run_stats", flows=a["flow"], last=3, per_step=True, namespace=None)
    return _slowest({name: s.get("max_s") for name, s in got["flows"][0]["steps"].items()})


def truth_slowest_step_last_3(a: Args) -> Any:
    per_step: dict[str, float | None] = {}
    for run in newest_runs(a["flow"], 3):
        for step in client_steps(run):
            d = client_step_seconds(step)
            if d is not None:
                per_step[step.id] = max(per_step.get(step.id) or 0.0, d)
    return _slowest(per_step)


async def ask_latest_failure(agent: Agent, a: Args) -> Any:
    runs = (await agent.ask("list_runs", flow=a["flow"], status="failed", limit=1, namespace=None))["runs"]
    if not runs:
        return {"run": None}
    got = await agent.ask("diagnose_run", run=runs[0]["pathspec"])
    return {"run": runs[0]["pathspec"], "status": got["status"], "total_failures": got["total_failures"],
            "failures": [{"pathspec": f["pathspec"], "exception": f["exception"], "log": f["log"]} for f in got["failures"]]}


def truth_latest_failure(a: Args) -> Any:
    run = next((r for r in newest_runs(a["flow"]) if client_run_state(r) == "failed"), None)
    if run is None:
        return {"run": None}
    failing = {}
    for step in client_steps(run):
        for task in step:
            if not task.successful:
                exc = task.exception
                failing[task.pathspec] = None if exc is None else [exc.type.rsplit(".", 1)[-1], str(exc.exception).strip("'")]
    return {"run": run.pathspec, "failing": failing}


def check_latest_failure(got: Any, want: Any) -> Diffs:
    if got["run"] != want["run"]:
        return [f"latest failed run: agent {got['run']} != Client {want['run']}"]
    if want["run"] is None:
        return []
    failing = want["failing"]
    diffs = [] if got["total_failures"] == len(failing) else [f"total_failures: agent {got['total_failures']} != Client {len(failing)}"]
    if not got["failures"]:
        diffs.append("no failure shown")
    for f in got["failures"]:
        if f["pathspec"] not in failing:
            diffs.append(f"{f['pathspec']} shown as a failure; the Client has it successful")
            continue
        exc = failing[f["pathspec"]]
        if exc is None:
            continue  # crashed: no exception recorded
        if (f["exception"] or "").split(":")[0] != exc[0]:
            diffs.append(f"{f['pathspec']}: exception agent {f['exception']!r} != Client {exc[0]}")
        if not any(exc[1] in line for line in f["log"]):
            diffs.append(f"{f['pathspec']}: the error {exc[1]!r} is in none of the {len(f['log'])} log lines shown")
    return diffs


async def ask_success_rate_last_10(agent: Agent, a: Args) -> Any:
    got = (await agent.ask("run_stats", flows=a["flow"], last=10, namespace=None))["flows"][0]
    return [got["success_rate"], got["finished_success_rate"]]


def truth_success_rate_last_10(a: Args) -> Any:
    return client_rates([client_run_state(r) for r in newest_runs(a["flow"], 10)])


STATES = ("running", "completed", "failed", "crashed", "unknown")


async def ask_counted_by_state(agent: Agent, a: Args) -> Any:
    got = (await agent.ask("run_stats", flows=a["flow"], namespace=None))["flows"][0]
    return {"counts": got["counts"], "complete": got["complete"]}


def truth_counted_by_state(a: Args) -> Any:
    states = [client_run_state(r) for r in newest_runs(a["flow"])]
    return {"counts": {s: states.count(s) for s in STATES}, "complete": True}


def _min_median(durations: list[float | None]) -> list[float | None]:
    dated = [d for d in durations if d is not None]
    return [min(dated), statistics.median(dated)] if dated else [None, None]


async def ask_fastest_and_median_of_5_successful(agent: Agent, a: Args) -> Any:
    got = await agent.ask("list_runs", flow=a["flow"], status="completed", limit=5, namespace=None)
    return {"runs": [r["pathspec"] for r in got["runs"]], "min_median": _min_median([r["duration_s"] for r in got["runs"]])}


def truth_fastest_and_median_of_5_successful(a: Args) -> Any:
    ok = []
    for run in newest_runs(a["flow"]):
        if run.successful:
            ok.append(run)
            if len(ok) == 5:
                break
    return {"runs": [r.pathspec for r in ok], "min_median": _min_median([client_run_seconds(r) for r in ok])}


def check_fastest_and_median(got: Any, want: Any) -> Diffs:
    diffs = equal(got["runs"], want["runs"])
    for what, g, w in zip(("fastest", "median"), got["min_median"], want["min_median"]):
        diffs += _close(what, g, w, DURATION_TOL_S)
    return diffs


async def ask_several_flows(agent: Agent, a: Args) -> Any:
    got = await agent.ask("list_flows", namespace=None)
    return {f["flow"]: [f["latest_run"], f["status"]] for f in got["flows"]}


def truth_several_flows(a: Args) -> Any:
    from metaflow import Metaflow

    out = {}
    for flow in Metaflow().flows:
        run = flow.latest_run
        out[flow.id] = [run.pathspec, client_run_state(run)] if run is not None else [None, None]
    return out


async def ask_value_across_runs(agent: Agent, a: Args) -> Any:
    got = await agent.ask("artifact_values", flow=a["flow"], name=a["name"], runs=3, order="oldest", namespace=None)
    return [[v["run"], v["value"]] for v in got["values"]]


def truth_value_across_runs(a: Args) -> Any:
    return [[r.pathspec, client_value(r, a["name"])] for r in reversed(newest_runs(a["flow"], 3))]


async def ask_compare_two_runs(agent: Agent, a: Args) -> Any:
    got = await agent.ask("compare_runs", run_a=a["run_a"], run_b=a["run_b"])
    return {"parameters": {d["name"]: [d["value_a"], d["value_b"]] for d in got["parameters"]},
            "artifacts": {d["name"]: [d["value_a"], d["value_b"]] for d in got["artifacts"] if d["name"] in a["artifacts"]}}


def truth_compare_two_runs(a: Args) -> Any:
    """The named parameters and artifacts whose values differ, with both values (`run.data`)."""
    from metaflow import Run

    da, db = Run(a["run_a"]).data, Run(a["run_b"]).data

    def differing(names: list[str]) -> dict[str, list[Any]]:
        pairs = {n: [getattr(da, n, None), getattr(db, n, None)] for n in names}
        return {n: json.loads(json.dumps(p)) for n, p in pairs.items() if p[0] != p[1]}  # tuples as the JSON lists the agent sees

    return {"parameters": differing(a["params"]), "artifacts": differing(a["artifacts"])}


async def ask_most_steps(agent: Agent, a: Args) -> Any:
    got = await agent.ask("list_flows", namespace=None)
    return max(got["flows"], key=lambda f: (f["steps"] or 0, f["flow"]))["flow"]


def truth_most_steps(a: Args) -> Any:
    """Steps of each flow's latest run."""
    from metaflow import Metaflow

    return {f.id: len(client_steps(f.latest_run)) if f.latest_run is not None else 0 for f in Metaflow().flows}


def check_most_steps(got: Any, want: Any) -> Diffs:
    top = max(want.values())
    return [] if want.get(got) == top else [f"agent {got} ({want.get(got)} steps) != Client {[f for f, n in want.items() if n == top]} ({top} steps)"]


QUESTIONS: list[Question] = [
    Question("list_flows", "list the flows", ask_list_flows, truth_list_flows),
    Question("last_3_runs", "the last 3 runs", ask_last_3_runs, truth_last_3_runs),
    Question("step_breakdown", "a run's per-step breakdown with durations", ask_step_breakdown, truth_step_breakdown,
             check_step_breakdown),
    Question("slowest_step", "the slowest step of a run", ask_slowest_step, truth_slowest_step),
    Question("slowest_step_last_3", "the slowest step across the last 3 runs", ask_slowest_step_last_3, truth_slowest_step_last_3),
    Question("latest_failure", "the latest failure with its error and the log lines around it", ask_latest_failure,
             truth_latest_failure, check_latest_failure),
    Question("success_rate_last_10", "the success rate of the last 10 runs, and among finished runs only",
             ask_success_rate_last_10, truth_success_rate_last_10),
    Question("counted_by_state", "all runs counted by state", ask_counted_by_state, truth_counted_by_state),
    Question("fastest_and_median_of_5_successful", "the fastest and the median duration of the last 5 successful runs",
             ask_fastest_and_median_of_5_successful, truth_fastest_and_median_of_5_successful, check_fastest_and_median),
    Question("several_flows", "the state of several flows at once", ask_several_flows, truth_several_flows),
    Question("value_across_runs", "an artifact across the last 3 runs, oldest first", ask_value_across_runs, truth_value_across_runs),
    Question("compare_two_runs", "two runs' parameters and small artifacts compared", ask_compare_two_runs, truth_compare_two_runs),
    Question("most_steps", "which flow has the most steps", ask_most_steps, truth_most_steps, check_most_steps),
]
BY_NAME = {q.name: q for q in QUESTIONS}
