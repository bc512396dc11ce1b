"""One MCP tool per `metaflow_agent.FUNCTIONS`, generated, never written by hand.

Each tool takes the function's signature and docstring; `schema` makes its
tools/list entry lean (described parameters, enums, title, no output schema
unless asked). The answer is the model as compact JSON text plus
`structuredContent`, fitted to the output budget; an `AgentError` becomes a
tool error saying the next step.
"""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any, Callable, get_type_hints

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from metaflow_agent import FUNCTIONS, AgentError, resume_cursor

from . import budget as _budget
from . import workers
from .schema import build_tool

log = logging.getLogger(__name__)


def return_model(fn: Callable[..., Any]) -> type[BaseModel]:
    """The pydantic model a library function returns."""
    model = get_type_hints(fn)["return"]
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{fn.__name__} must return a pydantic model, not {model!r}")
    return model


def error_text(exc: BaseException) -> str:
    """What an agent reads when a call fails: the message and the next step, one line."""
    if isinstance(exc, AgentError):
        text = f"{exc.message}: {exc.hint}" if exc.hint else exc.message
    elif isinstance(exc, _budget.Overflow):
        text = f"{exc}: ask for less (a smaller limit, tail or max_chars), or raise --budget / METAFLOW_AGENT_MCP_BUDGET"
    else:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        text = f"internal error ({type(exc).__name__}{': ' + first if first else ''}); retry, or report it if it persists"
    text = " ".join(text.split())
    return text if len(text) <= 2000 else text[:1985] + "…[cut]"  # messages echo user input


def error_result(exc: BaseException) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=error_text(exc))], is_error=True)


def answer(fn: Callable[..., Any], kwargs: dict[str, Any], limit: int) -> _budget.Fit:
    """Call fn and fit its result to `limit` bytes (sync: runs on a worker thread).

    When the main list had to be cut, the answer's cursor resumes right after the
    last item kept (`metaflow_agent.resume_cursor`).
    """
    model = return_model(fn)
    result = fn(**kwargs)
    pages = "next_cursor" in model.model_fields
    return _budget.fit(
        model,
        result.model_dump(mode="json"),
        limit,
        cursor_for=(lambda kept: resume_cursor(result, kept)) if pages else None,
        less=lambda kept: _less_hint(fn, result, kept),
        keep_end=getattr(result, "mode", None) == "tail",
    )


def _less_hint(fn: Callable[..., Any], result: BaseModel, kept: int) -> str:
    """How to ask for less when no cursor can continue the answer."""
    mode = getattr(result, "mode", None)
    if mode == "grep":
        return "ask for less, e.g. a smaller max_matches or context"
    if mode in ("tail", "head"):
        return f"ask for less, e.g. {mode}={kept}"
    if "limit" in inspect.signature(fn).parameters:
        return f"ask for less, e.g. limit={kept}"
    return "narrow the query to get the rest"


def make_tool(fn: Callable[..., Any], limit: int) -> Callable[..., Any]:
    """An async MCP tool with fn's signature whose result is fn's model, fitted to `limit`."""
    model = return_model(fn)

    async def tool(ctx: Context, **kwargs: Any) -> CallToolResult:
        try:
            fitted = await workers.run(ctx, fn, kwargs, limit)  # a worker process it can stop
        except (AgentError, _budget.Overflow) as exc:
            return error_result(exc)
        except Exception as exc:  # never a traceback for the agent; the log has it
            log.exception("tool %s failed", fn.__name__)
            return error_result(exc)
        return CallToolResult(content=[TextContent(type="text", text=fitted.text)], structured_content=fitted.data)

    sig = inspect.signature(fn, eval_str=True)
    ctx_param = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    tool.__signature__ = sig.replace(  # type: ignore[attr-defined]  # inspect honours __signature__ on any function
        parameters=[*sig.parameters.values(), ctx_param],
        return_annotation=Annotated[CallToolResult, model],
    )
    tool.__name__ = tool.__qualname__ = fn.__name__
    tool.__doc__ = inspect.getdoc(fn)
    return tool


async def one_line_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: the SDK's own tool errors (bad arguments) on one line, like ours."""
    result = await call_next(ctx)
    if ctx.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
        for block in result.get("content") or []:
            if block.get("type") == "text":
                lines = [ln.strip() for ln in block["text"].splitlines()]
                block["text"] = "; ".join(ln for ln in lines if ln and not ln.startswith("For further information"))
    return result


def tool_list(limit: int, *, output_schemas: bool = False) -> list[Tool]:
    """One read-only tool per library function; `schema` decides what tools/list says."""
    return [build_tool(fn, make_tool(fn, limit), output_schema=output_schemas) for fn in FUNCTIONS]
