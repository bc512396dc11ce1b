"""The `metaflow-agent` command: one subcommand per query function, plus `demo`.

Subcommands are generated from the signatures in `FUNCTIONS`: positional
parameters become positional arguments (pathspecs), keyword-only ones become
`--options` typed from their annotations. Nothing here restates a function's
parameters or docs by hand.

    metaflow-agent failed-tasks MyFlow/12 --limit 5
    metaflow-agent task-logs MyFlow/12/train/3 --tail 20 --json
    metaflow-agent demo

Exit codes: 0 answer, 2 bad input or any `AgentError` (message and hint on
stderr), 1 an unexpected error (set METAFLOW_AGENT_DEBUG=1 for the traceback).
Every query command ends by its deadline (METAFLOW_AGENT_DEADLINE_S, default
30 s) with DeadlineExceeded and exit code 2, even when stuck in C code.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from . import FUNCTIONS, __version__, _deadline
from ._errors import AgentError

EXIT_OK, EXIT_UNEXPECTED, EXIT_AGENT_ERROR = 0, 1, 2
_PATHSPEC_KINDS = ("flow", "run", "step", "task")  # positional names that take a pathspec


# --- parser generated from the signatures -------------------------------------
def command_name(fn: Callable[..., Any]) -> str:
    return fn.__name__.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, accepts None) for `X | None` / Optional[X]."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _first_line(doc: str | None) -> str:
    return (inspect.cleandoc(doc or "").splitlines() or [""])[0]


def _add_param(parser: argparse.ArgumentParser, param: inspect.Parameter, tp: Any) -> None:
    inner, nullable = _unwrap_optional(tp)
    has_default = param.default is not inspect.Parameter.empty
    default = param.default if has_default else None
    origin = typing.get_origin(inner)
    choices: list[Any] | None = None
    scalar: type = inner if inner in (int, float) else str
    if origin is typing.Literal:
        choices = list(typing.get_args(inner))
        scalar = type(choices[0])

    if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        kind = param.name.split("_")[0]
        kwargs: dict[str, Any] = {"type": scalar, "help": f"{kind} pathspec" if kind in _PATHSPEC_KINDS else param.name}
        if has_default:
            kwargs.update(nargs="?", default=default)
        parser.add_argument(param.name, metavar=param.name.upper(), choices=choices, **kwargs)
        return

    flag = "--" + param.name.replace("_", "-")
    if inner is bool:
        parser.add_argument(flag, dest=param.name, action=argparse.BooleanOptionalAction, default=default,
                            help=f"(default: {'on' if default else 'off'})")
        return
    if origin is list:
        item = typing.get_args(inner)[0] if typing.get_args(inner) else str
        parser.add_argument(flag, dest=param.name, action="append", type=int if item is int else str,
                            default=None, metavar=param.name.upper(), help="repeatable")
        return
    required = not has_default
    help_text = "required" if required else ("" if default is None else f"(default: {default})")
    parser.add_argument(flag, dest=param.name, type=scalar, choices=choices, default=default, required=required,
                        metavar=None if choices else param.name.upper(), help=help_text)
    if nullable and default is not None:
        # The only way to pass None for an option whose default is not None.
        parser.add_argument("--no-" + param.name.replace("_", "-"), dest=param.name, action="store_const", const=None,
                            help=f"pass {param.name}=None")


def add_function_command(subparsers: Any, fn: Callable[..., Any]) -> argparse.ArgumentParser:
    """A subcommand whose arguments mirror fn's signature."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    name = command_name(fn)
    aliases = [fn.__name__] if fn.__name__ != name else []
    parser = subparsers.add_parser(name, aliases=aliases, help=_first_line(doc), description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(fn)
    for param in inspect.signature(fn).parameters.values():
        _add_param(parser, param, hints.get(param.name, str))
    _add_json_flag(parser, argparse.SUPPRESS)
    parser.set_defaults(_fn=fn)
    return parser


def _add_json_flag(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--json", action="store_true", default=default, help="print the result model as compact JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaflow-agent",
        description="Bounded, typed, cheap Metaflow queries. Each subcommand is one metaflow_agent function.",
    )
    parser.add_argument("--version", action="version", version=f"metaflow-agent {__version__}")
    _add_json_flag(parser, False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for fn in FUNCTIONS:
        add_function_command(subparsers, fn)
    demo = subparsers.add_parser("demo", help="Build example runs in a temporary root and compare costs with the Client API.",
                                 description="Run small real flows in a temporary local Metaflow root, then answer typical "
                                 "questions with metaflow_agent and with the plain Client API, side by side.")
    demo.add_argument("--keep", metavar="DIR", default=None, help="build in DIR and keep it (reused when it already holds demo runs)")
    demo.add_argument("--width", type=int, default=40, help="shards in the foreach (default: 40)")
    demo.set_defaults(_fn=None)
    return parser


def call(fn: Callable[..., Any], ns: argparse.Namespace) -> BaseModel:
    """Call fn with the parsed arguments, positionally where its signature says so."""
    args, kwargs = [], {}
    for param in inspect.signature(fn).parameters.values():
        value = getattr(ns, param.name)
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            args.append(value)
        else:
            kwargs[param.name] = value
    return fn(*args, **kwargs)


# --- text rendering ---------------------------------------------------------------
_CELL = 48  # table cells are cut here, except the last column
_BLOCKS_SHOWN = 1  # multi-line fields (tracebacks) printed under a table, for this many rows


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def format_cost(cost: Any) -> str:
    """One line: requests, reads, bytes, time."""
    c = cost.model_dump() if isinstance(cost, BaseModel) else dict(cost)
    parts = [f"{c['datastore_reads']} reads", _human_bytes(c["datastore_bytes"])]
    if c["metadata_requests"]:
        parts.append(f"{c['metadata_requests']} requests ({_human_bytes(c['metadata_bytes'])})")
    ms = c["elapsed_ms"]
    parts.append(f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms")
    return ", ".join(parts)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ("; " if any(isinstance(v, str) and " " in v for v in value) else ", ").join(_scalar(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(rows: list[BaseModel]) -> list[str]:
    """Rows of one model as an aligned table; empty columns dropped, wide ones last and uncut."""
    data = [row.model_dump() for row in rows]
    names = [n for n in type(rows[0]).model_fields if not all(_empty(d[n]) for d in data)]
    multiline = [n for n in names if any(isinstance(d[n], str) and "\n" in d[n] for d in data)]
    columns = [n for n in names if n not in multiline]
    cells = {n: [_scalar(d[n]) if d[n] is not None else "-" for d in data] for n in columns}
    for n in columns:
        if n.startswith("sha"):  # 12 hex digits identify a value well enough on screen
            cells[n] = [c[:12] for c in cells[n]]
    # Natural order, except that columns too wide for a cell go last, where they are not cut.
    wide = [n for n in columns if max(len(c) for c in cells[n]) > _CELL]
    columns = [n for n in columns if n not in wide] + wide
    widths = {n: min(_CELL, max(len(n), *(len(c) for c in cells[n]))) for n in columns}
    out = []
    if columns:
        head = "  ".join(n.ljust(widths[n]) for n in columns[:-1]) + ("  " if len(columns) > 1 else "") + columns[-1]
        out.append(head)
        for i in range(len(data)):
            parts = [_cut(cells[n][i], widths[n]).ljust(widths[n]) for n in columns[:-1]]
            parts.append(cells[columns[-1]][i].replace("\n", "⏎ "))
            out.append("  ".join(parts).rstrip())
    label = names[0] if names else None
    for i, d in enumerate(data[:_BLOCKS_SHOWN]):
        for n in multiline:
            if d[n]:
                out.append(f"{n} of {d[label] if label else i}:")
                out += ["    " + line for line in d[n].splitlines()]
    if multiline and len(data) > _BLOCKS_SHOWN:
        out.append(f"({', '.join(multiline)} of {len(data) - _BLOCKS_SHOWN} more rows: use --json)")
    return out


def render_text(model: BaseModel) -> str:
    """A readable form of any result model: scalars as `key: value`, lists of models as tables, cost last."""
    scalars: list[tuple[str, str]] = []
    blocks: list[str] = []
    cls = type(model)
    own = getattr(cls, "__annotations__", {})
    # The model's own fields first, then the common page fields it inherits.
    for name in sorted(cls.model_fields, key=lambda n: n not in own):
        if name == "cost":
            continue
        value = getattr(model, name)
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            blocks.append(f"{name} ({len(value)}):")
            blocks += ["  " + line for line in render_table(value)]
        elif isinstance(value, list) and not value and name not in ("notes", "tags"):
            scalars.append((name, "none"))
        elif isinstance(value, BaseModel):
            scalars.append((name, _scalar({k: v for k, v in value.model_dump().items() if v is not None})))
        elif isinstance(value, dict) and value:
            blocks.append(f"{name}:")
            width = max(len(str(k)) for k in value)
            blocks += [f"  {str(k).ljust(width)}  {_scalar(v)}" for k, v in value.items()]
        elif isinstance(value, str) and "\n" in value:
            blocks.append(f"{name}:")
            blocks += ["  " + line for line in value.splitlines()]
        elif not _empty(value) or isinstance(value, bool):
            scalars.append((name, _scalar(value)))
    width = max((len(k) for k, _ in scalars), default=0)
    lines = [f"{k.ljust(width)}  {v}" for k, v in scalars] + blocks
    if "cost" in type(model).model_fields:
        lines.append(f"cost: {format_cost(model.cost)}")  # type: ignore[attr-defined]
    return "\n".join(lines)


def to_json(model: BaseModel) -> str:
    """Compact JSON (indentation doubles the tokens an agent reads)."""
    return model.model_dump_json()


# --- entry point --------------------------------------------------------------------
def _report_error(exc: AgentError, as_json: bool) -> None:
    if as_json:
        print(json.dumps(exc.to_dict(), separators=(",", ":")), file=sys.stderr)
        return
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_AGENT_ERROR
    if ns.command == "demo":  # runs flows: minutes, not a query
        return _run(ns)

    def timed_out(exc: AgentError) -> int:
        _report_error(exc, ns.json)
        return EXIT_AGENT_ERROR

    return _deadline.run_with_hard_stop(lambda: _run(ns), _deadline.default_seconds(), timed_out)


def _run(ns: argparse.Namespace) -> int:
    """One command, its answer on stdout; typed errors on stderr."""
    try:
        if ns.command == "demo":
            from .demo import run_demo

            return run_demo(keep=ns.keep, width=ns.width)
        result = call(ns._fn, ns)
        print(to_json(result) if ns.json else render_text(result))
        return EXIT_OK
    except AgentError as exc:
        _report_error(exc, ns.json)
        return EXIT_AGENT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for an agent; opt in for debugging
        if os.environ.get("METAFLOW_AGENT_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: this is a bug in metaflow-agent; rerun with METAFLOW_AGENT_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
