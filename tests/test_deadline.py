"""Deadlines: the contextvar API, and the CLI ending by its deadline even inside C code."""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from metaflow_agent import _deadline
from metaflow_agent._errors import DeadlineExceeded


def test_check_and_remaining() -> None:
    assert _deadline.remaining() is None
    _deadline.check()  # no deadline: nothing to do
    assert _deadline.timeout(5.0) == 5.0
    with _deadline.deadline(0.2) as d:
        assert 0 < _deadline.remaining() <= 0.2  # type: ignore[operator]
        assert _deadline.timeout(5.0) <= 0.2
        assert _deadline.timeout(0.01) == 0.01
        time.sleep(0.25)
        with pytest.raises(DeadlineExceeded) as info:
            _deadline.check("reading logs")
        assert "0.2-second deadline while reading logs" in info.value.message and "METAFLOW_AGENT_DEADLINE_S" in info.value.hint
        with pytest.raises(DeadlineExceeded):
            _deadline.timeout(5.0)
        assert d.remaining() < 0
    assert _deadline.current() is None


def test_nested_keeps_the_tighter_deadline() -> None:
    with _deadline.deadline(1) as outer:
        with _deadline.deadline(100) as inner:
            assert inner is outer
        with _deadline.deadline(0.5) as tighter:
            assert tighter.at < outer.at
        assert _deadline.current() is outer


def test_threads_started_with_the_context_see_it() -> None:
    seen: list[float | None] = []
    with _deadline.deadline(3):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=lambda: seen.append(ctx.run(_deadline.remaining)))
        t.start()
        t.join()
    assert seen[0] is not None and 0 < seen[0] <= 3


@pytest.mark.parametrize("raw, expected", [("", 30.0), ("5", 5.0), ("0.5", 0.5), ("-1", 30.0), ("nan", 30.0), ("abc", 30.0), ("1e9", 3600.0)])
def test_env(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv(_deadline.ENV, raw)
    assert _deadline.default_seconds() == expected


def test_bad_deadline_value() -> None:
    with pytest.raises(ValueError):
        with _deadline.deadline(0):
            pass


# --------------------------------------------------------------------------- the CLI
# hashing a tuple that shares itself 10**25 times: C code that holds the GIL and never checks signals
_SPIN_IN_C = "a = (0,) * 10\n    for _ in range(25): a = (a,) * 10\n    hash(a)"
_SLEEP = "import time; time.sleep(600)"


def _cli(body: str, *args: str, deadline: str = "1") -> tuple[int, str, str, float]:
    script = (
        "import sys\n"
        "import metaflow_agent.cli as cli\n"
        f"def spin(fn, ns):\n    {body}\n"
        "cli.call = spin\n"
        f"sys.exit(cli.main({['capabilities', *args]!r}))\n"
    )
    env = {**os.environ, _deadline.ENV: deadline}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def test_cli_cooperative_stop_at_the_deadline() -> None:
    code, out, err, took = _cli(_SLEEP)
    assert code == 2 and out == ""
    assert "error: the call ran past its 1-second deadline" in err and "hint:" in err
    assert took < 1 + _deadline.GRACE_S  # the alarm, not the supervisor


def test_cli_hard_stop_inside_c_code() -> None:
    code, out, err, took = _cli(_SPIN_IN_C, "--json")
    assert code == 2
    body = json.loads(err.strip().splitlines()[-1])
    assert body["error"] == "deadline_exceeded" and "stopped by force" in body["message"]
    assert 1 + _deadline.GRACE_S <= took < 1 + _deadline.GRACE_S + 5


def test_cli_within_the_deadline_is_unchanged() -> None:
    code, out, err, _ = _cli("return __import__('metaflow_agent').capabilities()", "--json")
    assert code == 0 and json.loads(out)["backend"] and err == ""
