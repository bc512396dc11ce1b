"""Tool calls in worker processes, so a call can be stopped and the server keeps answering.

Work that holds the GIL (a long C loop in a library, a huge hash) cannot be
cancelled in a thread and stalls the whole server, `tools/list` included. So
each call runs in one of a small pool of worker processes (started once with
exec, not forked from this threaded server, and reused). The server waits on
the worker's pipe without blocking its event loop; past the call's deadline
(METAFLOW_AGENT_DEADLINE_S, default 30 s, plus `GRACE_S` for the worker's own
cooperative DeadlineExceeded) it kills the worker, answers DeadlineExceeded
and starts a replacement. Progress counts (metadata requests, datastore reads)
flow back from the worker as they happen.

Protocol: one JSON object per line. Server → worker: a request (function by
module and name, keyword arguments, budget, deadline, the caller's
METAFLOW_*/AWS_* environment and working directory). Worker → server:
``progress`` lines, then one ``ok`` (the fitted answer), ``error`` (an
AgentError: type, message, hint), ``overflow`` or ``crash`` line. Nothing from
the worker is unpickled.

METAFLOW_AGENT_MCP_WORKERS sets the pool size (default 2); 0 runs calls on
threads in this process as before (debugging; tests that patch the library).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import anyio
from mcp.server.mcpserver import Context

import metaflow_agent
from metaflow_agent import AgentError, BackendError, DeadlineExceeded

from . import budget as _budget

log = logging.getLogger(__name__)

ENV_WORKERS = "METAFLOW_AGENT_MCP_WORKERS"
DEFAULT_WORKERS = 2
MAX_WORKERS = 16
GRACE_S = 1.0  # after the deadline, time for the worker's own typed error before the kill
PROGRESS_S = 0.25  # seconds between progress lines from a worker
_ENV_PREFIXES = ("METAFLOW_", "AWS_")
_ENV_NAMES = ("USER", "USERNAME", "LOGNAME", "HOME", "XDG_CACHE_HOME", "TZ")


def pool_size() -> int:
    """METAFLOW_AGENT_MCP_WORKERS (0 = run calls in this process), default 2."""
    raw = os.environ.get(ENV_WORKERS, "").strip()
    if not raw:
        return DEFAULT_WORKERS
    try:
        return max(0, min(int(raw), MAX_WORKERS))
    except ValueError:
        return DEFAULT_WORKERS


def _caller_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}


# --------------------------------------------------------------------------- server side
class _Worker:
    """One worker process and the unread part of its output."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # the worker imports what this process imports, tests' helper modules included
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server._worker_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,  # its own group: a kill takes what it started with it
        )
        assert self.proc.stdin and self.proc.stdout
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = bytearray()
        self.calls = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.proc.stdin.flush()

    async def receive(self, end: float) -> dict[str, Any] | None:
        """The next message; None when the worker is gone; TimeoutError at `end`."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("worker %d wrote a malformed line", self.proc.pid)
                    continue
                return message if isinstance(message, dict) else None
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            with anyio.move_on_after(left):
                await anyio.wait_readable(self.fd)
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            self.buf += chunk

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            log.error("worker %d did not exit after SIGKILL", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass


class Pool:
    """A fixed number of workers; a killed or dead one is replaced at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle = [_Worker() for _ in range(size)]
        self._seq = 0

    async def _acquire(self, end: float) -> _Worker:
        while True:
            with self._lock:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    worker.kill()  # died while idle
                    self._idle.append(_Worker())
            if time.monotonic() >= end:
                raise TimeoutError
            await anyio.sleep(0.01)  # every worker busy: wait (loop-agnostic, no anyio primitive to bind)

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
            worker = _Worker()
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    async def call(self, ctx: Context[Any, Any] | None, fn: Callable[..., Any], kwargs: dict[str, Any], limit: int, seconds: float) -> _budget.Fit:
        """fn(**kwargs) fitted to `limit`, computed in a worker within `seconds`."""
        start = time.monotonic()
        end = start + seconds + GRACE_S
        try:
            worker = await self._acquire(end)
        except TimeoutError:
            raise _deadline_error(seconds, "waiting for a free worker (all are busy)") from None
        healthy = False
        try:
            with self._lock:
                self._seq += 1
                call_id = self._seq
            left = max(end - GRACE_S - time.monotonic(), 0.001)
            worker.send(
                {
                    "id": call_id,
                    "module": fn.__module__,
                    "name": fn.__qualname__,
                    "kwargs": kwargs,
                    "limit": limit,
                    "deadline": left,
                    "env": _caller_env(),
                    "cwd": os.getcwd(),
                }
            )
            while True:
                try:
                    message = await worker.receive(end)
                except TimeoutError:
                    log.warning("%s passed its %gs deadline: killing worker %d", fn.__name__, seconds, worker.proc.pid)
                    raise _deadline_error(seconds, "computing the answer (the worker was stopped)") from None
                if message is None:
                    raise BackendError(
                        f"the worker computing {fn.__name__} exited unexpectedly",
                        hint="retry; if it happens again, the call may exhaust memory: ask for less",
                    )
                if message.get("id") != call_id:
                    continue
                if "progress" in message:
                    await _report(ctx, message["progress"])
                    continue
                healthy = True
                return _outcome(message)
        finally:
            worker.calls += 1
            self._release(worker, healthy)


