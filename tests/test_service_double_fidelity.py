"""The metadata service double against the real service's captures, and real flows against it.

Every capture of ``shared/service-captures`` (both generations) is replayed against the double
seeded from the captures: same status, headers that matter, same body (unordered lists as
multisets, paginated lists in order). Then a real foreach + ``@retry`` flow runs against the
double in both modes and the stock Client API reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest
import requests

try:
    from tests.service_double import ServiceDouble
    from tests.service_double.captures import Capture, load_captures, seed_records
except ImportError:  # tests/ itself on sys.path (pytest rootdir-less import)
    from service_double import ServiceDouble  # type: ignore[no-redef]
    from service_double.captures import Capture, load_captures, seed_records  # type: ignore[no-redef]

CAPTURES = load_captures()
HEADERS_COMPARED = ("METADATA_SERVICE_VERSION", "X-Limit", "Content-Type")


_SEEDED_AT: dict[int, int] = {}  # id(double) -> store revision right after seeding


@pytest.fixture(scope="session")
def double() -> Iterator[ServiceDouble]:
    with ServiceDouble() as d:
        yield d


@pytest.fixture
def seeded(double: ServiceDouble) -> ServiceDouble:
    """The session double holding exactly the capture data set (reseeded after any write)."""
    if _SEEDED_AT.get(id(double)) != double.store.revision:
        double.reset()
        double.load_records(seed_records())
        _SEEDED_AT[id(double)] = double.store.revision
    return double


@pytest.fixture
def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route 127.0.0.1 through a proxy
    return session


def request_url(base: str, cap: Capture) -> str:
    """Keys unescaped (``status:eq=failed``), values percent-encoded (cursors' ``=``)."""
    if not cap.query:
        return base + cap.path
    qs = "&".join("%s=%s" % (k, quote(v, safe=":,")) for k, v in cap.query.items())
    return "%s%s?%s" % (base, cap.path, qs)


def canonical(rows: list[Any]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda c: "%s:%s" % (c.generation, c.id))
def test_capture_replay(seeded: ServiceDouble, http: requests.Session, cap: Capture) -> None:
    seeded.mode = cap.generation
    resp = http.request(cap.method, request_url(seeded.url, cap))

    assert resp.status_code == cap.status
    for name in HEADERS_COMPARED:
        assert resp.headers.get(name) == cap.headers.get(name), name
    assert ("X-Next-Cursor" in resp.headers) == ("X-Next-Cursor" in cap.headers)
    assert resp.headers.get("X-Next-Cursor") == cap.headers.get("X-Next-Cursor")

    if cap.path in ("/ping", "/version"):
        assert resp.text == cap.body
        return
    body = resp.json()
    if cap.status == 500:
        assert isinstance(body, dict) and set(body) == set(cap.body)
        assert {k: body[k] for k in ("detail", "status", "title", "type")} == {
            k: cap.body[k] for k in ("detail", "status", "title", "type")
        }
        assert cap.body["traceback"].endswith(body["traceback"].strip().splitlines()[-1] + ")")
    elif isinstance(cap.body, list) and "X-Limit" in cap.headers:
        assert body == cap.body  # a page: ordered (ts_epoch desc, id desc)
    elif isinstance(cap.body, list):
        assert canonical(body) == canonical(cap.body)  # no ORDER BY on the real service
    else:
        assert body == cap.body


def test_every_capture_is_replayed() -> None:
    assert len(CAPTURES) == 150
    assert {c.generation for c in CAPTURES} == {"master", "release"}


def test_mode_switch_and_request_log(seeded: ServiceDouble, http: requests.Session) -> None:
    seeded.requests_seen.clear()
    seeded.mode = "release"
    assert "X-Limit" not in http.get(seeded.url + "/flows?_limit=1").headers
    seeded.mode = "master"
    assert http.get(seeded.url + "/flows?_limit=1").headers["X-Limit"] == "1"
    assert http.get(seeded.url + "/flows/SynthFlow/runs?status:eq=__probe__").status_code == 400
    assert [r.query for r in seeded.requests_seen] == [{"_limit": "1"}, {"_limit": "1"}, {"status:eq": "__probe__"}]
    with pytest.raises(ValueError):
        seeded.mode = "2.6.1"


def test_capture_totals_of_the_readme(seeded: ServiceDouble, http: requests.Session) -> None:
    """Walking master's cursors gives the README's SynthFlow status counts."""
    seeded.mode = "master"
    counts = {}
    for status in ("completed", "failed", "running"):
        total, cursor = 0, None
        while True:
            url = seeded.url + "/flows/SynthFlow/runs?status:eq=%s&_limit=500" % status
            resp = http.get(url + ("&_cursor=" + quote(cursor, safe="") if cursor else ""))
            total += len(resp.json())
            cursor = resp.headers.get("X-Next-Cursor")
            if not cursor:
                break
        counts[status] = total
    assert counts == {"completed": 1779, "failed": 223, "running": 0}
    window = http.get(seeded.url + "/flows/SynthFlow/runs?ts_epoch:ge=1793000000000&ts_epoch:le=1793100000000&_limit=500")
    assert len(window.json()) == 39


def test_write_routes_answer_like_the_service(double: ServiceDouble, http: requests.Session) -> None:
    double.reset()
    base = double.url
    assert http.post(base + "/flows/F", json={"flow_id": "F"}).json()["user_name"] is None
    assert http.post(base + "/flows/F", json={"flow_id": "F"}).status_code == 409
    sys_tags = ["metaflow_version:2.19.39", "user:tester"]
    run = http.post(base + "/flows/F/run", json={"user_name": "tester", "tags": ["t"], "system_tags": sys_tags}).json()
    assert run["run_number"] == 1 and run["last_heartbeat_ts"] is not None and "user" not in run
    named = http.post(base + "/flows/F/run", json={"run_number": "argo-x", "user_name": "tester", "system_tags": sys_tags}).json()
    assert named["run_number"] == "argo-x" and http.get(base + "/flows/F/runs/2").json()["run_number"] == "argo-x"
    step = http.post(base + "/flows/F/runs/1/steps/start/step", json={"user_name": "tester"}).json()
    assert step["run_number"] == "1" and step["tags"] == ["t"]
    task = http.post(base + "/flows/F/runs/1/steps/start/task", json={"user_name": "tester", "system_tags": sys_tags}).json()
    assert task["task_id"] == 1 and task["run_number"] == 1
    # heartbeats: a JSON string holding JSON, 404 when the last beat is under 10 s old
    hb = http.post(base + "/flows/F/runs/1/steps/start/tasks/1/heartbeat", data="{}")
    assert hb.status_code == 404 and json.loads(hb.json()) == {"wait_time_in_seconds": 10}
    assert http.post(base + "/flows/F/runs/9/heartbeat", data="{}").status_code == 404
    meta = [{"field_name": "attempt_ok", "value": "True", "type": "internal_attempt_status", "tags": ["attempt_id:0"], "user_name": "tester"}]
    assert http.post(base + "/flows/F/runs/1/steps/start/tasks/1/metadata", json=meta).json() == {"metadata_created": 1}
    assert http.post(base + "/flows/F/runs/1/steps/start/tasks/7/metadata", json=meta).status_code == 400
    mutated = http.patch(base + "/flows/F/runs/1/tag/mutate", json={"tags_to_add": ["u"], "tags_to_remove": ["t"]})
    assert mutated.json() == {"tags": ["u"]}
    assert http.get(base + "/flows/F/runs/1/steps/start/tasks/1").json()["tags"] == ["u"]
    assert http.patch(base + "/flows/F/runs/1/tag/mutate", json={"tags_to_remove": ["user:tester"]}).status_code == 422


def test_run_status_follows_end_attempt_and_heartbeat(http: requests.Session) -> None:
    now = [1_800_000_000.0]
    with ServiceDouble(clock=lambda: now[0]) as d:
        base, tags = d.url, ["metaflow_version:2.19.39", "user:tester"]
        http.post(base + "/flows/F", json={})
        for _ in range(3):
            http.post(base + "/flows/F/run", json={"user_name": "tester", "system_tags": tags})
        http.post(base + "/flows/F/runs/1/steps/end/step", json={})
        http.post(base + "/flows/F/runs/1/steps/end/task", json={"system_tags": tags})
        ok = [{"field_name": "attempt_ok", "value": "True", "type": "internal_attempt_status", "tags": ["attempt_id:0"]}]
        http.post(base + "/flows/F/runs/1/steps/end/tasks/1/metadata", json=ok)

        def statuses() -> dict[int, str]:
            rows = http.get(base + "/flows/F/runs?status:eq=running,completed,failed").json()
            return {r["run_number"]: r["status"] for r in rows}

        assert statuses() == {1: "completed", 2: "running", 3: "running"}
        now[0] += 361
        assert statuses() == {1: "completed", 2: "failed", 3: "failed"}
        assert http.post(base + "/flows/F/runs/3/heartbeat", data="{}").status_code == 200
        assert statuses() == {1: "completed", 2: "failed", 3: "running"}
        d.mode = "release"
        assert "status" not in http.get(base + "/flows/F/runs?status:eq=failed").json()[0]


# ---------------------------------------------------------------------- real flows
FLOW_SOURCE = textwrap.dedent(
    '''
    from metaflow import FlowSpec, current, retry, step


    class DoubleCheckFlow(FlowSpec):
        @step
        def start(self):
            self.items = [1, 2, 3]
            self.next(self.work, foreach="items")

        @retry(times=1, minutes_between_retries=0)
        @step
        def work(self):
            self.item = self.input
            if self.input == 2 and current.retry_count == 0:
                raise ValueError("first attempt of item 2 fails")
            self.square = self.input ** 2
            self.next(self.join)

        @step
        def join(self, inputs):
            self.total = sum(i.square for i in inputs)
            self.next(self.end)

        @step
        def end(self):
            self.done = True


    if __name__ == "__main__":
        DoubleCheckFlow()
    '''
)

CHECK_SOURCE = textwrap.dedent(
    '''
    import json, sys
    from metaflow import Run, Task, namespace

    namespace(None)
    run = Run("DoubleCheckFlow/" + sys.argv[1])
    work = {t.data.item: t for t in run["work"]}
    retried = work[2]
    out = {
        "finished": run.finished,
        "successful": run.successful,
        "steps": sorted(s.id for s in run),
        "system_tags": sorted(run.system_tags),
        "work_items": sorted(work),
        "squares": {str(k): t.data.square for k, t in work.items()},
        "total": run["join"].task.data.total,
        "end_done": run["end"].task.data.done,
        "retried_attempt": retried.current_attempt,
        "retried_ok": [
            Task(retried.pathspec, attempt=a).metadata_dict.get("attempt_ok") for a in (0, 1)
        ],
        "retried_task_finished": retried.finished,
        "attempt0_exception": "first attempt" in str(
            Task(retried.pathspec, attempt=0)["_exception"].data
        ),
        "end_task_successful": run.end_task.successful,
    }
    print(json.dumps(out, default=list))
    '''
)


def _flow_env(tmp: Path, url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("METAFLOW_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        USER="tester",
        USERNAME="tester",
        METAFLOW_USER="tester",
        METAFLOW_HOME=str(tmp / "home"),
        METAFLOW_DEFAULT_METADATA="service",
        METAFLOW_SERVICE_URL=url,
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp / "ds"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


@pytest.mark.slow  # runs a real flow against the double
@pytest.mark.parametrize("mode", ["master", "release"])
def test_real_flow_against_double(seeded: ServiceDouble, http: requests.Session, tmp_path: Path, mode: str) -> None:
    seeded.mode = mode
    seeded.requests_seen.clear()
    (tmp_path / "home").mkdir()
    flow, check, id_file = tmp_path / "double_check_flow.py", tmp_path / "check.py", tmp_path / "run_id"
    flow.write_text(FLOW_SOURCE)
    check.write_text(CHECK_SOURCE)
    env = _flow_env(tmp_path, seeded.url)

    proc = subprocess.run(
        [sys.executable, str(flow), "--no-pylint", "run", "--run-id-file", str(id_file), "--max-workers", "4"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = id_file.read_text().strip()
    assert int(run_id) > 2039  # the run_number sequence continues after the seeded runs

    got = subprocess.run([sys.executable, str(check), run_id], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-3000:]
    out = json.loads(got.stdout.strip().splitlines()[-1])
    assert out["finished"] is True and out["successful"] is True
    assert out["end_task_successful"] is True
    assert out["steps"] == ["end", "join", "start", "work"]
    assert "user:tester" in out["system_tags"]
    assert out["work_items"] == [1, 2, 3]
    assert out["squares"] == {"1": 1, "2": 4, "3": 9} and out["total"] == 14 and out["end_done"] is True
    assert out["retried_attempt"] == 1 and out["retried_task_finished"] is True
    assert out["retried_ok"] == ["False", "True"]
    assert out["attempt0_exception"] is True

    seen = {(r.method, r.path.rsplit("/", 1)[-1]) for r in seeded.requests_seen}
    for route in ("run", "step", "task", "metadata", "artifact", "heartbeat"):
        assert ("POST", route) in seen, route

    seeded.mode = "master"
    rows = http.get(seeded.url + "/flows/DoubleCheckFlow/runs?status:eq=completed").json()
    assert [(r["run_number"], r["status"], r["user"]) for r in rows if str(r["run_number"]) == run_id] == [
        (int(run_id), "completed", "tester")
    ]
    failed = http.get(seeded.url + "/flows/DoubleCheckFlow/runs/%s/steps/work/filtered_tasks" % run_id,
                      params={"metadata_field_name": "attempt_ok", "pattern": "False"}).json()
    assert failed == ["DoubleCheckFlow/%s/work/%d" % (run_id, retried_task_id(http, seeded.url, run_id))]


def retried_task_id(http: requests.Session, base: str, run_id: str) -> int:
    tasks = http.get(base + "/flows/DoubleCheckFlow/runs/%s/steps/work/tasks" % run_id).json()
    for t in tasks:
        arts = http.get(base + "/flows/DoubleCheckFlow/runs/%s/steps/work/tasks/%s/attempt/1/artifacts" % (run_id, t["task_id"])).json()
        if arts:
            return int(t["task_id"])
    raise AssertionError("no retried task")
