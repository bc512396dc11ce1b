"""MCP server for metaflow_agent: the only package that imports `mcp`.

Tools, resources and a prompt are generated from `metaflow_agent.FUNCTIONS`
and their result models; see `server.build_server` and `server.main`.
"""

from __future__ import annotations

from .server import build_server, main

__all__ = ["build_server", "main"]
