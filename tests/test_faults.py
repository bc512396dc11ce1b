"""A faulty metadata service (the double behind tests/faults.FaultProxy): typed errors, never a
silent wrong answer.

Each case is one of issue 9's silent wrong answers or hangs: a null or empty list, a JSON 404,
rows of the wrong shape, a drip, a stall, a huge body, tasks without data.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import pytest
from faults import FaultProxy
from helpers import within
from service_double import ServiceDouble
from service_double.synth import register_simple_run, register_wide_run

import metaflow_agent as ma
from metaflow_agent import _config
from metaflow_agent._backend import reset_backends
from metaflow_agent._errors import AgentError, BackendError, DeadlineExceeded, ServiceProtocolError, TooLarge
from metaflow_extensions.agent.plugins.agent_metadata import transport as transport_mod



@pytest.fixture(scope="module")
def deployment() -> Any:
    """The double (master) with synthetic runs, and a proxy in front of it."""
    with ServiceDouble(mode="master") as double, FaultProxy(double.url) as proxy:
        wide = "SynthFaultWide/" + register_wide_run(double.url, "SynthFaultWide", 6, failed={1, 2}, retried_ok={3})
        ok = "SynthFault/" + register_simple_run(double.url, "SynthFault", end_ok=True)
        bad = "SynthFault/" + register_simple_run(double.url, "SynthFault", end_ok=False)
        yield type("Deployment", (), {"double": double, "proxy": proxy, "wide": wide, "ok": ok, "bad": bad})


@pytest.fixture(params=["master", "release"])
def faulty(request: pytest.FixtureRequest, deployment: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    root = tempfile.mkdtemp(prefix="faults-")
    os.makedirs(os.path.join(root, ".metaflow"))
    deployment.double.mode = request.param
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", deployment.proxy.url)
    monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "local")
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", root)
    monkeypatch.setattr(transport_mod, "BACKOFF_S", (0.0, 0.0, 0.0))
    later = time.time() + 3600  # the synthetic runs' heartbeats are stale: they are finished
    monkeypatch.setattr(_config, "now_s", lambda: later)
    deployment.proxy.clear()
    reset_backends()
    yield deployment
    deployment.proxy.clear()
    deployment.double.mode = "master"
    reset_backends()


# --------------------------------------------------------------------------- the proxy itself
def test_proxy_forwards_unchanged(faulty: Any) -> None:
    """Without faults the answers are the double's own (the baseline the faults change)."""
    failed = ma.failed_tasks(faulty.wide)
    assert failed.total_failed == 2 and [t.status for t in failed.failed] == ["failed", "failed", "retried_ok"]
    assert ma.run_summary(faulty.bad).status == "failed"
    assert all(s.fault is None for s in faulty.proxy.seen) and faulty.proxy.seen


# --------------------------------------------------------------------------- typed today
def test_5xx_everywhere_is_service_unavailable(faulty: Any) -> None:
    faulty.proxy.add(r"", "status", status=503)
    with pytest.raises(ma.ServiceUnavailable):
        ma.run_summary(faulty.bad)


def test_reset_is_service_unavailable(faulty: Any) -> None:
    faulty.proxy.add(r"", "reset")
    with pytest.raises(ma.ServiceUnavailable):
        ma.failed_tasks(faulty.wide)


def test_malformed_json_is_a_protocol_error(faulty: Any) -> None:
    faulty.proxy.add(r"/filtered_tasks$", "body", body=b"[\"SynthFault/1/end/3\", ")
    with pytest.raises(ServiceProtocolError):
        ma.run_summary(faulty.bad)


def test_truncated_body_is_typed(faulty: Any) -> None:
    faulty.proxy.add(r"/steps$", "truncate", size=5)
    with pytest.raises(AgentError):
        ma.run_summary(faulty.bad)


def test_wrong_shape_step_list_is_a_protocol_error(faulty: Any) -> None:
    faulty.proxy.add(r"/steps$", "shape")
    with pytest.raises(ServiceProtocolError):
        ma.run_summary(faulty.bad)


def test_one_transient_5xx_is_retried(faulty: Any) -> None:
    faulty.proxy.add(r"/filtered_tasks$", "status", status=502, times=1)
    assert ma.run_summary(faulty.bad).status == "failed"


