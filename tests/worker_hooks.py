"""Test-only functions served as hidden MCP tools by tests/test_workers.py (never public tools).

They live in their own module so a worker process can import them by name.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from metaflow_agent._cost import current_meter, metered
from metaflow_agent._models import Cost



class HookResult(BaseModel):
    """What a hook did."""

    done: int = Field(description="units of work done")
    pid: int = Field(description="the process that did it")
    cost: Cost = Field(description="what the call spent")


def spin_in_c(levels: int = 25) -> HookResult:
    """Test only: hash a self-sharing tuple, C code that holds the GIL for ages."""
    with metered() as meter:
        a: tuple = (0,) * 10
        for _ in range(levels):
            a = (a,) * 10
        return HookResult(done=hash(a) & 1, pid=os.getpid(), cost=Cost.of(meter))


def reads(n: int = 20, pause: float = 0.05) -> HookResult:
    """Test only: record n datastore reads, slowly, so progress can be seen."""
    with metered() as meter:
        for i in range(n):
            current_meter().add_read(f"fake/{i}", 10)
            time.sleep(pause)
        return HookResult(done=n, pid=os.getpid(), cost=Cost.of(meter))


def exit_now() -> HookResult:
    """Test only: the worker process ends in the middle of a call."""
    os._exit(7)


def whoami() -> HookResult:
    """Test only: which process answers."""
    with metered() as meter:
        return HookResult(done=0, pid=os.getpid(), cost=Cost.of(meter))
