"""What `tools/list` says about each tool: lean, precise, generated.

`tools/list` is read into an agent's context at the start of every session,
so its size is a fixed cost. Measured on the 9 tools with the input schemas
below (compact JSON, bytes):

    full output schemas (pydantic, every field described)    35,637
    output schemas without descriptions or titles             20,440
    output schemas of top-level properties only               11,919
    no output schemas (the default)                            8,112

The budget is 16 KB for today's tools and ~8 more (about 960 bytes a tool,
held by tests/test_mcp_schema.py), with every parameter described, titles
and enums; only the last fits. So:

- input schemas: pydantic's schema of the signature, minus its titles; an
  optional parameter whose default is None is advertised as its plain type
  (omit it to get None), so `anyOf [..., null]` appears only where null means
  something (namespace: all users); `Literal` annotations give enums;
  descriptions come from the docstring's ``Args:`` section (`function_doc`);
- description: the docstring without its ``Args:`` section;
- title: the function name in words;
- output schemas: none by default. Answers are still the model as JSON text
  plus `structuredContent`; the full schema of every answer, with field
  descriptions, is one resource read away (`metaflow://schema/{tool}`), and
  `metaflow-agent-mcp --output-schemas` publishes them in tools/list for
  clients that generate code from them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from metaflow_agent import function_doc

# The spec makes destructiveHint moot when readOnlyHint is true, but some
# clients (ChatGPT's app review) require it and openWorldHint to be explicit;
# idempotentHint is moot and nobody requires it.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)

_NULL = {"type": "null"}


def title(fn: Callable[..., Any]) -> str:
    """'failed_tasks' -> 'Failed tasks'."""
    return fn.__name__.replace("_", " ").capitalize()


def description(fn: Callable[..., Any]) -> str:
    return function_doc(fn).description


def lean_property(prop: dict[str, Any], text: str) -> dict[str, Any]:
    """One parameter's schema: no title, null only where it means something, described."""
    prop = {k: v for k, v in prop.items() if k != "title"}
    if "$ref" in prop or "$defs" in prop:
        raise TypeError("tool parameters must be plain JSON types, not models")
    options = prop.pop("anyOf", None)
    if options is not None:
        rest = [o for o in options if o != _NULL]
        if len(rest) == 1 and prop.get("default", ...) is None:  # omitted means None
            prop.pop("default")
            prop = {**rest[0], **prop}
        else:  # anyOf, not a type array: single-type dialects (Gemini) take it
            prop["anyOf"] = options
    order = ("type", "items", "enum", "anyOf", "default")
    out = {k: prop[k] for k in order if k in prop} | {k: v for k, v in prop.items() if k not in order}
    out["description"] = text
    return out


def input_schema(fn: Callable[..., Any], generated: dict[str, Any]) -> dict[str, Any]:
    """The lean form of the SDK's schema for fn's parameters."""
    docs = function_doc(fn).params
    props = {name: lean_property(prop, docs[name]) for name, prop in generated.get("properties", {}).items()}
    if set(props) != set(inspect.signature(fn).parameters):
        raise TypeError(f"{fn.__name__}: tool parameters differ from the function's")
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if generated.get("required"):
        schema["required"] = generated["required"]
    return schema


def build_tool(fn: Callable[..., Any], wrapper: Callable[..., Any], *, output_schema: bool = False) -> Tool:
    """The registered tool for fn, called through wrapper (fn's signature plus the context).

    The wrapper's return annotation names fn's model, from which the SDK
    derives the full output schema; it is kept only when asked for.
    """
    tool = Tool.from_function(wrapper, name=fn.__name__, title=title(fn), description=description(fn), annotations=READ_ONLY)
    tool.parameters = input_schema(fn, tool.parameters)
    if not output_schema:
        # The SDK reads this live: without a schema it neither publishes nor validates one.
        tool.fn_metadata.output_schema = None
    return tool
