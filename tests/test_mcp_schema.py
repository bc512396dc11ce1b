"""What tools/list says: described parameters, enums, titles, its size, its snapshot, cold start.

The snapshot `tests/snapshots/list_tools.json` is the tools/list a client sees.
After an intended change, regenerate it and review the diff:

    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_mcp_schema.py -k snapshot
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

import jsonschema  # noqa: E402
from mcp.client import Client  # noqa: E402

import metaflow_agent  # noqa: E402
from mcp_server import build_server  # noqa: E402
from metaflow_agent import FUNCTIONS, function_doc  # noqa: E402
from metaflow_agent._docs import parse_doc  # noqa: E402

SNAPSHOT = Path(__file__).parent / "snapshots" / "list_tools.json"
LIST_BUDGET = 16 * 1024  # bytes of the whole tools/list answer, as sent
TOOLS_PLANNED = 17  # today's 9 and ~8 to come (list_flows, list_tasks, run_stats, artifact_values, diagnose_run, ...)
PER_TOOL = LIST_BUDGET // TOOLS_PLANNED  # 963: the average a tool may cost so that all of them fit
COLD_START_LIMIT_S = 5.0  # target 2 s; the margin is for slow CI machines
BY_NAME = {fn.__name__: fn for fn in FUNCTIONS}


def list_tools(**kw: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with Client(build_server(**kw)) as client:
            result = await client.list_tools()
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)["tools"]

    return anyio.run(go)


def wire_size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


# --- docstrings, the one source ----------------------------------------------------
def test_parse_doc_sections() -> None:
    doc = parse_doc(
        """Do a thing.

        More about it.

        Args:
            a: First, which
                goes on.
            b_c: Second.

        Returns:
            nothing.
        """
    )
    assert doc.summary == "Do a thing." and doc.body == "More about it."
    assert doc.params == {"a": "First, which goes on.", "b_c": "Second."}
    assert doc.description == "Do a thing.\n\nMore about it."
    assert parse_doc("One line.").params == {} and parse_doc(None).summary == ""
    with pytest.raises(ValueError, match="malformed"):
        parse_doc("X.\n\nArgs:\n    not an entry\n")


def test_function_doc_refuses_a_stale_args_section() -> None:
    def f(a: int, *, b: int = 1) -> None:
        """F.

        Args:
            a: A.
            c: Gone.
        """

    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['c'\]"):
        function_doc(f)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_every_parameter_is_described(fn: Any) -> None:
    doc = function_doc(fn)  # raises when out of step with the signature
    assert set(doc.params) == set(inspect.signature(fn).parameters)
    assert all(text.endswith(".") for text in doc.params.values())


# --- the schemas -----------------------------------------------------------------
def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_input_schemas_are_lean_and_described() -> None:
    for tool in list_tools():
        fn = BY_NAME[tool["name"]]
        schema = tool["inputSchema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert tool["title"] == fn.__name__.replace("_", " ").capitalize()
        assert tool["description"] == function_doc(fn).description and "Args:" not in tool["description"]
        assert "outputSchema" not in tool
        assert not any(isinstance(n, dict) and "title" in n for n in _walk(schema)), tool["name"]
        params = inspect.signature(fn).parameters
        hints = typing.get_type_hints(fn)
        assert schema.get("required", []) == [n for n, p in params.items() if p.default is inspect.Parameter.empty]
        for name, prop in schema["properties"].items():
            assert prop["description"] == function_doc(fn).params[name]
            default = params[name].default
            if default is not inspect.Parameter.empty and default is not None:
                assert prop["default"] == default
            # null is advertised only where it means something other than "omitted"
            nullable = {"type": "null"} in prop.get("anyOf", []) or isinstance(prop.get("type"), list)
            assert nullable == (default is not None and type(None) in typing.get_args(hints[name])), (tool["name"], name)


def test_fixed_vocabularies_are_enums() -> None:
    props = {t["name"]: t["inputSchema"]["properties"] for t in list_tools()}
    assert props["list_runs"]["status"]["enum"] == ["running", "completed", "failed", "crashed", "unknown"]
    assert props["list_tasks"]["state"]["enum"] == ["running", "completed", "failed", "crashed", "unknown"]
    assert props["artifact_values"]["order"]["enum"] == ["newest", "oldest"]
    assert props["task_logs"]["stream"] == {"type": "string", "enum": ["stdout", "stderr", "both"], "default": "stdout",
                                            "description": function_doc(metaflow_agent.task_logs).params["stream"]}
    assert props["failed_tasks"]["detail"]["enum"] == ["brief", "full"]


def test_lean_schema_still_accepts_explicit_null(local_runs: Any) -> None:
    """Omitted and null mean the same for a None default: the arguments are validated by the signature."""

    async def go() -> Any:
        async with Client(build_server()) as client:
            return await client.call_tool("list_runs", {"flow": "HelloFlow", "status": None, "limit": 1, "namespace": None})

    result = anyio.run(go)
    assert not result.is_error and result.structured_content["runs"]


def test_answer_schemas_are_a_resource_away() -> None:
    async def go() -> Any:
        async with Client(build_server()) as client:
            templates = (await client.list_resource_templates()).resource_templates
            read = await client.read_resource("metaflow://schema/failed_tasks")
            return templates, read

    templates, read = anyio.run(go)
    assert "metaflow://schema/{tool}" in [t.uri_template for t in templates]
    schema = json.loads(read.contents[0].text)
    assert schema == metaflow_agent.FailedTaskList.model_json_schema()
    assert schema["properties"]["failed"]["description"]


# --- size ---------------------------------------------------------------------------
def test_tools_list_fits_its_budget_with_room_for_the_planned_tools() -> None:
    tools = list_tools()
    sizes = {t["name"]: wire_size(t) for t in tools}
    total = wire_size({"tools": tools})
    print(f"tools/list {total} bytes; per tool {sizes}")
    assert total <= PER_TOOL * len(tools), f"{total} bytes for {len(tools)} tools: over {PER_TOOL} a tool"
    assert total <= LIST_BUDGET
    for name, size in sizes.items():  # no single tool takes the room of two
        assert size <= 2 * PER_TOOL, (name, size)


def test_full_output_schemas_cost_what_the_docs_say() -> None:
    """The opt-in costs about 4x: the reason it is off by default."""
    lean, full = wire_size({"tools": list_tools()}), wire_size({"tools": list_tools(output_schemas=True)})
    assert 3 * lean < full


# --- snapshot -----------------------------------------------------------------------
def test_tools_list_matches_the_snapshot() -> None:
    tools = list_tools()
    text = json.dumps(tools, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), "no snapshot: run UPDATE_SNAPSHOTS=1 python -m pytest tests/test_mcp_schema.py -k snapshot"
    want = json.loads(SNAPSHOT.read_text())
    assert tools == want, (
        "tools/list changed. If intended, regenerate and review the diff: "
        "UPDATE_SNAPSHOTS=1 python -m pytest tests/test_mcp_schema.py -k snapshot"
    )


# --- cold start ---------------------------------------------------------------------
def _rpc(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def test_cold_start_to_tools_list_over_stdio(tmp_path: Path) -> None:
    """A new server process answers tools/list, as sent on the wire, well within the limit."""
    env = {**os.environ, "METAFLOW_HOME": str(tmp_path)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mcp_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        assert proc.stdout is not None
        _rpc(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}})
        assert json.loads(proc.stdout.readline())["id"] == 1
        _rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _rpc(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait(10)
    answer = json.loads(line)
    names = [t["name"] for t in answer["result"]["tools"]]
    print(f"cold start to tools/list: {elapsed:.2f} s; {len(line)} bytes on the wire")
    assert names == list(BY_NAME)
    assert elapsed < COLD_START_LIMIT_S
    assert len(line) <= min(LIST_BUDGET, PER_TOOL * len(names) + 64)  # + the JSON-RPC envelope
