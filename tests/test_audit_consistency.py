"""The audit cannot drift from the code: re-trace its questions and compare with audit/traces.json.

`python -m audit` records, per question, size, service generation and contender, how many
requests went to each route and how many datastore files of each kind were read. This test
registers the same small data set on a fresh service double, traces the same questions with
the same counting transport, and requires identical counts. If the library (or Metaflow's
Client) changes what it sends, this fails until `python -m audit` is re-run and the README
updated with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # re-traces every question on the double: about 30 s

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "audit" / "traces.json"

pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def recorded() -> dict:
    if not TRACES.exists():
        pytest.fail("audit/traces.json is missing: run `python -m audit`")
    return json.loads(TRACES.read_text())


@pytest.fixture(scope="module")
def retraced(tmp_path_factory) -> list[dict]:
    sys.path.insert(0, str(REPO))
    from audit.trace import service_world, trace

    with service_world(str(tmp_path_factory.mktemp("audit"))) as world:
        return trace(world)


def test_same_sizes_as_recorded(recorded):
    from audit.trace import MODES, SIZES

    assert recorded["sizes"] == {k: list(v) for k, v in SIZES.items()}
    assert recorded["modes"] == list(MODES)


def test_counts_match_traces_json(recorded, retraced):
    from audit.trace import counts

    want = counts(recorded["traces"])
    got = counts(retraced)
    assert set(got) == set(want)
    drift = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not drift, "the audit's traces drifted from the code; re-run `python -m audit`:\n" + "\n".join(
        f"{k}: recorded {w[:2]} now {g[:2]}" for k, (w, g) in list(drift.items())[:10])


def test_ours_flat_where_the_audit_says_so(retraced):
    """metaflow_agent's request count does not grow with tasks, runs, attempts, log or artifact size."""
    by = {}
    for t in retraced:
        if t["contender"] == "ours":
            by.setdefault((t["usecase"], t["dimension"], t["mode"]), []).append((t["size"], t["requests"]))
    for (usecase, dim, mode), series in by.items():
        if dim == "steps" or (usecase, dim, mode) == ("latest_failed_runs", "runs", "release") or (usecase, dim, mode) == (
                "artifact_search", "runs", "release"):
            continue  # per step by design; 2.5.1 cannot filter runs (bounded by the status budget instead)
        counts = [c for _, c in sorted(series)]
        assert max(counts) - min(counts) <= 1, (usecase, dim, mode, series)
