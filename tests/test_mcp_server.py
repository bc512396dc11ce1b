"""The MCP server through the SDK's in-process client, on the real local runs."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

import jsonschema  # noqa: E402
from mcp.client import Client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

import metaflow_agent  # noqa: E402
from mcp_server import build_server  # noqa: E402
from mcp_server.budget import dumps  # noqa: E402
from mcp_server.server import parse_args  # noqa: E402
from mcp_server.tools import return_model  # noqa: E402
from metaflow_agent import FUNCTIONS  # noqa: E402

pytestmark = pytest.mark.anyio
BY_NAME = {fn.__name__: fn for fn in FUNCTIONS}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def task_of(runs: Any, run: str, step: str) -> str:
    """The first task pathspec of a step, from the local datastore layout."""
    folder = Path(runs.root) / ".metaflow" / run / step
    ids = sorted((p.name for p in folder.iterdir() if p.name.isdigit()), key=lambda t: (len(t), t))
    return f"{run}/{step}/{ids[0]}"


def calls(runs: Any) -> dict[str, dict[str, Any]]:
    """One representative call per library function."""
    start_a = task_of(runs, runs.art_a, "start")
    return {
        "list_runs": {"flow": "HelloFlow"},
        "run_summary": {"run": runs.wide},
        "failed_tasks": {"run": runs.retry},
        "task_logs": {"task": task_of(runs, runs.log, "noisy"), "tail": 20},
        "list_artifacts": {"task": start_a},
        "artifact_preview": {"task": start_a, "name": "config"},
        "search_artifacts": {"flow": "ArtifactFlow", "name": "con*"},
        "compare_runs": {"run_a": runs.art_a, "run_b": runs.art_b},
        "capabilities": {},
        "list_flows": {"namespace": None},
        "run_stats": {"flows": "HelloFlow", "last": 3},
        "diagnose_run": {"run": runs.hello_failed},
        "list_tasks": {"run": runs.retry},
        "artifact_values": {"flow": "ArtifactFlow", "name": "score", "namespace": None},
    }


def without_cost(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "cost"}


async def call(server: Any, name: str, args: dict[str, Any], **kw: Any) -> Any:
    async with Client(server) as client:
        return await client.call_tool(name, args, **kw)


# --- listing -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_one_tool_per_function_with_schemas_and_annotations(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == [fn.__name__ for fn in FUNCTIONS]
    for tool in tools:
        fn = BY_NAME[tool.name]
        assert tool.description == metaflow_agent.function_doc(fn).description
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        assert set(tool.input_schema["properties"]) == set(inspect.signature(fn).parameters)
        assert tool.output_schema is None  # lean by default: see mcp_server.schema
        ann = tool.annotations
        assert ann is not None and ann.read_only_hint is True
        assert ann.destructive_hint is False and ann.open_world_hint is False


async def test_output_schemas_on_request() -> None:
    async with Client(build_server(output_schemas=True)) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)
        model = return_model(BY_NAME[tool.name])
        assert tool.output_schema["properties"] == model.model_json_schema()["properties"]
        for name, field in model.model_fields.items():  # descriptions come from the models
            assert tool.output_schema["properties"][name]["description"] == field.description


# --- answers equal the library's ---------------------------------------------------
@pytest.mark.parametrize("name", [fn.__name__ for fn in FUNCTIONS])
async def test_tool_answers_equal_the_library(local_runs: Any, name: str) -> None:
    args = calls(local_runs)[name]
    result = await call(build_server(), name, args)
    assert not result.is_error, result.content
    expected = BY_NAME[name](**args).model_dump(mode="json")
    assert without_cost(result.structured_content) == without_cost(expected)
    text = result.content[0].text
    assert json.loads(text) == result.structured_content
    assert text == dumps(result.structured_content)  # compact, never indented
    assert "\n" not in text
    return_model(BY_NAME[name]).model_validate(result.structured_content)


def test_every_function_has_a_representative_call(local_runs: Any) -> None:
    assert set(calls(local_runs)) == set(BY_NAME)


# --- the output budget ----------------------------------------------------------------
@pytest.mark.parametrize("name", [fn.__name__ for fn in FUNCTIONS])
async def test_tiny_budget_holds_for_every_tool(local_runs: Any, name: str) -> None:
    budget = 1024  # the smallest allowed
    result = await call(build_server(budget=budget), name, calls(local_runs)[name])
    text = result.content[0].text
    assert len(text.encode()) <= budget
    assert not result.is_error, text
    return_model(BY_NAME[name]).model_validate(result.structured_content)
    assert json.loads(text) == result.structured_content


async def collect_pages(server: Any, name: str, args: dict[str, Any], field: str, budget: int) -> list[Any]:
    items: list[Any] = []
    async with Client(server) as client:
        cursor = None
        for _ in range(50):
            result = await client.call_tool(name, {**args, "cursor": cursor})
            assert not result.is_error, result.content
            assert len(result.content[0].text.encode()) <= budget
            data = result.structured_content
            items += data[field]
            cursor = data["next_cursor"]
            if cursor is None:
                return items
            assert data["truncated"] is True
    raise AssertionError("cursor never ended")


async def test_budget_cut_resumes_index_cursor(local_runs: Any) -> None:
    """failed_tasks pages by index: the cursor resumes right after the last task kept."""
    budget = 1500
    full = metaflow_agent.failed_tasks(local_runs.wide)
    assert len(dumps(full.model_dump(mode="json"))) > budget
    first = await call(build_server(budget=budget), "failed_tasks", {"run": local_runs.wide})
    data = first.structured_content
    assert data["truncated"] is True and data["next_cursor"]
    assert len(data["failed"]) < len(full.failed)
    assert any("output budget" in n for n in data["notes"])
    items = await collect_pages(build_server(budget=budget), "failed_tasks", {"run": local_runs.wide}, "failed", budget)
    assert [t["pathspec"] for t in items] == [t.pathspec for t in full.failed]


async def test_budget_cut_resumes_key_cursor(local_runs: Any) -> None:
    """search_artifacts pages by key: the cut page's cursor resumes right after the last hit kept,
    from one query (metaflow_agent.resume_cursor), not by asking again."""
    budget = 1500
    args = {"flow": "ArtifactFlow", "name": "*"}
    full = metaflow_agent.search_artifacts(**args, limit=1000)
    assert len(dumps(full.model_dump(mode="json"))) > 2 * budget
    items = await collect_pages(build_server(budget=budget), "search_artifacts", args, "hits", budget)
    assert [(h["task"], h["name"]) for h in items] == [(h.task, h.name) for h in full.hits]
    first = await call(build_server(budget=budget), "search_artifacts", args)
    notes = first.structured_content["notes"]
    assert any("next_cursor resumes after them" in n for n in notes), notes
    assert not any("asked again" in n for n in notes)
    single = metaflow_agent.search_artifacts(**args)
    assert first.structured_content["cost"]["datastore_reads"] == single.cost.datastore_reads  # one query, not two


async def test_budget_cut_of_a_tail_keeps_the_last_lines(local_runs: Any) -> None:
    budget = 2000
    args = {"task": task_of(local_runs, local_runs.log, "noisy"), "tail": 200}
    result = await call(build_server(budget=budget), "task_logs", args)
    data = result.structured_content
    assert len(result.content[0].text.encode()) <= budget
    assert data["truncated"] is True
    assert data["lines"][-1]["text"] == "LAST LINE OF STDOUT"
    assert any(f"tail={len(data['lines'])}" in n for n in data["notes"])


async def test_budget_clips_long_strings(local_runs: Any) -> None:
    budget = 1024
    args = {"task": task_of(local_runs, local_runs.art_a, "start"), "name": "blob", "max_chars": 5000}
    result = await call(build_server(budget=budget), "artifact_preview", args)
    data = result.structured_content
    assert len(result.content[0].text.encode()) <= budget
    assert data["truncated"] is True
    assert data["repr"].startswith("b'\\x00\\x01") and data["repr"].endswith("…")  # both ends of the 5,000-char repr kept
    assert "chars cut]" in data["repr"]


def test_budget_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        build_server(budget=1023)
    with pytest.raises(SystemExit):
        parse_args(["--budget", "100"])


async def test_budget_from_environment(local_runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAFLOW_AGENT_MCP_BUDGET", "1200")
    assert parse_args([]).budget == 1200
    result = await call(build_server(), "failed_tasks", {"run": local_runs.wide})
    assert len(result.content[0].text.encode()) <= 1200 and result.structured_content["truncated"] is True


# --- errors ---------------------------------------------------------------------------
async def test_agent_error_is_a_tool_error_with_the_next_step(flow_only_root: str) -> None:
    result = await call(build_server(), "run_summary", {"run": "HelloFlow/999999"})
    assert result.is_error
    text = result.content[0].text
    assert text == "run HelloFlow/999999 not found: list_runs(flow='HelloFlow') shows recent runs"


async def test_bad_input_says_how_to_fix_it(local_runs: Any) -> None:
    args = {"task": task_of(local_runs, local_runs.log, "noisy"), "tail": 5, "head": 5}
    result = await call(build_server(), "task_logs", args)
    assert result.is_error
    assert "pass only one of tail, head, grep" in result.content[0].text
    assert "task_logs(task, tail=50)" in result.content[0].text


async def test_unexpected_exception_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("disk on fire\nTraceback (most recent call last):\n  File x")

    monkeypatch.setenv("METAFLOW_AGENT_MCP_WORKERS", "0")  # the patch lives in this process
    monkeypatch.setattr("metaflow_agent._runs.get_backend", broken)
    result = await call(build_server(), "run_summary", {"run": "HelloFlow/1"})
    assert result.is_error
    text = result.content[0].text
    assert "\n" not in text and "Traceback" not in text
    assert "RuntimeError" in text and "disk on fire" in text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_argument_errors_are_one_line(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        result = await client.call_tool("list_runs", {"flow": "HelloFlow", "limit": "many"})
    assert result.is_error
    text = result.content[0].text
    assert "\n" not in text and "limit" in text and "valid integer" in text


async def test_no_global_namespace(local_runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import metaflow

    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("metaflow.namespace() must not be called")

    monkeypatch.setenv("METAFLOW_AGENT_MCP_WORKERS", "0")  # the patch lives in this process
    monkeypatch.setattr(metaflow, "namespace", forbidden)
    for args in ({"flow": "HelloFlow"}, {"flow": "HelloFlow", "namespace": None}):
        result = await call(build_server(), "list_runs", args)
        assert not result.is_error, result.content


# --- resources and prompt ---------------------------------------------------------------
async def test_resource_templates_read_like_the_tools(local_runs: Any) -> None:
    flow, run_id = local_runs.hello_failed.split("/")
    task = task_of(local_runs, local_runs.log, "noisy")
    async with Client(build_server()) as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {
            "metaflow://run/{flow}/{run_id}/summary",
            "metaflow://run/{flow}/{run_id}/failures",
            "metaflow://task/{flow}/{run_id}/{step}/{task_id}/log/{stream}",
            "metaflow://schema/{tool}",
        }
        summary = await client.read_resource(f"metaflow://run/{flow}/{run_id}/summary")
        failures = await client.read_resource(f"metaflow://run/{flow}/{run_id}/failures")
        log = await client.read_resource(f"metaflow://task/{task}/log/stdout")
    got = json.loads(summary.contents[0].text)
    assert without_cost(got) == without_cost(metaflow_agent.run_summary(local_runs.hello_failed).model_dump(mode="json"))
    assert got["status"] == "failed"
    got = json.loads(failures.contents[0].text)
    assert without_cost(got) == without_cost(metaflow_agent.failed_tasks(local_runs.hello_failed).model_dump(mode="json"))
    lines = json.loads(log.contents[0].text)["lines"]
    assert len(lines) == 50 and lines[-1]["text"] == "LAST LINE OF STDOUT"
    assert summary.contents[0].mime_type == "application/json"


async def test_resource_error_carries_the_hint(flow_only_root: str) -> None:
    async with Client(build_server()) as client:
        with pytest.raises(MCPError) as err:
            await client.read_resource("metaflow://run/HelloFlow/999999/summary")
    assert "list_runs(flow='HelloFlow')" in str(err.value)


async def test_unknown_prompt_is_invalid_params() -> None:
    async with Client(build_server()) as client:
        with pytest.raises(MCPError) as info:
            await client.get_prompt("nope", {})
    assert info.value.error.code == -32602 and "triage_failed_run" in info.value.error.message


@pytest.mark.parametrize("run", ["x" * 200_000, "HelloFlow/" + "1" * 300, "HelloFlow", "a b/1", ""])
async def test_triage_prompt_refuses_what_is_not_a_run(run: str) -> None:
    """The prompt does not echo its argument: a bad one is Invalid params, with a bounded message."""
    async with Client(build_server()) as client:
        with pytest.raises(MCPError) as info:
            await client.get_prompt("triage_failed_run", {"run": run})
    assert info.value.error.code == -32602 and len(info.value.error.message) < 300


async def test_triage_prompt(local_runs: Any) -> None:
    async with Client(build_server()) as client:
        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["triage_failed_run"]
        assert [a.name for a in prompts[0].arguments] == ["run"]
        got = await client.get_prompt("triage_failed_run", {"run": local_runs.hello_failed})
    text = got.messages[0].content.text
    for tool in ("run_summary", "failed_tasks", "task_logs", "compare_runs", local_runs.hello_failed):
        assert tool in text


# --- progress ---------------------------------------------------------------------------
async def test_progress_reports_each_calls_own_requests(local_runs: Any) -> None:
    server = build_server()
    seen: dict[str, list[float]] = {"failed_tasks": [], "list_artifacts": []}
    results: dict[str, Any] = {}
    args = {"failed_tasks": {"run": local_runs.wide}, "list_artifacts": {"task": task_of(local_runs, local_runs.art_a, "start")}}

    async with Client(server) as client:

        async def one(name: str) -> None:
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen[name].append(progress)

            results[name] = await client.call_tool(name, args[name], progress_callback=on_progress)

        async with anyio.create_task_group() as tg:
            for name in seen:
                tg.start_soon(one, name)

    for name, progress in seen.items():
        cost = results[name].structured_content["cost"]
        assert progress, f"{name} reported no progress"
        assert progress == sorted(progress)
        assert progress[-1] == cost["datastore_reads"] + cost["metadata_requests"]
