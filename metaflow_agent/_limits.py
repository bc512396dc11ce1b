"""Default limits and hard caps, in one place. METAFLOW_AGENT_<NAME> overrides a default."""

from __future__ import annotations

import os

# name: (default, hard cap)
LIMITS: dict[str, tuple[int, int]] = {
    "runs": (20, 500),
    "run_status_budget": (300, 5000),
    "failed_tasks": (50, 1000),
    "tail_lines": (50, 5000),
    "head_lines": (50, 5000),
    "grep_matches": (20, 500),
    "grep_context": (2, 20),
    "log_max_bytes": (128 * 1024, 256 * 1024 * 1024),
    "grep_max_bytes": (16 * 1024 * 1024, 256 * 1024 * 1024),
    "line_chars": (500, 5000),
    "artifacts": (200, 5000),
    "preview_max_bytes": (8 * 1024 * 1024, 256 * 1024 * 1024),
    "repr_chars": (1000, 10000),
    "search_hits": (50, 1000),
    "search_runs": (10, 200),
    "search_tasks_budget": (2000, 50000),
    "compare_diffs": (100, 1000),
}


def default(name: str) -> int:
    """The default for a limit, honouring METAFLOW_AGENT_<NAME>."""
    base, cap = LIMITS[name]
    env = os.environ.get(f"METAFLOW_AGENT_{name.upper()}")
    if env and env.isdigit():
        return min(int(env), cap)
    return base


def cap(name: str) -> int:
    return LIMITS[name][1]
