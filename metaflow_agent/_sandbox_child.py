"""The sandbox's child process: limit itself, unpickle stdin, print one JSON line.

Run as a script by `_sandbox` (never imported by the package): it must not
import metaflow_agent, whose import is slow and whose state it does not need.
It loads `_repr.py` (standard library only) by path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import resource
import signal
import sys

MARK = "@@metaflow-agent-sandbox@@ "


def _limit(cpu_s: int, mem_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU at the soft limit, SIGKILL at the hard
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file of any size can be written
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no fork (ignored for root)
    except (ValueError, OSError):
        pass


def _tie_to_parent(wall_s: int) -> None:
    """End with the parent (Linux), and after wall_s seconds whatever happens to it."""
    signal.alarm(wall_s)  # default action: terminate
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    cpu_s, mem_bytes, max_chars, wall_s = (int(x) for x in sys.argv[1:5])
    out = os.fdopen(os.dup(1), "w")  # our channel; the value's own code may print to fd 1 too
    _tie_to_parent(wall_s)
    _limit(cpu_s, mem_bytes)
    spec = importlib.util.spec_from_file_location("_mfa_repr", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_repr.py"))
    assert spec and spec.loader
    rep = importlib.util.module_from_spec(spec)
    sys.modules["_mfa_repr"] = rep
    spec.loader.exec_module(rep)
    data = sys.stdin.buffer.read()
    try:
        value = pickle.loads(data)
    except MemoryError:
        result = {"ok": False, "error": "too_large", "message": "unpickling ran out of the sandbox's memory"}
    except BaseException as exc:  # the value's own code may raise anything, SystemExit included
        result = {"ok": False, "error": "unpickle", "message": f"{type(exc).__name__}: {str(exc)[:300]}"}
    else:
        try:
            text, cut = rep.bounded_repr(value, max_chars=max_chars)
            result = {"ok": True, "type": rep.type_name(value), "repr": text, "truncated": cut, "summary": rep.summary(value)}
            json.dumps(result)
        except MemoryError:
            result = {"ok": False, "error": "too_large", "message": "rendering ran out of the sandbox's memory"}
        except BaseException as exc:
            result = {"ok": False, "error": "render", "message": f"{type(exc).__name__}: {str(exc)[:300]}"}
    out.write("\n" + MARK + json.dumps(result, default=str) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