def _deadline_error(seconds: float, doing: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the call ran past its {seconds:g}-second deadline while {doing}",
        hint="ask for less (a smaller limit, fewer runs, a narrower time window) or raise METAFLOW_AGENT_DEADLINE_S",
    )


async def _report(ctx: Context[Any, Any] | None, progress: Any) -> None:
    if ctx is None or not isinstance(progress, list) or len(progress) != 2:
        return
    try:
        await ctx.report_progress(float(progress[0]), None, str(progress[1]))
    except Exception as exc:  # a closed stream must not fail the call
        log.debug("progress notification dropped: %r", exc)


class WorkerError(Exception):
    """An unexpected exception in a worker, re-raised here under its original type name."""


def _outcome(message: dict[str, Any]) -> _budget.Fit:
    if "ok" in message:
        ok = message["ok"]
        return _budget.Fit(data=ok["data"], text=ok["text"], kept=ok.get("kept"), total=ok.get("total"))
    if "error" in message:
        err = message["error"]
        name = str(err.get("type"))
        cls = getattr(metaflow_agent, name, None) if name in metaflow_agent.__all__ else None
        if not (isinstance(cls, type) and issubclass(cls, AgentError)):
            cls = AgentError
        exc = cls.__new__(cls)
        AgentError.__init__(exc, str(err.get("message", "")), hint=str(err.get("hint", "")))
        if err.get("name"):
            exc.name = err["name"]  # type: ignore[attr-defined]  # NotAllowed-style errors carry the name they refer to
        raise exc
    if "overflow" in message:
        raise _budget.Overflow(str(message["overflow"]))
    crash = message.get("crash") or {}
    kind = type(str(crash.get("type") or "WorkerError"), (WorkerError,), {})
    raise kind(str(crash.get("message", "")))


_pool: Pool | None = None
_pool_lock = threading.Lock()


def get_pool(size: int) -> Pool:
    """The process-wide pool, started on first use (and resized when the setting changed)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.size != size:
            if _pool is not None:
                _pool.close()
            _pool = Pool(size)
        return _pool


def shutdown() -> None:
    """Stop the workers (atexit; tests)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


atexit.register(shutdown)


async def run(ctx: Context[Any, Any] | None, fn: Callable[..., Any], kwargs: dict[str, Any], limit: int) -> _budget.Fit:
    """Answer a tool call: in a worker process, or on a thread here when the pool size is 0."""
    from . import progress
    from .tools import answer

    size = pool_size()
    if size == 0:
        return await progress.run(ctx, lambda: answer(fn, kwargs, limit))
    return await get_pool(size).call(ctx, fn, kwargs, limit, metaflow_agent.deadline_seconds())


# --------------------------------------------------------------------------- worker side
def _apply(env: dict[str, str], cwd: str) -> None:
    for key in [k for k in os.environ if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES]:
        if key not in env:
            del os.environ[key]
    os.environ.update(env)
    if cwd and os.path.isdir(cwd) and cwd != os.getcwd():
        os.chdir(cwd)


def serve() -> int:
    """The worker loop: read requests on stdin, answer on the original stdout."""
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything the library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when a worker stops
    try:  # and a worker busy in C must not outlive a server that died (Linux)
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    write_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
        with write_lock:
            channel.write(data)

    import importlib

    from metaflow_agent import add_cost_hook, deadline

    from .tools import answer

    state: dict[str, Any] = {"id": None, "requests": 0, "reads": 0, "bytes": 0, "sent": 0.0, "done": 0}

    def progress_line() -> list[Any]:
        done = state["requests"] + state["reads"]
        return [done, f"{state['requests']} metadata requests, {state['reads']} datastore reads, {state['bytes']} bytes"]

    def hook(kind: str, method: str, url: str, nbytes: int) -> None:
        if state["id"] is None:
            return
        state["requests" if kind == "request" else "reads"] += 1
        state["bytes"] += nbytes
        now = time.monotonic()
        if now - state["sent"] >= PROGRESS_S:
            state["sent"] = now
            state["done"] = state["requests"] + state["reads"]
            send({"id": state["id"], "progress": progress_line()})

    add_cost_hook(hook)
    for raw in sys.stdin.buffer:
        try:
            req = json.loads(raw)
            call_id = req["id"]
        except (ValueError, KeyError, TypeError):
            continue
        state.update(id=call_id, requests=0, reads=0, bytes=0, sent=time.monotonic(), done=0)
        try:
            _apply(req.get("env") or {}, req.get("cwd") or "")
            target: Any = importlib.import_module(req["module"])
            for part in str(req["name"]).split("."):
                target = getattr(target, part)
            with deadline(float(req["deadline"])):
                fit = answer(target, req.get("kwargs") or {}, int(req["limit"]))
            if state["requests"] + state["reads"] > state["done"]:
                send({"id": call_id, "progress": progress_line()})
            send({"id": call_id, "ok": {"data": fit.data, "text": fit.text, "kept": fit.kept, "total": fit.total}})
        except AgentError as exc:
            send({"id": call_id, "error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint, "name": getattr(exc, "name", "")}})
        except _budget.Overflow as exc:
            send({"id": call_id, "overflow": str(exc)})
        except Exception as exc:
            log.exception("tool %s failed in a worker", req.get("name"))
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            send({"id": call_id, "crash": {"type": type(exc).__name__, "message": first}})
        finally:
            state["id"] = None
    return 0

