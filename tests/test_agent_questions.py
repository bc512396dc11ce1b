"""A scripted agent (no LLM) asks the common Metaflow questions through the MCP tools, on the
real test runs: every question in at most 2 tool calls and 4 KB of tool output, every answer
equal to the plain Client API's on the same runs.

The questions (how the agent asks, what the Client answers) are shared with the benchmark that
asks them at size: benchmarks/agent_questions/questions.py."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.agent_questions.questions import BY_NAME, MAX_BYTES, MAX_CALLS, QUESTIONS, Agent, Args, Question
from helpers import LocalRuns

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def subjects(runs: LocalRuns) -> dict[str, Args]:
    """What each question is about, on the test runs."""
    return {
        "list_flows": {},
        "last_3_runs": {"flow": "HelloFlow"},
        "step_breakdown": {"run": runs.retry},
        "slowest_step": {"run": runs.log},
        "slowest_step_last_3": {"flow": "ArtifactFlow"},
        "latest_failure": {"flow": "HelloFlow"},
        "success_rate_last_10": {"flow": "HelloFlow"},
        "counted_by_state": {"flow": "WideFlow"},
        "fastest_and_median_of_5_successful": {"flow": "HelloFlow"},
        "several_flows": {},
        "value_across_runs": {"flow": "ArtifactFlow", "name": "score"},
        "compare_two_runs": {"run_a": runs.art_a, "run_b": runs.art_b, "params": ["alpha"], "artifacts": ["score", "summary"]},
        "most_steps": {},
    }


def test_benchmark_asks_the_same_questions() -> None:
    """The benchmark at size asks every question the tests ask, from the same definitions."""
    from benchmarks.agent_questions.world import cases

    manifest = {"train_flow": "T", "train_runs": 1000, "foreach_flow": "F", "foreach_run": "F/1", "width": 1000,
                "compare": ["T/1", "T/2"], "params": ["p"], "artifacts": ["a"], "value": "a"}
    asked = [c.question for c in cases(manifest)]
    assert set(asked) == {q.name for q in QUESTIONS}
    assert set(subjects(LocalRuns(*[""] * 7, hello_ok=[], hello_failed=""))) == {q.name for q in QUESTIONS}


async def ask(question: Question, args: Args, client_ns: Any) -> tuple[Agent, list[str]]:
    """The agent's answer through the MCP tools, checked against the Client's: (agent, differences)."""
    pytest.importorskip("mcp")
    from mcp.client import Client

    from mcp_server import build_server

    async with Client(build_server()) as client:
        agent = Agent(client)
        got = await question.ask(agent, args)
    client_ns(None)
    return agent, question.check(got, question.truth(args))


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.name)
async def test_question_in_two_calls_and_4kb(question: Question, local_runs: LocalRuns, client_ns: Any) -> None:
    agent, diffs = await ask(question, subjects(local_runs)[question.name], client_ns)
    assert diffs == []
    assert agent.calls <= MAX_CALLS, f"{agent.calls} tool calls"
    assert agent.bytes <= MAX_BYTES, f"{agent.bytes} bytes of tool output"


async def test_step_durations_equal_client(local_runs: LocalRuns, client_ns: Any) -> None:
    question = BY_NAME["step_breakdown"]
    _, diffs = await ask(question, subjects(local_runs)[question.name], client_ns)
    assert diffs == []
