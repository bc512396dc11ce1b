"""The service path with `responses`: exact request sequences from the real
captures, and faults injected at the transport."""

from __future__ import annotations

import json
import re

import pytest
import requests
import responses
from responses import matchers
from service_double import ServiceDouble, captures
from service_double.captures import Capture

import metaflow_agent as ma
from metaflow_agent._cost import metered
from metaflow_agent._pathspec import Pathspec
from metaflow_extensions.agent.plugins.agent_metadata import transport as transport_mod

URL = "http://127.0.0.1:9"  # never contacted: responses intercepts


def load_captures(generation: str) -> dict[str, Capture]:
    """Captures by id (the double's loader: `_body_same_as` resolved)."""
    return {c.id: c for c in captures.load_captures(generation)}


def register(rsps: responses.RequestsMock, capture: Capture) -> None:
    """Serve one real capture for exactly its path and query."""
    body = capture.body
    text = body if isinstance(body, str) and capture.path in ("/ping", "/version") else json.dumps(body)
    rsps.add(
        responses.GET,
        URL + capture.path,
        body=text,
        status=capture.status,
        headers={k: v for k, v in capture.headers.items() if k != "Content-Type"},
        content_type=capture.headers.get("Content-Type", "text/plain; charset=utf-8"),
        match=[matchers.query_param_matcher(capture.query)],
    )


@pytest.fixture
def service_env(monkeypatch, tmp_path):
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", URL)
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path))
    (tmp_path / ".metaflow").mkdir()
    monkeypatch.setattr(transport_mod, "BACKOFF_S", (0.0, 0.0, 0.0))
    from metaflow_agent._backend import reset_backends

    reset_backends()
    yield
    reset_backends()


def sent(rsps: responses.RequestsMock) -> list[str]:
    return [c.request.method + " " + c.request.url.replace(URL, "") for c in rsps.calls]


def widened(capture: Capture) -> Capture:
    """The same exchange asked as status:eq=running,failed. The data set has no running
    run (`synth-runs-status-running` is []), so master's answer is the captured one."""
    from dataclasses import replace

    return replace(capture, query={**capture.query, "status:eq": "running,failed"})


def test_status_filter_never_trusted_without_status_field(service_env):
    """A page that comes back without master's derived status is re-derived, not trusted."""
    caps = load_captures("master")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register(rsps, caps["flows-limit1"])
        rows = caps["runs-hello"].body  # unfiltered rows: no status field; heartbeats long stale
        rsps.add(responses.GET, URL + "/flows/HelloFlow/runs", json=rows, headers={"X-Limit": "5"})
        rsps.add(responses.GET, URL + "/flows/HelloFlow/runs/14/steps/end/filtered_tasks", json=[])
        # Run 14's newest metadata rows are its end task's: attempt_ok False, the last thing it wrote.
        rsps.add(responses.GET, URL + "/flows/HelloFlow/runs/14/metadata", json=caps["task-meta-hello-14-end-1170"].body)
        # The others are short runs: their newest rows date their end (none here: no finish time).
        rsps.add(responses.GET, re.compile(re.escape(URL) + r"/flows/HelloFlow/runs/\d+/metadata"), json=[])
        for r in rows:
            if r["run_number"] != 14:
                rsps.add(responses.GET, URL + f"/flows/HelloFlow/runs/{r['run_number']}/steps/end/filtered_tasks",
                         json=[f"HelloFlow/{r['run_number']}/end/1"])
        got = ma.list_runs("HelloFlow", status="failed", limit=5, namespace=None)
        assert [r.run_id for r in got.runs] == ["14"]
        assert "GET /flows/HelloFlow/runs/14/metadata?_limit=50" in sent(rsps)  # re-derived from its own rows


# --- faults -------------------------------------------------------------------------


def test_503_then_success_is_retried(service_env):
    caps = load_captures("master")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL + "/flows/WideFlow/runs/2", status=503)
        register(rsps, caps["run-wide-2"])
        with metered() as meter:
            from metaflow_agent._backend import get_backend

            rec = get_backend().meta.get_run(Pathspec("WideFlow", "2"))
        assert rec.run_id == "2"
        assert meter.metadata_requests == 2


