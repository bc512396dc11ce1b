"""The audit cannot drift from the code: re-trace its questions and functions and compare with audit/traces.json.

`python -m audit` records, per question and per function call, size, service generation and
(for the functions) with or without the query service, how many requests went to each route and
how many datastore files of each kind were read. This test registers the same data set on a fresh
service double (and, when PostgreSQL is installed, copies it into a fresh database for the real
query service), traces the same calls with the same counters, and requires identical counts and
the same answer in every configuration. If the library (or Metaflow's Client) changes what it
sends, this fails until `python -m audit` is re-run and the README updated with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # re-traces every call on the double (and the query service): about 30 s

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "audit" / "traces.json"

pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def recorded() -> dict:
    if not TRACES.exists():
        pytest.fail("audit/traces.json is missing: run `python -m audit`")
    return json.loads(TRACES.read_text())


@pytest.fixture(scope="module")
def retraced(tmp_path_factory) -> dict:
    """Every trace again, on a fresh data set; with the query service when PostgreSQL is here."""
    sys.path.insert(0, str(REPO))
    from pg import PgUnavailable, find_bin_dir

    from audit.trace import disagreements, trace_endpoints, trace_functions, trace_questions
    from audit.world import service_world

    def run(with_qs: bool) -> dict:
        with service_world(str(tmp_path_factory.mktemp("audit")), with_query_service=with_qs) as world:
            functions = trace_functions(world)
            return {"questions": trace_questions(world), "functions": functions, "endpoints": trace_endpoints(world),
                    "disagreements": disagreements(functions), "query_service": with_qs}

    if find_bin_dir() is not None:
        try:
            return run(True)
        except PgUnavailable:  # binaries found but not usable here (e.g. root without an unprivileged user)
            pass
    return run(False)


def _drift(want: dict, got: dict) -> list[str]:
    missing, extra = sorted(set(want) - set(got), key=str), sorted(set(got) - set(want), key=str)
    out = [f"not traced any more: {k}" for k in missing[:5]] + [f"not in traces.json: {k}" for k in extra[:5]]
    out += [f"{k}: recorded {want[k][:2]} now {got[k][:2]}, routes {dict(want[k][2])} now {dict(got[k][2])}"
            for k in want if k in got and want[k] != got[k]]
    return out


def test_same_sizes_as_recorded(recorded):
    from audit.trace import MODES
    from audit.world import SIZES

    assert recorded["sizes"] == {k: list(v) for k, v in SIZES.items()}
    assert recorded["modes"] == list(MODES) == ["master", "release-2.6.1", "release"]


def test_every_function_has_an_entry(recorded):
    """Each public function: traced on every generation, without and with the query service."""
    import metaflow_agent as ma

    from audit.functions import covered

    names = {f.__name__ for f in ma.FUNCTIONS}
    assert len(names) == 14 and names == covered()
    for name in names:
        configs = {(t["mode"], t["qs"]) for t in recorded["functions"] if t["function"] == name}
        assert configs == {(m, qs) for m in recorded["modes"] for qs in (False, True)}, name


def test_question_counts_match_traces_json(recorded, retraced):
    from audit.trace import question_counts

    drift = _drift(question_counts(recorded["questions"]), question_counts(retraced["questions"]))
    assert not drift, "the naive code's traces drifted; re-run `python -m audit`:\n" + "\n".join(drift[:10])


def test_function_counts_match_traces_json(recorded, retraced):
    from audit.trace import function_counts

    want = function_counts([t for t in recorded["functions"] if not t["qs"]])
    got = function_counts([t for t in retraced["functions"] if not t["qs"]])
    drift = _drift(want, got)
    assert not drift, "metaflow_agent's traces drifted; re-run `python -m audit`:\n" + "\n".join(drift[:10])


def test_query_service_counts_match_traces_json(recorded, retraced):
    from audit.trace import function_counts

    if not retraced["query_service"]:
        pytest.skip("PostgreSQL binaries not found: the query-service column is not re-traced")
    want = function_counts([t for t in recorded["functions"] if t["qs"]])
    got = function_counts([t for t in retraced["functions"] if t["qs"]])
    drift = _drift(want, got)
    assert not drift, "the query-service traces drifted; re-run `python -m audit`:\n" + "\n".join(drift[:10])
    endpoints = {(e["call"], e["dimension"], e["size"]): (e["requests"], e["rows"]) for e in retraced["endpoints"]}
    assert endpoints == {(e["call"], e["dimension"], e["size"]): (e["requests"], e["rows"]) for e in recorded["endpoints"]}


def test_same_answer_everywhere(recorded, retraced):
    """Every call answers alike on each generation and with or without the query service (same rows)."""
    assert retraced["disagreements"] == [], json.dumps(retraced["disagreements"], default=str)[:3000]
    assert recorded["disagreements"] == []


def test_what_the_readme_says_holds(retraced):
    """The audit's claims, on the re-traced counts (generations, sizes as in the README's prose)."""
    by: dict[tuple, dict[int, int]] = {}
    for t in retraced["functions"]:
        by.setdefault((t["call"], t["dimension"], t["mode"], t["qs"]), {})[t["size"]] = t["requests"]

    def counts(call: str, dim: str, mode: str = "master", qs: bool = False) -> list[int]:
        return [n for _, n in sorted(by[(call, dim, mode, qs)].items())]

    for mode in ("master", "release-2.6.1", "release"):
        # flat in tasks and attempts, 3 more per step, without the query service
        for dim in ("tasks", "attempts"):
            assert len(set(counts("failed_tasks(run)", dim, mode))) == 1, (dim, mode)
            assert len(set(counts("diagnose_run(run)", dim, mode))) == 1, (dim, mode)
        assert counts("failed_tasks(run)", "steps", mode) == [8, 14, 26]
        # at most one request, flat in size: where the run recorded its data (once per flow per process)
        for call, dim in (("task_logs(task, tail=50)", "log_lines"), ("list_artifacts(task)", "artifact_bytes")):
            assert max(counts(call, dim, mode)) <= 1 and counts(call, dim, mode)[0] == 1, (call, mode)
        # 2.5.1 pays per run examined; master and 2.6.1 per failed row
        failed_runs = counts("list_runs(flow, status='failed', limit=10)", "runs", mode)
        assert failed_runs == ([23, 97] if mode == "release" else [2, 9]), mode
        # heartbeats date long runs: fewer requests than for short ones
        long_short = counts("list_runs(flow, namespace=None)", "run_seconds", mode)
        assert long_short[1] < long_short[0], mode
    if not retraced["query_service"]:
        return
    one = ["failed_tasks(run)", "list_tasks(run)", "list_runs(flow, namespace=None)", "list_runs(flow, status='failed', limit=10)",
           "list_runs(flow, since=…, until=…, limit=100)", "run_stats(flow)", "run_stats(flow, last=10, per_step=True)",
           "run_summary(run)", "list_flows(namespace=None)", "search_artifacts(flow, name='model', runs=10)",
           "search_artifacts(flow, name='value', runs=10)"]
    for (call, dim, mode, qs), series in by.items():
        if qs and call in one:
            assert set(series.values()) == {1}, (call, dim, mode, series)
        if qs and call == "diagnose_run(run)":  # summary, tasks in problem states, the _parameters listing
            assert set(series.values()) == {3}, (call, dim, mode, series)
