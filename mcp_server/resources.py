"""Resource templates for the three things an agent reads most, the answers'
schemas, and a triage prompt."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from metaflow_agent import FUNCTIONS, AgentError, NotFound, failed_tasks, run_summary, task_logs

from . import workers
from .budget import Overflow, dumps
from .tools import error_text, return_model

log = logging.getLogger(__name__)
JSON = "application/json"
LOG_TAIL = 50


def _first_line(fn: Callable[..., Any]) -> str:
    return (inspect.getdoc(fn) or "").splitlines()[0]


async def _read(ctx: Context, fn: Callable[..., Any], limit: int, **kwargs: Any) -> str:
    """fn's answer as compact JSON within the budget; failures as resource errors."""
    try:
        return (await workers.run(ctx, fn, kwargs, limit)).text
    except NotFound as exc:
        raise ResourceNotFoundError(error_text(exc)) from None
    except (AgentError, Overflow) as exc:
        raise ResourceError(error_text(exc)) from None
    except Exception as exc:
        log.exception("resource %s failed", fn.__name__)
        raise ResourceError(error_text(exc)) from None


def add_resources(server: MCPServer[Any], limit: int) -> None:
    """Register the run summary, run failures and task log tail templates."""

    @server.resource(
        "metaflow://run/{flow}/{run_id}/summary",
        name="run_summary",
        description=_first_line(run_summary) + " (as the run_summary tool).",
        mime_type=JSON,
    )
    async def summary(flow: str, run_id: str, ctx: Context) -> str:
        return await _read(ctx, run_summary, limit, run=f"{flow}/{run_id}")

    @server.resource(
        "metaflow://run/{flow}/{run_id}/failures",
        name="run_failures",
        description=_first_line(failed_tasks) + " (first page, as the failed_tasks tool).",
        mime_type=JSON,
    )
    async def failures(flow: str, run_id: str, ctx: Context) -> str:
        return await _read(ctx, failed_tasks, limit, run=f"{flow}/{run_id}")

    @server.resource(
        "metaflow://task/{flow}/{run_id}/{step}/{task_id}/log/{stream}",
        name="task_log_tail",
        description=f"The last {LOG_TAIL} lines of a task's stdout or stderr (as task_logs with tail={LOG_TAIL}).",
        mime_type=JSON,
    )
    async def log_tail(flow: str, run_id: str, step: str, task_id: str, stream: str, ctx: Context) -> str:
        return await _read(ctx, task_logs, limit, task=f"{flow}/{run_id}/{step}/{task_id}", stream=stream, tail=LOG_TAIL)

    by_name = {fn.__name__: fn for fn in FUNCTIONS}

    @server.resource(
        "metaflow://schema/{tool}",
        name="answer_schema",
        description="JSON Schema of a tool's answer, every field described (tools/list omits them to stay small).",
        mime_type=JSON,
    )
    def answer_schema(tool: str) -> str:
        fn = by_name.get(tool)
        if fn is None:
            raise ResourceNotFoundError(f"no tool {tool!r}: one of {', '.join(by_name)}")
        return dumps(return_model(fn).model_json_schema())

    server.prompt(name=PROMPT, title="Triage a failed run")(triage_failed_run)
    server.middleware.append(unknown_prompt_is_invalid_params)


PROMPT = "triage_failed_run"


async def unknown_prompt_is_invalid_params(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: an unknown prompt name is -32602 Invalid params, as the spec says.

    The SDK raises a plain ValueError, which reaches the client as error code 0
    (2025-11-25) or an internal error (2026-07-28).
    """
    if ctx.method == "prompts/get" and (ctx.params or {}).get("name") != PROMPT:
        name = str((ctx.params or {}).get("name"))[:100]
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {name}; the one prompt is {PROMPT}")
    return await call_next(ctx)


MAX_PART = 200  # characters of a flow name or run id in the prompt


def _run_argument(run: str) -> tuple[str, str]:
    """(flow, run id) of the prompt's argument; Invalid params for anything else (never echoed whole)."""
    flow, sep, run_id = run.strip().strip("/").partition("/")
    parts_ok = all(0 < len(p) <= MAX_PART and p.isprintable() and " " not in p and "/" not in p for p in (flow, run_id))
    if not sep or not parts_ok:
        shown = run[:60] + ("…" if len(run) > 60 else "")
        raise MCPError(code=INVALID_PARAMS, message=f"run must be 'Flow/RunId' (each part at most {MAX_PART} characters), not {shown!r}")
    return flow, run_id


def triage_failed_run(run: str) -> str:
    """Steps to find why a Metaflow run failed, using this server's tools."""
    flow, run_id = _run_argument(run)
    run = f"{flow}/{run_id}"
    return f"""Find out why the Metaflow run {run} failed, using the metaflow tools. Every answer is bounded: when one says truncated, follow next_cursor or ask for less instead of raising limits.

1. run_summary(run="{run}") (or resource metaflow://run/{flow}/{run_id}/summary): status, per-step task counts and the first failure.
2. failed_tasks(run="{run}") (or metaflow://run/{flow}/{run_id}/failures): exception type, message and traceback tail of each failed or crashed task. retried_ok tasks recovered and are not the cause; a crashed task (no exception, a return code such as -9) was killed, often out of memory.
3. For the first failed task T: task_logs(task=T, stream="stderr", tail=50) (or metaflow://task/T/log/stderr); if the cause is not there, task_logs(task=T, grep="Error|Exception|Traceback") on stdout and stderr.
4. If an input looks wrong: list_artifacts(task=T) for names, sizes and types, then artifact_preview(task=T, name=...) for one small artifact.
5. Against the last good run: list_runs(flow="{flow}", status="completed", limit=1), then compare_runs(run_a=<that run>, run_b="{run}") for changed parameters and artifacts.

Report the failing step and task(s), the root cause with its evidence (exception, log lines, changed inputs), whether a retry would help (transient) or it needs a code or data fix, and the fix to try first."""