def test_500_is_typed_error(service_env):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL + "/flows/WideFlow/runs/2", status=500, json={"detail": "boom"})
        with pytest.raises(ma.ServiceUnavailable) as err:
            ma.run_summary("WideFlow/2")
        assert "500" in str(err.value) and err.value.hint


def test_persistent_503_gives_up_bounded(service_env):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL + "/flows/WideFlow/runs/2", status=503)
        with pytest.raises(ma.ServiceUnavailable):
            ma.run_summary("WideFlow/2")
        assert len(rsps.calls) == len(transport_mod.BACKOFF_S) + 1


def test_timeout_is_typed_error(service_env):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL + "/flows/WideFlow/runs/2", body=requests.Timeout("read timed out"))
        with pytest.raises(ma.ServiceUnavailable) as err:
            ma.run_summary("WideFlow/2")
        assert "timed out" in str(err.value)


def test_connection_refused_is_typed_error(service_env, monkeypatch):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("METAFLOW_SERVICE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(ma.ServiceUnavailable) as err:
        ma.run_summary("WideFlow/2")
    assert "not reachable" in str(err.value)
    assert "METAFLOW_SERVICE_URL" in err.value.hint


def test_malformed_json_is_typed_error(service_env):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL + "/flows/WideFlow/runs/2", body="{not json", status=200)
        with pytest.raises(ma.ServiceProtocolError):
            ma.run_summary("WideFlow/2")


def test_unknown_run_and_flow_are_not_found(service_env):
    caps = load_captures("master")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        for cid in ("run-unknown", "flow-wide", "run-unknown-flow", "flow-unknown"):
            register(rsps, caps[cid])
        with pytest.raises(ma.NotFound) as err:
            ma.run_summary("WideFlow/999999")
        assert "list_runs" in err.value.hint
        with pytest.raises(ma.NotFound) as err:
            ma.run_summary("NoSuchFlow/1")
        assert "flow" in str(err.value)


def test_missing_filtered_tasks_route_falls_back(service_env):
    """A service older than 2.5.0 answers 404 (not JSON) on filtered_tasks: per-task metadata instead."""
    caps = load_captures("release")
    from metaflow_agent._backend import get_backend

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register(rsps, caps["flows-limit1"])
        rsps.add(responses.GET, URL + "/flows/WideFlow/runs/2/steps/work/filtered_tasks", status=404, body="404: Not Found")
        register(rsps, caps["tasks-wide-2-work"])
        for t in range(6, 16):
            cid = f"task-meta-wide-2-work-{t}"
            if cid in caps:
                register(rsps, caps[cid])
            else:  # rows of an OK task, re-labelled
                rows = [dict(r, task_id=t) for r in caps["task-meta-wide-2-work-6"].body]
                rsps.add(responses.GET, URL + f"/flows/WideFlow/runs/2/steps/work/tasks/{t}/metadata", json=rows)
        with metered():
            failed = get_backend().meta.filtered_tasks(Pathspec("WideFlow", "2", "work"), "attempt_ok", "False")
        assert failed == {"9"}
        assert get_backend().meta.caps.filtered_tasks is False


# --- exact sequences on the captured data set, served by the double --------------------------
# (The double logs each request it receives; it is checked against every real capture.)


@pytest.fixture(scope="module")
def captured_double():
    """The double seeded with the captures' data set."""
    with ServiceDouble(mode="master", records=captures.seed_records()) as d:
        yield d


@pytest.fixture
def on_double(captured_double, monkeypatch, tmp_path):
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", captured_double.url)
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path))
    (tmp_path / ".metaflow").mkdir()
    from metaflow_agent._backend import reset_backends

    reset_backends()
    captured_double.requests_seen.clear()
    yield captured_double
    captured_double.mode = "master"
    reset_backends()


def seen(double: ServiceDouble, start: int = 0) -> list[str]:
    out = []
    for method, path, query in double.requests_seen[start:]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        out.append(f"{method} {path}" + (f"?{q}" if q else ""))
    return out


