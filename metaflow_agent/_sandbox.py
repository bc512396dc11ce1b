"""Opt-in full unpickling in a separate, limited process.

Values outside the allow-list of `_unpickle` are read only when the caller
passes ``unsafe=True`` *and* the environment sets
``METAFLOW_AGENT_UNSAFE_UNPICKLE=1``. Then the pickle is loaded by plain
`pickle` in a fresh interpreter (started with exec, never a fork of a
threaded server) that first limits itself: CPU seconds (RLIMIT_CPU), address
space (RLIMIT_AS), no files written (RLIMIT_FSIZE=0), no child processes
(RLIMIT_NPROC=0, not enforced for root). The parent enforces the wall time
(the call's deadline), caps what it reads back, and kills the child on
timeout; the child also ends itself past the wall time and when its parent
dies (a killed MCP worker takes its sandbox along). The answer is JSON: type, bounded repr, summary.

What this does not do: it is not a security sandbox. Code in the pickle runs
with the user's file-system and network access; only the environment is
trimmed (no credentials are passed). The limits protect the caller's process,
its memory and its time, from a value, not the machine from its author. See
docs/TRUST.md.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from . import _deadline
from ._errors import BackendError, BadInput, DeadlineExceeded, TooLarge

ENV = "METAFLOW_AGENT_UNSAFE_UNPICKLE"
CPU_S = 10
MEMORY_BYTES = 2 << 30
WALL_S = 20.0
_READ_CAP = 1 << 20  # bytes read back from the child
_CHILD = Path(__file__).with_name("_sandbox_child.py")
_MARK = "@@metaflow-agent-sandbox@@ "
_KEEP_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV")


class SandboxResult(TypedDict):
    """What the child reports about a value it loaded."""

    type: str
    repr: str
    truncated: bool
    summary: dict[str, Any]


def enabled() -> bool:
    """True when METAFLOW_AGENT_UNSAFE_UNPICKLE=1 allows the opt-in path at all."""
    return os.environ.get(ENV, "").strip() == "1"


def require_opt_in() -> None:
    """BadInput unless the environment allows unsafe unpickling."""
    if not enabled():
        raise BadInput(
            "unsafe=True needs the environment to allow it too",
            hint=f"set {ENV}=1 where this runs, and only for data whose authors you trust as much as the flow's own code",
        )


def _child_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    # one thread per numeric library: their pools reserve address space the limit counts
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def load_in_sandbox(
    data: bytes,
    *,
    max_chars: int = 1000,
    cpu_s: int = CPU_S,
    memory_bytes: int = MEMORY_BYTES,
    wall_s: float = WALL_S,
) -> SandboxResult:
    """Unpickle `data` with plain pickle in a limited child process; its bounded repr and summary.

    Raises BadInput without the opt-in environment, DeadlineExceeded past the
    CPU or wall limit (or the call's deadline), TooLarge past the memory limit,
    BackendError when the value cannot be loaded or rendered.
    """
    require_opt_in()
    left = _deadline.remaining()
    wall = wall_s if left is None else min(wall_s, left)
    if wall <= 0:
        raise (_deadline.current() or _deadline.Deadline(time.monotonic(), wall_s)).error("starting the sandbox")
    cmd = [sys.executable, str(_CHILD), str(int(cpu_s)), str(int(memory_bytes)), str(int(max_chars)), str(int(wall) + 2)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
        cwd=os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/",
        close_fds=True,  # same process group: a worker killed with its group takes this child along
    )
    try:
        out, err, timed_out = _exchange(proc, data, time.monotonic() + wall)
    finally:
        if proc.poll() is None:
            _kill(proc)
        proc.wait()
    if timed_out:
        raise DeadlineExceeded(
            f"the sandboxed unpickle ran past {wall:.3g} s of wall time and was killed",
            hint="the value is too slow to load; use list_artifacts for its size and type",
        )
    code = proc.returncode
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and _MARK not in out:
        raise DeadlineExceeded(
            f"the sandboxed unpickle used its {cpu_s} s of CPU and was killed",
            hint="the value is too costly to load; use list_artifacts for its size and type",
        )
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith(_MARK)), None)
    if line is None:
        detail = err.strip().splitlines()[-1][:300] if err.strip() else f"exit code {code}"
        if "MemoryError" in err:
            raise TooLarge(f"the sandboxed unpickle ran out of its {memory_bytes >> 20} MiB", hint="the value is too large to load here")
        raise BackendError(f"the sandboxed unpickle failed without an answer ({detail})", hint="the value's own code may have ended the process")
    try:
        result = json.loads(line[len(_MARK):])
    except ValueError:
        raise BackendError("the sandbox answered malformed JSON", hint="the value's own code may have written to the channel") from None
    if not isinstance(result, dict):
        raise BackendError("the sandbox answered malformed JSON", hint="the value's own code may have written to the channel")
    if not result.get("ok"):
        message = str(result.get("message", ""))[:300]
        if result.get("error") == "too_large":
            raise TooLarge(f"{message} ({memory_bytes >> 20} MiB)", hint="the value is too large to load here")
        raise BackendError(f"the value could not be loaded in the sandbox: {message}", hint="it may need a library or flow module that is not installed here")
    summary = result.get("summary")
    return SandboxResult(
        type=str(result.get("type", ""))[:300],
        repr=str(result.get("repr", ""))[: max_chars + 1],
        truncated=bool(result.get("truncated")),
        summary=summary if isinstance(summary, dict) else {},
    )


def _exchange(proc: subprocess.Popen[bytes], data: bytes, end: float) -> tuple[str, str, bool]:
    """Write data, read stdout/stderr up to a cap each, until EOF or `end`; (out, err, timed_out)."""
    assert proc.stdin and proc.stdout and proc.stderr
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    open_fds = set(bufs)
    pending = memoryview(data)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    writing = True
    while open_fds:
        left = end - time.monotonic()
        if left <= 0:
            return bufs[proc.stdout.fileno()].decode("utf-8", "replace"), "", True
        wfds = [stdin_fd] if writing else []
        readable, writable, _ = select.select(list(open_fds), wfds, [], min(left, 0.5))
        if writable:
            try:
                n = os.write(stdin_fd, pending[:65536])
                pending = pending[n:]
            except BrokenPipeError:
                pending = pending[:0]
            if not pending:
                proc.stdin.close()
                writing = False
        for fd in readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            buf = bufs[fd]
            buf += chunk
            if len(buf) > _READ_CAP:  # keep the tail: the answer is the last line
                del buf[: len(buf) - _READ_CAP]
    return bufs[proc.stdout.fileno()].decode("utf-8", "replace"), bufs[proc.stderr.fileno()].decode("utf-8", "replace"), False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.kill()
    except ProcessLookupError:
        pass
