"""`metaflow-agent demo` end to end, once, with a small foreach."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

QUESTIONS = ["failed_runs", "run_summary", "failed_tasks", "log_tail", "log_grep", "artifacts", "preview", "search", "compare"]


@pytest.mark.slow  # builds real runs
def test_demo_builds_runs_and_compares_costs(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "metaflow_agent", "demo", "--width", "12", "--keep", str(root)],
        check=False, capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    # Progress while building, one line per run.
    assert "Building example runs in" in out
    assert out.count("  ✓ ") == 4

    # The failed tasks of the foreach: the last 3 shards, and the flaky one that succeeded on retry.
    for shard in (9, 10, 11):
        assert f"BAD_SHARD {shard}: corrupt input" in out
    assert "retried_ok" in out and "FLAKY_SHARD 1" in out
    # The log tail, read by both APIs, and the grep.
    assert out.count("training done: final loss") >= 1
    assert "ERROR step 4321: gradient overflow" in out
    # Artifacts with sizes and types, including the 20 MB one; the comparison of the two training runs.
    assert "weights" in out and "20971529" in out and "bytes" in out
    assert "lr    changed" in out

    # Each answer is followed by both costs; the final table has every question and a total.
    assert out.count("  cost  metaflow_agent: ") == len(QUESTIONS)
    assert out.count("        Client API:     ") == len(QUESTIONS)
    table = out[out.index("Cost of the same questions"):]
    for key in QUESTIONS + ["total"]:
        assert any(line.startswith(key) for line in table.splitlines()), key
    assert "sys.addaudithook" in table

    results = {r["key"]: r for r in json.loads((root / "demo_results.json").read_text())}
    assert list(results) == QUESTIONS
    for r in results.values():
        assert r["client"]["opens"] > 0 and r["agent_cost"]["datastore_reads"] > 0
        assert r["client_error"] is None
    # The log tail reads a few kB where the Client reads the whole multi-MB log.
    tail = results["log_tail"]
    assert tail["client"]["bytes"] > 5_000_000
    assert tail["agent_cost"]["datastore_bytes"] < 100_000
    # The audit hook agrees with metaflow_agent's own read counter.
    audited = sum(r["agent_audit"]["opens"] + r["agent_audit"]["listings"] for r in results.values())
    reported = sum(r["agent_cost"]["datastore_reads"] for r in results.values())
    assert abs(audited - reported) <= max(10, reported // 20)
    assert (root / "flows" / "shards_flow.py").exists()  # the kept root is self-contained
    assert "Ask your own questions" in out
    # The kept runs come with commands that find them whoever asks: runs made under the stand-in
    # user 'demo' are outside any real user's namespace, so listing and search say --no-namespace.
    asks = out[out.index("Ask your own questions"):]
    made_by = re.search(r"made by user '([^']+)'", out)
    assert made_by and "metaflow-agent list-runs DemoTrainFlow" in asks and "metaflow-agent search-artifacts" in asks
    assert asks.count("--no-namespace") == (2 if made_by.group(1) == "demo" else 0)
