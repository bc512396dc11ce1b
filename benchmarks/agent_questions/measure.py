"""Ask every case on one backend, in its own process; one JSON line per case on stdout.

    python -m benchmarks.agent_questions.measure PLAN.json

The environment (set by the caller before Metaflow is imported) points Metaflow at the world:
local metadata, or the service double's URL. The agent talks to the MCP server in this process
(`mcp.client.Client(build_server())`, tools answered by the server's worker processes, as
deployed); the Client API's truth is computed here after each question, namespace(None).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

import anyio

from .questions import BY_NAME, MAX_BYTES, MAX_CALLS, Agent, ToolError


async def ask_all(plan: dict[str, Any]) -> None:
    from mcp.client import Client

    from mcp_server import build_server

    async with Client(build_server()) as client:
        # The worker's start, imports and the once-per-process service probe belong to no question.
        warm = await client.call_tool("capabilities", {})
        print(json.dumps({"warmup": warm.structured_content}, default=str), flush=True)
        for case in plan["cases"]:
            print(json.dumps(await ask_one(client, case), default=str), flush=True)


async def ask_one(client: Any, case: dict[str, Any]) -> dict[str, Any]:
    question = BY_NAME[case["question"]]
    agent = Agent(client)
    got: Any = None
    error = None
    started = time.perf_counter()
    try:
        got = await question.ask(agent, case["args"])
    except ToolError as exc:
        error = str(exc)
    except Exception as exc:  # an answer the agent could not read is a result, not a crash
        error = f"{type(exc).__name__}: {exc}"
    ask_s = time.perf_counter() - started
    started = time.perf_counter()
    try:
        want = question.truth(case["args"])
        truth_error = None
    except Exception:
        want, truth_error = None, traceback.format_exc(limit=3)
    truth_s = time.perf_counter() - started
    if truth_error:
        diffs = [f"the Client API failed: {truth_error}"]
    elif error:
        diffs = [f"no answer: {error}"]
    else:
        diffs = question.check(got, want)
    return {
        "question": question.name,
        "text": question.text,
        "subject": case["subject"],
        "args": case["args"],
        "calls": agent.calls,
        "bytes": agent.bytes,
        "per_call": [{"tool": c.tool, "args": c.args, "bytes": c.bytes, "error": c.error, "cost": c.cost} for c in agent.log],
        "cost": agent.cost(),
        "within_budget": agent.calls <= MAX_CALLS and agent.bytes <= MAX_BYTES,
        "equal": not diffs,
        "diffs": diffs,
        "error": error,
        "answer": got,
        "truth": want,
        "ask_s": round(ask_s, 3),
        "truth_s": round(truth_s, 3),
    }


def main(plan_path: str) -> int:
    with open(plan_path) as f:
        plan = json.load(f)
    from metaflow import namespace

    namespace(None)  # the truth is about every user's runs, as the agent asks (namespace=None)
    anyio.run(ask_all, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
