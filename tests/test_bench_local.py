"""The local benchmark's yardstick: its fast writer writes what Metaflow writes, and its three
contenders (naive Client API code, metaflow_agent, the file-system floor) give the same answers."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds worlds and runs every contender in processes of their own

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is not an installed package

from benchmarks.localworld import compare_trees  # noqa: E402


def test_fast_writer_matches_metaflows_writers_and_the_check_can_fail(tmp_path: Path) -> None:
    # Metaflow's writers change the process's Metaflow state (metadata provider, root): in a process of their own.
    code = f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.localworld import verify_sample; print(json.dumps(verify_sample({str(tmp_path)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    fast = str(tmp_path / "fast" / ".metaflow")
    ours = str(tmp_path / "metaflow" / ".metaflow")
    # Tamper with one metadata row and one log: the comparison must see both.
    row = sorted(glob.glob(f"{fast}/VerifyTasksFlow/*/work/*/_meta/sysmeta_attempt_ok_*.json"))[0]
    data = json.loads(Path(row).read_text())
    data["value"] = "True" if data["value"] == "False" else "False"
    Path(row).write_text(json.dumps(data))
    log = sorted(glob.glob(f"{fast}/VerifyTasksFlow/*/start/*/0.runtime_stdout.log"))[0]
    with open(log, "ab") as f:
        f.write(b"one more line\n")
    diffs = [d for d in compare_trees(ours, fast) if not (d.startswith("only in") and "/data/" in d)]
    assert any(row.split(".metaflow/")[1] in d for d in diffs)
    assert any(log.split(".metaflow/")[1] in d and "log" in d for d in diffs)


def test_naive_ours_and_floor_agree_on_a_small_world(tmp_path: Path) -> None:
    from benchmarks.local import run_local

    lines: list[str] = []
    out = run_local(tmp_path / "work", tmp_path / "cache", [60], reps=1, cold_reps=1, budget_s=5, cli_reps=1, say=lines.append)
    rows = {(r["question"], r["contender"]): r for r in out["rows"]}
    questions = {r["question"] for r in out["rows"]}
    assert len(questions) == 6
    for q in questions:
        naive = rows[(q, "naive")]
        assert naive["error"] is None, naive
        assert naive["found"], f"{q}: the naive code found nothing, the comparison would prove nothing"
        for c in ("ours", "floor"):
            r = rows[(q, c)]
            assert r["error"] is None, (c, r)
            assert r["found"] == naive["found"], (q, c, r["found"], naive["found"])
            assert r["wall_ms"] > 0 and r["cold_wall_ms"] > 0
            assert r["opens"] + r["listings"] > 0 and r["bytes"] > 0
    cli = {r["what"]: r for r in out["cli"]}
    assert all(r["rc"] == 0 for r in out["cli"]), out["cli"]
    assert cli["metaflow-agent list-runs"]["found"] == cli["naive (fresh process)"]["found"] == cli["floor (fresh process)"]["found"]
    assert os.path.exists(tmp_path / "cache")
