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
from typing import Any, NoReturn

from pydantic import BaseModel

from . import AgentError, __version__, _deadline, function_doc
from ._config import debug
from .render import render_text, to_json

EXIT_OK, EXIT_UNEXPECTED, EXIT_AGENT_ERROR = 0, 1, 2


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


def _add_param(parser: argparse.ArgumentParser, param: inspect.Parameter, tp: Any, text: str) -> None:
    """One argument for param, its help text from the docstring's Args entry."""
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
        kwargs: dict[str, Any] = {"type": scalar, "help": text}
        if has_default:
            kwargs.update(nargs="?", default=default)
        parser.add_argument(param.name, metavar=param.name.upper(), choices=choices, **kwargs)
        return

    flag = "--" + param.name.replace("_", "-")
    if inner is bool:
        parser.add_argument(flag, dest=param.name, action=argparse.BooleanOptionalAction, default=default,
                            help=f"{text} (default: {'on' if default else 'off'})")
        return
    if origin is list:
        item = typing.get_args(inner)[0] if typing.get_args(inner) else str
        parser.add_argument(flag, dest=param.name, action="append", type=int if item is int else str,
                            default=None, metavar=param.name.upper(), help=f"{text} (repeatable)")
        return
    required = not has_default
    help_text = f"{text} (required)" if required else (text if default is None else f"{text} (default: {default})")
    parser.add_argument(flag, dest=param.name, type=scalar, choices=choices, default=default, required=required,
                        metavar=None if choices else param.name.upper(), help=help_text)
    if nullable and default is not None:
        # The only way to pass None for an option whose default is not None.
        parser.add_argument("--no-" + param.name.replace("_", "-"), dest=param.name, action="store_const", const=None,
                            help=f"{param.name} null (see --{param.name.replace('_', '-')})")


def add_function_command(subparsers: Any, fn: Callable[..., Any]) -> argparse.ArgumentParser:
    """A subcommand whose arguments mirror fn's signature."""
    doc = function_doc(fn)
    name = command_name(fn)
    aliases = [fn.__name__] if fn.__name__ != name else []
    parser = subparsers.add_parser(name, aliases=aliases, help=doc.summary, description=doc.description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(fn)
    for param in inspect.signature(fn).parameters.values():
        _add_param(parser, param, hints.get(param.name, str), doc.params[param.name])
    _add_json_flag(parser, argparse.SUPPRESS)
    parser.set_defaults(_fn=fn)
    return parser


def _add_json_flag(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--json", action="store_true", default=default, help="print the result model as compact JSON")


class _Parser(argparse.ArgumentParser):
    """Usage errors in the CLI's own form: `error: ...` then `hint: ...`, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        print(f"hint: {self.prog} --help lists the arguments and their allowed values", file=sys.stderr)
        self.print_usage(sys.stderr)
        raise SystemExit(EXIT_AGENT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="metaflow-agent",
        description="Bounded, typed, cheap Metaflow queries. Each subcommand is one metaflow_agent function.",
    )
    parser.add_argument("--version", action="version", version=f"metaflow-agent {__version__}")
    _add_json_flag(parser, False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from . import FUNCTIONS

    for fn in FUNCTIONS:
        add_function_command(subparsers, fn)
    demo = subparsers.add_parser("demo", help="Build example runs in a temporary root and compare costs with the Client API.",
                                 description="Run small real flows in a temporary local Metaflow root, then answer typical "
                                 "questions with metaflow_agent and with the plain Client API, side by side.")
    demo.add_argument("--keep", metavar="DIR", default=None, help="build in DIR and keep it (reused when it already holds demo runs)")
    demo.add_argument("--width", type=int, default=40, help="shards in the foreach (default: 40)")
    demo.set_defaults(_fn=None)
    # The MCP server under the package's own command, so that `uvx metaflow-agent mcp` (the
    # MCP registry's launch form) works; its options are the server's own.
    mcp = subparsers.add_parser("mcp", add_help=False, help="Serve every function as a read-only MCP tool "
                                "(the same as metaflow-agent-mcp; `mcp --help` for its options).")
    mcp.add_argument("args", nargs=argparse.REMAINDER)
    mcp.set_defaults(_fn=None)
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
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["mcp"]:  # everything after it is the server's (argparse would take --help)
        return _serve_mcp(args[1:])
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
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
    except BrokenPipeError:  # the reader left (`| head`): not an error; keep Python quiet at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # never a traceback for an agent; opt in for debugging
        if debug():
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: this is a bug in metaflow-agent; rerun with METAFLOW_AGENT_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_UNEXPECTED


def _serve_mcp(args: list[str]) -> int:
    try:
        from mcp_server.server import main as serve
    except ImportError as exc:
        print(f"error: the MCP server needs the mcp extra ({exc})", file=sys.stderr)
        print("hint: pip install 'metaflow-agent[mcp]'", file=sys.stderr)
        return EXIT_AGENT_ERROR
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