W = "/flows/WideFlow/runs/2"


def _ft(step: str, field: str, pattern: str) -> str:
    return f"GET {W}/steps/{step}/filtered_tasks?metadata_field_name={field}&pattern={pattern}"


@pytest.mark.parametrize("mode", ["master", "release"])
def test_failed_tasks_exact_sequence(on_double, mode):
    """failed_tasks(WideFlow/2): the same request sequence on both generations, none per task."""
    double = on_double
    double.mode = mode
    got = ma.failed_tasks("WideFlow/2")
    assert [(t.pathspec, t.status, t.attempts, t.failed_attempts, t.foreach_index) for t in got.failed] == [
        ("WideFlow/2/work/9", "failed", 2, [0, 1], "items=3")
    ]
    assert seen(double) == [
        f"GET {W}",
        f"GET {W}/steps",  # no end step among them: no end-step check
        "GET /flows?_limit=1",  # capability probe, once per URL (on first need)
        _ft("start", "attempt_ok", "True"),
        _ft("start", "attempt_ok", "False"),
        _ft("start", "attempt", "."),
        _ft("work", "attempt_ok", "True"),
        _ft("work", "attempt_ok", "False"),
        _ft("work", "attempt", "."),
        f"GET {W}/steps/_parameters/artifacts",  # where the run recorded its data, once per run
        f"GET {W}/steps/work/tasks/9/metadata",  # details of the one task returned (and its own root)
    ]
    assert got.cost.metadata_requests == len(double.requests_seen)


def test_latest_failed_runs_sequences(on_double):
    """10 latest failed SynthFlow runs of 2,002 (the captured mix: some ends failed, some runs
    killed before their end). Master: the filtered listing, then one look at each examined run's
    newest metadata rows, which tell failed from crashed (and date its end). 2.5.1: one listing,
    an end-step check per run examined, and for each run without a successful end its steps and
    the failed tasks of its newest step, then the attempts of the task found."""
    double = on_double
    ma.capabilities()
    first = len(double.requests_seen)
    master = ma.list_runs("SynthFlow", status="failed", limit=10, namespace=None)
    sent = seen(double, first)
    # "failed" also asks for master's "running" rows: a run whose heartbeat is late may have failed.
    assert sent[0] == "GET /flows/SynthFlow/runs?status:eq=running,failed&_limit=10"
    looks = [p for p in sent if p.endswith("/metadata?_limit=50")]
    pages = [p for p in sent if p.startswith("GET /flows/SynthFlow/runs?")]
    assert len(sent) == len(pages) + len(looks)  # nothing else: no step search, no task lookup
    looked = [p.split("/")[4] for p in looks]
    shown = [r.run_id for r in master.runs]
    assert [r for r in looked if r in shown] == shown and len(looked) == master.scanned
    assert {r.status for r in master.runs} == {"failed"}
    from metaflow_agent import reset_backends

    reset_backends()
    double.mode = "release"
    ma.capabilities()
    first = len(double.requests_seen)
    release = ma.list_runs("SynthFlow", status="failed", limit=10, namespace=None)
    sent_release = seen(double, first)
    assert sent_release[0] == "GET /flows/SynthFlow/runs"  # the one unfiltered listing
    end_checks = [p for p in sent_release if p.endswith("/steps/end/filtered_tasks?metadata_field_name=attempt_ok&pattern=True")]
    assert len(end_checks) == release.scanned <= 300
    unfinished = {p.split("/")[4] for p in sent_release if p.endswith("/steps")}  # runs without a successful end
    assert {r.run_id for r in release.runs} <= unfinished
    assert len(sent_release) < 1 + release.scanned + 5 * len(unfinished)
    assert [r.run_id for r in release.runs] == [r.run_id for r in master.runs]


