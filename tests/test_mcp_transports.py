"""The server as a real process: `python -m mcp_server` over stdio and over HTTP (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import httpx2  # noqa: E402
from mcp.client import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from metaflow_agent import FUNCTIONS  # noqa: E402

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-test-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server_env() -> dict[str, str]:
    """The test process's environment (the METAFLOW_* the conftest set), importing this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def check_session(client: Client, local_runs: Any) -> None:
    tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == [fn.__name__ for fn in FUNCTIONS]
    result = await client.call_tool("run_summary", {"run": local_runs.hello_failed})
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "failed"
    assert json.loads(result.content[0].text) == result.structured_content
    missing = await client.call_tool("run_summary", {"run": "HelloFlow/999999"})
    assert missing.is_error and "list_runs(flow='HelloFlow')" in missing.content[0].text
    flow, run_id = local_runs.hello_failed.split("/")
    res = await client.read_resource(f"metaflow://run/{flow}/{run_id}/failures")
    assert json.loads(res.contents[0].text)["total_failed"] == 1


async def test_stdio_end_to_end(local_runs: Any) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", "--budget", "8192"], env=server_env(), cwd=str(REPO)
    )
    async with Client(params) as client:
        await check_session(client, local_runs)


@pytest.fixture
def http_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "--transport", "http", "--port", str(port), "--token", TOKEN],
        env=server_env(),
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not listen")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stdout.read() == b""  # stdout stays clean


async def test_http_end_to_end_with_token(local_runs: Any, http_server: str) -> None:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        async with Client(streamable_http_client(http_server, http_client=http)) as client:
            await check_session(client, local_runs)


async def test_http_refuses_missing_or_wrong_token(http_server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(timeout=10) as http:
        missing = await http.post(http_server, json=body, headers=headers)
        wrong = await http.post(http_server, json=body, headers={**headers, "Authorization": "Bearer nope"})
        rebinding = await http.post(
            http_server, json=body, headers={**headers, "Authorization": f"Bearer {TOKEN}", "Host": "evil.example:80"}
        )
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert rebinding.status_code in (403, 421)  # the SDK's DNS-rebinding protection
