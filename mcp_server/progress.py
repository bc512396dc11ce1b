"""Run a sync library call on a worker thread, reporting its own requests as MCP progress.

`metaflow_agent.add_cost_hook` calls process-wide hooks on every metadata request and
datastore read. One hook is installed; it counts into whichever call owns the
current context (a contextvar, copied onto the worker thread by anyio), so
concurrent calls never see each other's requests. A small loop on the event
loop turns the counts into progress notifications (a no-op when the client
sent no progressToken).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context

from metaflow_agent import add_cost_hook

T = TypeVar("T")
INTERVAL = 0.25  # seconds between progress notifications
log = logging.getLogger(__name__)


class _Counter:
    """Requests and reads of one call, written by its worker thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.reads = 0
        self.bytes = 0
        self.reported = 0

    def add(self, kind: str, nbytes: int) -> None:
        with self.lock:
            if kind == "request":
                self.requests += 1
            else:
                self.reads += 1
            self.bytes += nbytes

    def snapshot(self) -> tuple[int, str]:
        with self.lock:
            done = self.requests + self.reads
            text = f"{self.requests} metadata requests, {self.reads} datastore reads, {self.bytes} bytes"
        return done, text


_current: contextvars.ContextVar[_Counter | None] = contextvars.ContextVar("mcp_progress", default=None)
_installed = False
_install_lock = threading.Lock()


def _hook(kind: str, method: str, url: str, nbytes: int) -> None:
    counter = _current.get()
    if counter is not None:
        counter.add(kind, nbytes)


def install() -> None:
    """Install the process-wide counting hook once."""
    global _installed
    with _install_lock:
        if not _installed:
            add_cost_hook(_hook)
            _installed = True


async def _flush(ctx: Context[Any, Any] | None, counter: _Counter) -> None:
    done, text = counter.snapshot()
    if ctx is None or done <= counter.reported:
        return
    counter.reported = done
    try:
        await ctx.report_progress(done, None, text)
    except Exception as exc:  # a closed stream must not fail the call
        log.debug("progress notification dropped: %r", exc)


async def run(ctx: Context[Any, Any] | None, fn: Callable[[], T]) -> T:
    """Run fn on a worker thread; report its requests/reads as progress on ctx."""
    install()
    counter = _Counter()
    token = _current.set(counter)  # copied into the worker thread's context
    outcome: list[Any] = []
    failure: list[BaseException] = []
    try:
        async with anyio.create_task_group() as tg:

            async def report() -> None:
                while True:
                    await anyio.sleep(INTERVAL)
                    await _flush(ctx, counter)

            tg.start_soon(report)
            try:
                outcome.append(await anyio.to_thread.run_sync(fn))
            except Exception as exc:
                failure.append(exc)
            finally:
                tg.cancel_scope.cancel()
    finally:
        _current.reset(token)
    await _flush(ctx, counter)
    if failure:
        raise failure[0]
    return outcome[0]
