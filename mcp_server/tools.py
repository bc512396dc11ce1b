"""One MCP tool per `metaflow_agent.FUNCTIONS`, generated, never written by hand.

Each tool takes the function's signature as its input schema, its docstring
as its description and its return model as its output schema. The answer is
the model as compact JSON text plus `structuredContent`, fitted to the output
budget; an `AgentError` becomes a tool error saying the next step.
"""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any, Callable, get_type_hints

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

from metaflow_agent import FUNCTIONS, AgentError
from metaflow_agent._inputs import decode_cursor, encode_cursor

from . import budget as _budget
from . import workers

log = logging.getLogger(__name__)

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, destructive_hint=False, open_world_hint=False)


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

    When the main list had to be cut and fn pages with a cursor, the answer keeps
    a cursor that resumes right after the last item kept: computed directly for
    index cursors, otherwise by asking fn again for exactly the items that fit.
    """
    model = return_model(fn)
    result = fn(**kwargs)
    data = result.model_dump(mode="json")
    params = inspect.signature(fn).parameters
    pages = "cursor" in params and "limit" in params
    index = _index_start(fn, kwargs, result) if pages else None
    cursor_for: Callable[[int], str | None] | None = None
    if index is not None:
        name, (start, extra) = fn.__name__, index

        def cursor_for(kept: int) -> str | None:
            return encode_cursor(name, {**extra, "i": start + kept})

    elif pages:  # a key cursor, known only after asking again: size a stand-in
        stand_in = "x" * max(128, len(kwargs.get("cursor") or ""), len(getattr(result, "next_cursor", None) or ""))

        def cursor_for(kept: int) -> str | None:
            return stand_in

    fitted = _budget.fit(
        model,
        data,
        limit,
        cursor_for=cursor_for,
        less=lambda kept: _less_hint(fn, result, kept),
        keep_end=getattr(result, "mode", None) == "tail",
    )
    if fitted.kept is not None and pages and index is None:
        return _ask_again(fn, model, kwargs, limit, fitted.kept, data["cost"])
    return fitted


def _ask_again(
    fn: Callable[..., Any], model: type[BaseModel], kwargs: dict[str, Any], limit: int, kept: int, spent: dict[str, Any]
) -> _budget.Fit:
    """Repeat a key-cursor query with limit=kept so that its own cursor resumes after the last item."""
    while True:
        data = fn(**{**kwargs, "limit": kept}).model_dump(mode="json")
        for key, value in spent.items():  # the answer's cost counts both queries
            data["cost"][key] = round(data["cost"][key] + value, 1)
        try:
            return _budget.fit(model, data, limit, allow_cut=False, said=f"asked again with limit={kept}; cost counts both")
        except _budget.Overflow:
            if kept == 1:
                raise
            spent = data["cost"]
            kept -= 1


def _index_start(fn: Callable[..., Any], kwargs: dict[str, Any], result: BaseModel) -> tuple[int, dict[str, Any]] | None:
    """Where this page starts and the cursor's other keys, when fn pages by index
    ({"i": n, ...} cursors); else None."""
    limit = kwargs.get("limit") or inspect.signature(fn).parameters["limit"].default
    for cursor, back in ((kwargs.get("cursor"), 0), (getattr(result, "next_cursor", None), limit)):
        if cursor:
            try:
                state = decode_cursor(cursor, fn.__name__)
            except AgentError:
                return None
            if state is not None and isinstance(state.get("i"), int):
                return int(state["i"]) - back, {k: v for k, v in state.items() if k != "i"}
            return None
    return None


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
    tool.__signature__ = sig.replace(  # type: ignore[attr-defined]
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


def add_tools(server: MCPServer[Any], limit: int) -> None:
    """Register one read-only tool per library function."""
    for fn in FUNCTIONS:
        server.add_tool(make_tool(fn, limit), description=inspect.getdoc(fn), annotations=READ_ONLY)
    server.middleware.append(one_line_errors)
