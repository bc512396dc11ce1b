"""A scripted agent (no LLM) asks the common Metaflow questions through the MCP tools, on the
real test runs: every question in at most 2 tool calls and 4 KB of tool output, every answer
equal to the plain Client API's on the same runs."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

pytest.importorskip("mcp")

from helpers import client_run_state  # noqa: E402
from mcp.client import Client  # noqa: E402

from mcp_server import build_server  # noqa: E402

pytestmark = pytest.mark.anyio
MAX_CALLS, MAX_BYTES = 2, 4096


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Agent:
    """Counts what answering one question took: tool calls and bytes of tool output."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls = 0
        self.bytes = 0

    async def ask(self, tool: str, **args: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, args)
        text = result.content[0].text
        self.calls += 1
        self.bytes += len(text.encode())
        assert not result.is_error, text
        return json.loads(text)


@pytest.fixture
def truth(local_runs, client_ns) -> Any:
    import metaflow

    client_ns(None)
    return metaflow


def _client_duration(run: Any) -> float:
    return (run.finished_at - run.created_at).total_seconds()


def _client_step_seconds(step: Any) -> float:
    tasks = list(step)
    return (max(t.finished_at for t in tasks) - min(t.created_at for t in tasks)).total_seconds()


async def q_list_flows(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("list_flows", namespace=None)
    assert {f["flow"] for f in got["flows"]} == {f.id for f in m.Metaflow().flows}


async def q_last_3_runs(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("list_runs", flow="HelloFlow", limit=3, namespace=None)
    newest = sorted(m.Flow("HelloFlow").runs(), key=lambda r: r.created_at, reverse=True)[:3]
    assert [(r["pathspec"], r["status"]) for r in got["runs"]] == [(r.pathspec, client_run_state(r)) for r in newest]


async def q_step_breakdown(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("run_summary", run=runs.retry)
    run = m.Run(runs.retry)
    steps = {s["step"]: s for s in got["steps"]}
    assert set(steps) == {s.id for s in run if s.id != "_parameters"}
    for step in run:
        if step.id != "_parameters":
            assert steps[step.id]["tasks"] == len(list(step)) and steps[step.id]["duration_s"] is not None


async def q_slowest_step(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("run_summary", run=runs.log)
    slowest = max(got["steps"], key=lambda s: s["duration_s"])["step"]
    run = m.Run(runs.log)
    assert slowest == max((s for s in run if s.id != "_parameters"), key=_client_step_seconds).id


async def q_slowest_step_last_3(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("run_stats", flows="ArtifactFlow", last=3, per_step=True, namespace=None)
    steps = got["flows"][0]["steps"]
    slowest = max(steps, key=lambda s: steps[s]["max_s"])
    newest = sorted(m.Flow("ArtifactFlow").runs(), key=lambda r: r.created_at, reverse=True)[:3]
    per_step: dict[str, float] = {}
    for run in newest:
        for step in run:
            if step.id != "_parameters":
                per_step[step.id] = max(per_step.get(step.id, 0.0), _client_step_seconds(step))
    assert slowest == max(per_step, key=per_step.__getitem__)


async def q_latest_failure(agent: Agent, runs: Any, m: Any) -> None:
    latest = (await agent.ask("list_runs", flow="HelloFlow", status="failed", limit=1, namespace=None))["runs"][0]
    got = await agent.ask("diagnose_run", run=latest["pathspec"])
    run = m.Run(latest["pathspec"])
    failing = [t for s in run for t in s if s.id != "_parameters" and not t.successful]
    assert latest["pathspec"] == runs.hello_failed
    failure = got["failures"][0]
    assert failure["pathspec"] == failing[0].pathspec
    assert failure["exception"].split(":")[0] == failing[0].exception.type.rsplit(".", 1)[-1]
    assert any(str(failing[0].exception.exception).strip("'") in line for line in failure["log"])


async def q_success_rate_last_10(agent: Agent, runs: Any, m: Any) -> None:
    got = (await agent.ask("run_stats", flows="HelloFlow", last=10, namespace=None))["flows"][0]
    newest = sorted(m.Flow("HelloFlow").runs(), key=lambda r: r.created_at, reverse=True)[:10]
    states = [client_run_state(r) for r in newest]
    assert got["success_rate"] == round(states.count("completed") / len(states), 4)
    over = [s for s in states if s in ("completed", "failed", "crashed")]
    assert got["finished_success_rate"] == round(over.count("completed") / len(over), 4)


async def q_counted_by_state(agent: Agent, runs: Any, m: Any) -> None:
    got = (await agent.ask("run_stats", flows="WideFlow", namespace=None))["flows"][0]
    states = [client_run_state(r) for r in m.Flow("WideFlow").runs()]
    assert got["counts"] == {s: states.count(s) for s in ("running", "completed", "failed", "crashed", "unknown")}
    assert got["complete"] is True


async def q_fastest_and_median_of_5_successful(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("list_runs", flow="HelloFlow", status="completed", limit=5, namespace=None)
    durations = [r["duration_s"] for r in got["runs"]]
    ok = sorted((r for r in m.Flow("HelloFlow").runs() if r.successful), key=lambda r: r.created_at, reverse=True)[:5]
    want = [_client_duration(r) for r in ok]
    assert min(durations) == pytest.approx(min(want), abs=0.2)
    assert statistics.median(durations) == pytest.approx(statistics.median(want), abs=0.2)


async def q_several_flows(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("list_flows", namespace=None)
    for row in got["flows"]:
        assert row["status"] == client_run_state(m.Flow(row["flow"]).latest_run)


async def q_value_across_runs(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("artifact_values", flow="ArtifactFlow", name="score", runs=3, order="oldest", namespace=None)
    oldest_first = sorted(m.Flow("ArtifactFlow").runs(), key=lambda r: r.created_at)[-3:]
    assert [(v["run"], v["value"]) for v in got["values"]] == [(r.pathspec, r.data.score) for r in oldest_first]


async def q_compare_two_runs(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("compare_runs", run_a=runs.art_a, run_b=runs.art_b)
    a, b = m.Run(runs.art_a).data, m.Run(runs.art_b).data
    params = {d["name"]: (d["value_a"], d["value_b"]) for d in got["parameters"]}
    assert params == {"alpha": (a.alpha, b.alpha)}
    arts = {d["name"]: (d["value_a"], d["value_b"]) for d in got["artifacts"]}
    assert arts["score"] == (a.score, b.score) and arts["summary"] == (a.summary, b.summary)


async def q_most_steps(agent: Agent, runs: Any, m: Any) -> None:
    got = await agent.ask("list_flows", namespace=None)
    mine = max(got["flows"], key=lambda f: (f["steps"] or 0, f["flow"]))["flow"]
    counts = {f.id: len([s for s in f.latest_run if s.id != "_parameters"]) for f in m.Metaflow().flows}
    assert counts[mine] == max(counts.values())


QUESTIONS = [
    q_list_flows, q_last_3_runs, q_step_breakdown, q_slowest_step, q_slowest_step_last_3, q_latest_failure,
    q_success_rate_last_10, q_counted_by_state, q_fastest_and_median_of_5_successful, q_several_flows,
    q_value_across_runs, q_compare_two_runs, q_most_steps,
]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.__name__[2:])
async def test_question_in_two_calls_and_4kb(question: Any, local_runs: Any, truth: Any) -> None:
    async with Client(build_server()) as client:
        agent = Agent(client)
        await question(agent, local_runs, truth)
    assert agent.calls <= MAX_CALLS, f"{agent.calls} tool calls"
    assert agent.bytes <= MAX_BYTES, f"{agent.bytes} bytes of tool output"