@pytest.mark.parametrize("mode", ["master", "release"])
def test_provider_bulk_routes_are_bounded(on_double, mode):
    """The provider's run-level routes: the captured counts, cut to the limit and said so."""
    from metaflow_extensions.agent.plugins.agent_metadata.provider import (
        AgentMetadataProvider,
    )

    double = on_double
    double.mode = mode
    q = AgentMetadataProvider.queries(double.url)
    with metered():
        rows, complete = q.run_metadata(Pathspec("WideFlow", "2"))
    assert (len(rows), complete) == (217, True)  # run-meta-wide-2
    with metered():
        rows, complete = q.artifacts(Pathspec("WideFlow", "2"), limit=100)
    assert (len(rows), complete) == (100, False)  # 241 exist (run-artifacts-wide-2)
    with metered() as meter:
        rows, complete = q.artifacts(Pathspec("WideFlow", "2", "work", "6"))
    assert (len(rows), complete) == (21, True)
    assert meter.metadata_requests == 1


def test_queries_send_only_get(on_double, monkeypatch):
    """Every request every query sends is a GET (checked at the transport), on both generations."""
    seen_methods = []
    real_send = transport_mod.CountingAdapter.send

    def spy(self, request, **kw):
        seen_methods.append(request.method)
        return real_send(self, request, **kw)

    monkeypatch.setattr(transport_mod.CountingAdapter, "send", spy)
    double = on_double
    from metaflow_agent._backend import reset_backends

    for mode in ("master", "release"):
        double.mode = mode
        reset_backends()
        ma.capabilities()
        ma.list_runs("SynthFlow", status="failed", limit=5, namespace=None)
        ma.list_runs("HelloFlow", since="3650d", tags_all=["team:a"], namespace=None)
        ma.run_summary("WideFlow/2")
        ma.failed_tasks("WideFlow/2")
        ma.run_summary("HelloFlow/14")
        ma.compare_runs("HelloFlow/14", "HelloFlow/15")
    assert len(seen_methods) > 20 and set(seen_methods) == {"GET"}


def test_capabilities_detected_per_generation(on_double, monkeypatch):
    """Filters and cursors are detected by behaviour (both report 2.5.1); no datastore needed."""
    from metaflow_agent._backend import reset_backends

    monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
    monkeypatch.delenv("METAFLOW_DATASTORE_SYSROOT_S3", raising=False)
    from metaflow import metaflow_config

    monkeypatch.setattr(metaflow_config, "DATASTORE_SYSROOT_S3", None)
    double = on_double
    seen = {}
    for mode in ("master", "release"):
        double.mode = mode
        reset_backends()
        caps = ma.capabilities()
        seen[mode] = (caps.backend, caps.service_version, caps.server_filters, caps.server_cursors)
        assert caps.datastore.startswith("s3 (unresolved")
        assert caps.cost.metadata_requests == 1  # the one probe
    assert seen == {"master": ("service", "2.5.1", True, True), "release": ("service", "2.5.1", False, False)}


def test_provider_classmethods_answer_on_their_own(on_double):
    """The extended provider's query methods, used directly (no metaflow_agent function): typed
    records from the configured service, the same sets the library's plans work from."""
    from metaflow_extensions.agent.plugins.agent_metadata.provider import (
        AgentMetadataProvider as P,
    )

    from metaflow_agent._records import RunQuery

    steps = P.task_outcomes("WideFlow/2")
    work = next(so for so in steps if so.step == "work")
    assert work.failed == {"9"} and "9" not in work.ok and len(work.started) == 10
    attempts = P.task_attempts("WideFlow/2/work/9")
    assert [(a.attempt, a.ok) for a in attempts.attempts] == [(0, False), (1, False)]
    rows, complete = P.artifact_records("WideFlow/2/work/6")
    assert complete and len(rows) == 21 and all(r["task_id"] == 6 for r in rows)
    meta, complete = P.run_task_metadata("WideFlow/2")
    assert complete and len(meta) == 217
    scan = P.query_runs("SynthFlow", RunQuery(since_ms=0), limit=3)
    assert len(scan.runs) == 3 and scan.more and all(r.service_status in ("completed", "failed", None) for r in scan.runs)
    with pytest.raises(ma.BadPathspec):
        P.task_attempts("WideFlow/2/work")
