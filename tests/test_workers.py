"""Tool calls in worker processes: the server keeps answering while a call holds the GIL,
a call past its deadline is killed with a typed error, progress flows back, workers are replaced."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client import Client  # noqa: E402

import worker_hooks  # noqa: E402
from mcp_server import build_server, workers  # noqa: E402
from mcp_server.budget import DEFAULT_BUDGET  # noqa: E402
from mcp_server.schema import READ_ONLY  # noqa: E402
from mcp_server.tools import make_tool  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _server_with_hooks() -> Any:
    """The real server plus hidden test-only tools (never part of the public tool list)."""
    server = build_server()
    for fn in (worker_hooks.spin_in_c, worker_hooks.reads, worker_hooks.exit_now, worker_hooks.whoami):
        server.add_tool(make_tool(fn, DEFAULT_BUDGET), description=fn.__doc__, annotations=READ_ONLY)
    return server


async def test_server_answers_while_a_call_spins_then_the_deadline_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAFLOW_AGENT_DEADLINE_S", "3")
    monkeypatch.setenv(workers.ENV_WORKERS, "2")
    results: dict[str, Any] = {}
    async with Client(_server_with_hooks()) as client:
        await client.call_tool("whoami", {})  # workers started and warm

        async def spin() -> None:
            start = time.perf_counter()
            results["spin"] = await client.call_tool("spin_in_c", {})
            results["spin_s"] = time.perf_counter() - start

        async with anyio.create_task_group() as tg:
            tg.start_soon(spin)
            await anyio.sleep(0.5)  # the spin is now at 100% CPU in C, holding its process's GIL
            start = time.perf_counter()
            tools = await client.list_tools()
            results["list_s"] = time.perf_counter() - start
            other = await client.call_tool("whoami", {})
            results["other_s"] = time.perf_counter() - start
        after = await client.call_tool("whoami", {})
    assert "spin_in_c" in [t.name for t in tools.tools]
    assert results["list_s"] < 1.0, f"tools/list took {results['list_s']:.2f}s while a call spun"
    assert not other.is_error and results["other_s"] < 2.0  # the second worker answered meanwhile
    assert other.structured_content["pid"] != os.getpid()
    spun = results["spin"]
    assert spun.is_error
    assert "3-second deadline" in spun.content[0].text and "METAFLOW_AGENT_DEADLINE_S" in spun.content[0].text
    assert 3 <= results["spin_s"] < 3 + workers.GRACE_S + 3
    assert not after.is_error  # the killed worker was replaced


async def test_progress_flows_back_from_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.ENV_WORKERS, "2")
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(_server_with_hooks()) as client:
        result = await client.call_tool("reads", {"n": 20, "pause": 0.05}, progress_callback=on_progress)
    assert not result.is_error and result.structured_content["pid"] != os.getpid()
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 20


async def test_a_worker_that_dies_is_a_typed_error_and_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.ENV_WORKERS, "2")
    async with Client(_server_with_hooks()) as client:
        died = await client.call_tool("exit_now", {})
        after = [await client.call_tool("whoami", {}) for _ in range(3)]
    assert died.is_error and "exited unexpectedly" in died.content[0].text
    assert all(not r.is_error for r in after)


async def test_library_errors_keep_their_text(local_runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.ENV_WORKERS, "2")
    async with Client(build_server()) as client:
        result = await client.call_tool("run_summary", {"run": "HelloFlow/999999"})
    assert result.is_error
    assert result.content[0].text == "run HelloFlow/999999 not found: list_runs(flow='HelloFlow') shows recent runs"


async def test_zero_workers_runs_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.ENV_WORKERS, "0")
    async with Client(_server_with_hooks()) as client:
        result = await client.call_tool("whoami", {})
    assert result.structured_content["pid"] == os.getpid()


def test_pool_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, size in (("", 2), ("0", 0), ("3", 3), ("99", workers.MAX_WORKERS), ("x", 2), ("-1", 0)):
        monkeypatch.setenv(workers.ENV_WORKERS, raw)
        assert workers.pool_size() == size
