"""Opt-in full unpickling in a limited child process: opt-in, limits, kill on timeout, typed errors."""

from __future__ import annotations

import argparse
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from metaflow_agent import _deadline
from metaflow_agent._errors import BackendError, BadInput, DeadlineExceeded, NotAllowed, TooLarge
from metaflow_agent._sandbox import ENV, load_in_sandbox
from metaflow_agent._unpickle import loads


class _Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (self.code,))


class _Eval(_Exec):
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (eval, (self.code,))


@pytest.fixture
def opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1")


def test_needs_the_environment_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV, raising=False)
    marker = tmp_path / "ran"
    with pytest.raises(BadInput) as info:
        load_in_sandbox(pickle.dumps(_Exec(f"open({str(marker)!r}, 'w')")))
    assert ENV in info.value.hint and not marker.exists()
    monkeypatch.setenv(ENV, "yes")  # only "1" opts in
    with pytest.raises(BadInput):
        load_in_sandbox(pickle.dumps(1))


def test_loads_what_the_allow_list_refuses(opted_in: None) -> None:
    data = pickle.dumps(argparse.Namespace(a=1))
    with pytest.raises(NotAllowed):
        loads(data)
    out = load_in_sandbox(data)
    assert out["type"] == "argparse.Namespace" and out["repr"] == "<argparse.Namespace object>"


def test_real_values_render(opted_in: None) -> None:
    pd = pytest.importorskip("pandas")
    out = load_in_sandbox(pickle.dumps(pd.DataFrame({"a": [1, 2]})), max_chars=200)
    assert out["repr"] == "DataFrame(2 rows × 1 columns, columns={'a': [1, 2]})"
    assert out["summary"]["shape"] == [2, 1]


def test_cpu_limit(opted_in: None) -> None:
    with pytest.raises(DeadlineExceeded, match="CPU"):
        load_in_sandbox(pickle.dumps(_Exec("while True: pass")), cpu_s=1, wall_s=30)


def test_memory_limit(opted_in: None) -> None:
    with pytest.raises(TooLarge):
        load_in_sandbox(pickle.dumps(_Exec("x = bytearray(8 << 30)")), memory_bytes=1 << 30)


def test_wall_limit_kills(opted_in: None) -> None:
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded, match="wall time"):
        load_in_sandbox(pickle.dumps(_Exec("import time; time.sleep(600)")), wall_s=1)
    assert time.perf_counter() - start < 3


def test_call_deadline_bounds_the_wall_time(opted_in: None) -> None:
    start = time.perf_counter()
    with _deadline.deadline(1), pytest.raises(DeadlineExceeded):
        load_in_sandbox(pickle.dumps(_Exec("import time; time.sleep(600)")), wall_s=60)
    assert time.perf_counter() - start < 3


def test_credentials_stay_out(opted_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecret")
    monkeypatch.setenv("METAFLOW_SERVICE_AUTH_KEY", "alsosecret")
    out = load_in_sandbox(pickle.dumps(_Eval("[__import__('os').environ.get(k) for k in ('AWS_SECRET_ACCESS_KEY', 'METAFLOW_SERVICE_AUTH_KEY')]")))
    assert out["repr"] == "[None, None]"


def test_files_get_no_content(opted_in: None, tmp_path: Path) -> None:
    target = tmp_path / "written"
    load_in_sandbox(pickle.dumps(_Exec(f"f = open({str(target)!r}, 'w')\ntry:\n    f.write('x' * 100); f.close()\nexcept OSError:\n    pass")))
    assert not target.exists() or target.stat().st_size == 0  # RLIMIT_FSIZE=0: creating is possible, writing is not


def test_noise_on_stdout_does_not_hide_the_answer(opted_in: None) -> None:
    out = load_in_sandbox(pickle.dumps(_Eval("[print('x' * 1000) for _ in range(5000)] and 7")))
    assert out["repr"] == "7"


def test_child_that_exits_is_a_typed_error(opted_in: None) -> None:
    with pytest.raises(BackendError, match="without an answer"):
        load_in_sandbox(pickle.dumps(_Exec("import os; os._exit(3)")))
    with pytest.raises(BackendError, match="could not be loaded"):
        load_in_sandbox(b"garbage")


def test_safe_from_a_threaded_parent(opted_in: None) -> None:
    """Children are started with exec (no fork of this threaded process) and run side by side."""
    assert threading.active_count() >= 1
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: load_in_sandbox(pickle.dumps({"i": i}))["repr"], range(4)))
    assert outs == [f"{{'i': {i}}}" for i in range(4)]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_child_dies_with_its_parent(opted_in: None) -> None:
    """A killed caller (e.g. an MCP worker past its deadline) does not leave its sandbox running."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import pickle, sys\n"
        "sys.path.insert(0, %r)\n"
        "from test_sandbox import _Exec\n"
        "from metaflow_agent._sandbox import load_in_sandbox\n"
        "load_in_sandbox(pickle.dumps(_Exec('import time; time.sleep(600)')), wall_s=600)\n"
    ) % str(Path(__file__).parent)
    parent = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, ENV: "1"})
    try:
        for _ in range(100):
            kids = _children(parent.pid)
            if kids:
                break
            time.sleep(0.1)
        assert kids, "the sandbox did not start"
        time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(50):
            if not any(_alive(k) for k in kids):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the sandbox outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