# --------------------------------------------------------------------------- the silent wrong answers
def test_null_filtered_tasks_is_not_no_failures(faulty: Any) -> None:
    faulty.proxy.add(r"/filtered_tasks$", "null")
    with pytest.raises(ServiceProtocolError):
        ma.failed_tasks(faulty.wide)


def test_empty_filtered_tasks_is_not_all_zeros(faulty: Any) -> None:
    faulty.proxy.add(r"/filtered_tasks$", "empty")
    with pytest.raises(ServiceProtocolError):
        ma.run_summary(faulty.bad)


def test_404_with_json_on_filtered_tasks_is_an_error(faulty: Any) -> None:
    faulty.proxy.add(r"/filtered_tasks$", "not_found_json", body={})
    with pytest.raises(BackendError):
        ma.failed_tasks(faulty.wide)


def test_null_run_list_is_not_an_empty_complete_answer(faulty: Any) -> None:
    faulty.proxy.add(r"/runs$", "null")
    with pytest.raises(ServiceProtocolError):
        ma.list_runs("SynthFault", namespace=None)


def test_garbage_rows_do_not_make_a_failed_run_completed(faulty: Any) -> None:
    faulty.proxy.add(r"/filtered_tasks$", "garbage_rows", garbage=(7, None, ["x"]))
    with pytest.raises(ServiceProtocolError):
        ma.run_summary(faulty.bad)


def test_search_without_artifact_data_says_so(faulty: Any) -> None:
    """Tasks with no data in the configured datastore are not 'scanned, no hits, complete'."""
    found = ma.search_artifacts("SynthFault", name="*", namespace=None)
    assert not found.complete or found.hits


# --------------------------------------------------------------------------- no deadline, no size cap
def test_dripping_service_hits_the_deadline(faulty: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAFLOW_AGENT_DEADLINE_S", "2")
    faulty.proxy.add(r"/steps$", "drip", seconds=1.0)
    with pytest.raises(DeadlineExceeded):
        within(8, lambda: ma.run_summary(faulty.bad))


def test_slow_service_hits_the_deadline(faulty: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAFLOW_AGENT_DEADLINE_S", "2")
    faulty.proxy.add(r"/filtered_tasks$", "delay", seconds=3)
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        within(10, lambda: ma.run_summary(faulty.bad))
    assert time.perf_counter() - start < 4


def test_huge_response_is_refused(faulty: Any) -> None:
    faulty.proxy.add(r"/runs$", "huge", size=40 << 20)
    with pytest.raises((TooLarge, ServiceProtocolError)):
        within(20, lambda: ma.list_runs("SynthFault", namespace=None))


# --------------------------------------------------------------------------- the building block for the fix
def test_read_body_cuts_a_drip_at_the_deadline(deployment: Any) -> None:
    """_httpread.read_body: what the transport needs for the two NO_DEADLINE cases above."""
    import requests

    from metaflow_agent import _deadline
    from metaflow_agent._httpread import read_body

    deployment.proxy.clear()
    deployment.proxy.add(r"/runs$", "drip", seconds=0.2)
    start = time.perf_counter()
    with _deadline.deadline(1.5), pytest.raises(DeadlineExceeded):
        resp = requests.get(deployment.proxy.url + "/flows/SynthFault/runs", stream=True, timeout=(3, 30))
        read_body(resp, cap=1 << 20, what="the run list")
    assert time.perf_counter() - start < 2.5
    deployment.proxy.clear()


def test_read_body_refuses_a_huge_answer_before_reading_it(deployment: Any) -> None:
    import requests

    from metaflow_agent._httpread import read_body

    deployment.proxy.clear()
    deployment.proxy.add(r"/runs$", "huge", size=40 << 20)
    resp = requests.get(deployment.proxy.url + "/flows/SynthFault/runs", stream=True, timeout=(3, 30))
    with pytest.raises(TooLarge):
        read_body(resp, cap=8 << 20, what="the run list")
    deployment.proxy.clear()
    resp = requests.get(deployment.proxy.url + "/flows/SynthFault/runs", stream=True, timeout=(3, 30))
    assert read_body(resp, cap=1 << 20, what="the run list") == requests.get(deployment.double.url + "/flows/SynthFault/runs").content
