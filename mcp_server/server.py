"""The metaflow-agent MCP server: wiring, transports and the `metaflow-agent-mcp` command.

It reads whatever Metaflow configuration the environment has (local or
service); nothing to set up beyond that.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from metaflow_agent import __version__

from .auth import BearerAuth
from .budget import DEFAULT_BUDGET, MIN_BUDGET
from .resources import add_resources
from .tools import one_line_errors, tool_list

log = logging.getLogger("mcp_server")
BUDGET_ENV = "METAFLOW_AGENT_MCP_BUDGET"
TOKEN_ENV = "METAFLOW_AGENT_MCP_TOKEN"
INSTRUCTIONS = (
    "Read-only, bounded queries over Metaflow runs, tasks, logs and artifacts. "
    "Start with list_runs or run_summary; for a failed run, failed_tasks then task_logs. "
    "Every answer fits an output budget: when truncated, follow next_cursor or read notes for how to ask for less."
)


def budget_from_env() -> int:
    """The output budget in bytes: METAFLOW_AGENT_MCP_BUDGET, else 16 KB."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    return int(raw) if raw else DEFAULT_BUDGET


def build_server(*, budget: int | None = None, output_schemas: bool = False) -> MCPServer[Any]:
    """An MCPServer with one tool per library function, the resources and the prompt.

    output_schemas: publish each answer's full JSON Schema in tools/list
    (about 4x its size; off by default, see mcp_server.schema).
    """
    limit = budget_from_env() if budget is None else budget
    if limit < MIN_BUDGET:
        raise ValueError(f"output budget {limit} is below the minimum of {MIN_BUDGET} bytes")
    server: MCPServer[Any] = MCPServer(
        "metaflow-agent",
        title="Metaflow",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        tools=tool_list(limit, output_schemas=output_schemas),
    )
    server.middleware.append(one_line_errors)
    add_resources(server, limit)
    return server


def http_app(server: MCPServer[Any], *, host: str, port: int, token: str | None) -> ASGIApp:
    """Stateless streamable HTTP with JSON responses, DNS-rebinding protection, optional bearer token."""
    hosts = {"127.0.0.1", "localhost", host}
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{h}:{port}" for h in hosts),
        allowed_origins=sorted(f"http://{h}:{port}" for h in hosts),
    )
    app: ASGIApp = server.streamable_http_app(
        stateless_http=True, json_response=True, transport_security=security, host=host
    )
    return BearerAuth(app, token) if token else app


async def serve_http(app: ASGIApp, host: str, port: int) -> None:
    import uvicorn

    # log_config=None: uvicorn logs through the root logger (stderr), no access log on stdout.
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    await uvicorn.Server(config).serve()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="metaflow-agent-mcp", description="MCP server for bounded Metaflow queries.")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or streamable HTTP")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None, help=f"HTTP bearer token (default ${TOKEN_ENV})")
    parser.add_argument(
        "--budget", type=int, default=None, help=f"output budget per answer in bytes (default ${BUDGET_ENV} or {DEFAULT_BUDGET})"
    )
    parser.add_argument(
        "--output-schemas", action="store_true", help="publish each tool's full output schema in tools/list (about 4x larger)"
    )
    args = parser.parse_args(argv)
    if args.budget is None:
        try:
            args.budget = budget_from_env()
        except ValueError:
            parser.error(f"{BUDGET_ENV} must be an integer")
    if args.budget < MIN_BUDGET:
        parser.error(f"--budget must be at least {MIN_BUDGET}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of `metaflow-agent-mcp`."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    server = build_server(budget=args.budget, output_schemas=args.output_schemas)
    if args.transport == "stdio":
        anyio.run(server.run_stdio_async)
        return 0
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        log.warning("serving on %s without a token: anyone who can reach it can read your runs", args.host)
    log.warning("metaflow-agent MCP server on http://%s:%d/mcp", args.host, args.port)
    anyio.run(serve_http, http_app(server, host=args.host, port=args.port, token=args.token), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
