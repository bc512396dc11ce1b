"""The double's `release-2.6.1` mode: master's filters and cursors under a 2.6.1 version, and the
library's capability probe classifying it by behaviour, not by version."""

from __future__ import annotations

import requests
from service_double import ServiceDouble, captures

from metaflow_extensions.agent.plugins.agent_metadata.capabilities import detect, forget
from metaflow_extensions.agent.plugins.agent_metadata.transport import ServiceTransport

FAILED_RUNS = ("/flows/SynthFlow/runs", {"status:eq": "failed", "_limit": 3})


def _probe(double: ServiceDouble, mode: str):
    double.mode = mode
    forget(double.url)
    try:
        return detect(ServiceTransport(double.url))
    finally:
        forget(double.url)


def test_release_261_reports_its_version_and_behaves_like_master():
    with ServiceDouble(mode="release-2.6.1", records=captures.seed_records()) as double:
        ping = requests.get(double.url + "/ping", timeout=10)
        assert ping.headers["METADATA_SERVICE_VERSION"] == "2.6.1"
        assert requests.get(double.url + "/version", timeout=10).text == "2.6.1"
        t = ServiceTransport(double.url)
        page = t.get(*FAILED_RUNS)
        assert page.headers.get("X-Limit") == "3" and page.headers.get("X-Next-Cursor")
        assert len(page.body) == 3 and {r["status"] for r in page.body} == {"failed"}
        assert page.headers["METADATA_SERVICE_VERSION"] == "2.6.1"
        double.mode = "master"
        as_master = t.get(*FAILED_RUNS)
        assert as_master.body == page.body and as_master.headers["METADATA_SERVICE_VERSION"] == "2.5.1"
        double.mode = "release"
        assert len(t.get(*FAILED_RUNS).body) > 3  # 2.5.1 ignores the filter and the limit


def test_capability_probe_classifies_261_as_filtering_and_paginating():
    with ServiceDouble(records=captures.seed_records()) as double:
        caps = {mode: _probe(double, mode) for mode in ("release-2.6.1", "master", "release")}
    new = caps["release-2.6.1"]
    assert (new.version, new.filters, new.cursors) == ("2.6.1", True, True)
    assert (caps["master"].version, caps["master"].filters) == ("2.5.1", True)
    assert (caps["release"].version, caps["release"].filters, caps["release"].cursors) == ("2.5.1", False, False)
