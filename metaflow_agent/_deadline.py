"""A deadline per call: cooperative checks, socket timeouts, and a hard stop for the CLI.

`deadline()` opens one for a call (default 30 s, METAFLOW_AGENT_DEADLINE_S),
carried in a contextvar so that threads started with the call's context see
it too. Code that loops calls `check()`; code that waits on a socket asks
`timeout(cap)` for how long it may wait. Nested calls keep the tighter one.

Cooperation cannot stop work that holds the GIL in C. Two things can:
the MCP server runs each call in a worker process it kills (mcp_server.workers),
and the CLI runs its command under `run_with_hard_stop`: SIGALRM raises
DeadlineExceeded inside the command at the deadline, and a supervising parent
process kills the command `GRACE_S` later if it is still running, then reports
the same typed error (exit code 2).
"""

from __future__ import annotations

import contextvars
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ._errors import DeadlineExceeded

ENV = "METAFLOW_AGENT_DEADLINE_S"
DEFAULT_S = 30.0
MAX_S = 3600.0
GRACE_S = 2.0  # the CLI's supervisor waits this long past the deadline before killing


def default_seconds() -> float:
    """METAFLOW_AGENT_DEADLINE_S when it is a positive number (capped at MAX_S), else 30."""
    raw = os.environ.get(ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_S
    except ValueError:
        return DEFAULT_S
    return min(value, MAX_S) if math.isfinite(value) and value > 0 else DEFAULT_S


deadline_seconds = default_seconds  # the public name


@dataclass(frozen=True)
class Deadline:
    """When a call must end (time.monotonic) and the budget it was given."""

    at: float
    seconds: float

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def error(self, what: str = "") -> DeadlineExceeded:
        doing = f" while {what}" if what else ""
        return DeadlineExceeded(
            f"the call ran past its {self.seconds:g}-second deadline{doing}",
            hint=f"ask for less (a smaller limit, fewer runs, a narrower time window) or raise {ENV}",
        )


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("metaflow_agent_deadline", default=None)


@contextmanager
def deadline(seconds: float | None = None) -> Iterator[Deadline]:
    """Open a deadline for one call; inside an earlier one, the earlier end wins."""
    budget = default_seconds() if seconds is None else float(seconds)
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"deadline must be a positive number of seconds, not {seconds!r}")
    mine = Deadline(time.monotonic() + budget, budget)
    outer = _current.get()
    chosen = outer if outer is not None and outer.at <= mine.at else mine
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)


def current() -> Deadline | None:
    """The deadline of the call in progress, if any."""
    return _current.get()


def remaining() -> float | None:
    """Seconds left (may be negative), or None outside any deadline."""
    d = _current.get()
    return None if d is None else d.remaining()


def check(what: str = "") -> None:
    """Raise DeadlineExceeded when the call's deadline has passed (cheap: call it in loops)."""
    d = _current.get()
    if d is not None and time.monotonic() >= d.at:
        raise d.error(what)


def timeout(cap: float, what: str = "") -> float:
    """How long a blocking wait may take: min(cap, time left); DeadlineExceeded when none is."""
    d = _current.get()
    if d is None:
        return cap
    left = d.remaining()
    if left <= 0:
        raise d.error(what)
    return min(cap, left)


@contextmanager
def on_expiry(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` (from a timer thread) if the deadline passes inside the block.

    For blocking reads a timeout cannot bound as a whole (a server dripping a
    byte a second never trips a per-read timeout): the callback closes the
    socket, the read fails, and the reader turns that into DeadlineExceeded.
    """
    d = _current.get()
    if d is None:
        yield
        return
    left = d.remaining()
    if left <= 0:
        raise d.error()
    timer = threading.Timer(left, callback)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# --------------------------------------------------------------------------- CLI hard stop
@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise DeadlineExceeded in the main thread after `seconds`, again every 0.5 s
    in case library code swallowed it; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    budget = Deadline(time.monotonic() + seconds, seconds)

    def ring(signum: int, frame: object) -> None:
        raise budget.error()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _real_streams() -> bool:
    try:
        return sys.stdout.fileno() >= 0 and sys.stderr.fileno() >= 0
    except (AttributeError, ValueError, OSError):
        return False


def run_with_hard_stop(fn: Callable[[], int], seconds: float, on_timeout: Callable[[DeadlineExceeded], int]) -> int:
    """Run a CLI command so that it ends by its deadline; returns its exit code.

    The command runs in a forked child under `deadline` and `alarm`; the parent
    waits, and past the deadline plus GRACE_S kills the child and returns
    `on_timeout(error)`. Without fork (or with threads already running, where
    forking is unsafe, or with streams that are not files, which a child could
    not write to) the command runs here under `alarm` only.
    """
    if not hasattr(os, "fork") or threading.active_count() > 1 or not _real_streams():
        with deadline(seconds), alarm(seconds):
            return fn()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the command
        code = 1
        try:
            with deadline(seconds), alarm(seconds):
                code = fn()
        except DeadlineExceeded as exc:
            code = on_timeout(exc)
        except KeyboardInterrupt:
            code = 130
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    end = time.monotonic() + seconds + GRACE_S
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return code if code >= 0 else 128 - code
            if time.monotonic() >= end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return on_timeout(Deadline(end, seconds).error("holding the interpreter (stopped by force)"))
            time.sleep(0.02)
    except KeyboardInterrupt:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return 130
