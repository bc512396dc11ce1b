"""Datastore roots as recorded (issue 9 item 7): runs registered on the metadata service double
whose data live under another root than the reader's (a second S3 bucket on moto, another local
root, a run split across two roots, roots that cannot be read) are read where their tasks
recorded them, like the Client API. Answers equal the Client's on the same runs (three service
generations), and cost the same requests as when that root is the configured one."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import S3_ENV, client_outcome, run_flow
from service_double import ServiceDouble
from service_double.synth import register_simple_run

import metaflow_agent as ma
from metaflow_agent import _config
from metaflow_agent._backend import get_backend, reset_backends
from metaflow_agent._pathspec import Pathspec

MODES = ("master", "release", "release-2.6.1")
OTHER = "s3://mfagent-other/metaflow"


@pytest.fixture(scope="module")
def double():
    with ServiceDouble(mode="master") as d:
        yield d


@dataclass
class Roots:
    other: dict[str, str]  # kind of run -> pathspec; data in bucket mfagent-other
    local: dict[str, str]  # data under local_root
    local_root: str  # the .metaflow the local runs recorded
    configured: str  # a HelloFlow run in the reader's own bucket
    split: str  # a HelloFlow run whose failed end task lives under split_root (the rest in mfagent-other)
    split_root: str


def _s3():
    import boto3

    return boto3.client("s3", endpoint_url=S3_ENV["METAFLOW_S3_ENDPOINT_URL"])


def record_root(double: ServiceDouble, task: str, kind: str, root: str) -> None:
    """Make the service say a task's data are under another root, as if it had run there."""
    flow, run, step, tid = task.split("/")
    store = double.store
    with store.lock:
        rec = store.find_task(flow, run, step, tid)
        assert rec is not None, task
        for m in store.metadata[(flow, rec["run_number"])]:
            if (m["step_name"], m["task_id"]) == (step, rec["task_id"]) and m["field_name"] in ("ds-type", "ds-root"):
                m["value"] = kind if m["field_name"] == "ds-type" else root
        for a in store.artifacts.get((flow, rec["run_number"]), {}).values():
            if (a["step_name"], a["task_id"]) == (step, rec["task_id"]):
                a["location"], a["ds_type"] = ":root:" + root, kind


def move_task_to_local(task: str, root: Path) -> None:
    """Move a task's folder (and its flow's blobs) from bucket mfagent-other to a local root."""
    s3 = _s3()
    flow = task.split("/")[0]
    for prefix, delete in ((f"metaflow/{task}/", True), (f"metaflow/{flow}/data/", False)):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mfagent-other", Prefix=prefix):
            for obj in page.get("Contents", []):
                target = root / obj["Key"][len("metaflow/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket="mfagent-other", Key=obj["Key"])["Body"].read())
                if delete:
                    s3.delete_object(Bucket="mfagent-other", Key=obj["Key"])


@pytest.fixture(scope="module")
def runs(s3_server, double, tmp_path_factory) -> Roots:
    _s3().create_bucket(Bucket="mfagent-other")
    base = {"METAFLOW_DEFAULT_METADATA": "service", "METAFLOW_SERVICE_URL": double.url}
    other = {**base, "METAFLOW_DEFAULT_DATASTORE": "s3", "METAFLOW_DATASTORE_SYSROOT_S3": OTHER}
    local_dir = tmp_path_factory.mktemp("root-a")
    local = {**base, "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(local_dir)}
    mine = {**base, "METAFLOW_DEFAULT_DATASTORE": "s3"}
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = {
            "other-wide": pool.submit(run_flow, "wide_flow.py", "--width", "12", "--failing", "2", "--max-workers", "4", env=other),
            "local-wide": pool.submit(run_flow, "wide_flow.py", "--width", "6", "--failing", "1", "--max-workers", "3", env=local),
            "other-hello": pool.submit(run_flow, "hello_flow.py", "--fail_end", "true", env=other),
            "other-art": pool.submit(run_flow, "artifact_flow.py", "--alpha", "0.5", "--big_mb", "1", env=other),
            "local-hello": pool.submit(run_flow, "hello_flow.py", "--fail_end", "true", env=local),
            "configured": pool.submit(run_flow, "hello_flow.py", env=mine),
            "split": pool.submit(run_flow, "hello_flow.py", "--fail_end", "true", env=other),
        }
        got = {k: f.result() for k, f in jobs.items()}
    split_dir = tmp_path_factory.mktemp("root-c") / ".metaflow"
    end = next(t["task_id"] for t in double.store.list_tasks("HelloFlow", got["split"].split("/")[1], "end"))
    split_end = f"{got['split']}/end/{end}"
    move_task_to_local(split_end, split_dir)
    record_root(double, split_end, "local", str(split_dir))
    return Roots(
        other={"wide": got["other-wide"], "hello": got["other-hello"], "art": got["other-art"]},
        local={"wide": got["local-wide"], "hello": got["local-hello"]},
        local_root=str(local_dir / ".metaflow"),
        configured=got["configured"],
        split=got["split"],
        split_root=str(split_dir),
    )


def configure(monkeypatch, double, mode: str, own: str, tmp_path: Path) -> None:
    """The test process as a reader of this deployment: its own datastore is the bucket
    mfagent-test ("s3") or an empty local root ("local"); neither holds the runs read."""
    double.mode = mode
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "service")
    monkeypatch.setenv("METAFLOW_SERVICE_URL", double.url)
    if own == "s3":
        monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
    else:
        (tmp_path / ".metaflow").mkdir(exist_ok=True)
        monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "local")
        monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path))
    reset_backends()


@pytest.fixture
def reader(request, monkeypatch, double, tmp_path):
    mode, own = request.param
    configure(monkeypatch, double, mode, own, tmp_path)
    yield mode
    double.mode = "master"
    reset_backends()


READERS = [(m, own) for m in MODES for own in ("s3", "local")]


def _one(client, run: str, step: str):
    return next(iter(client.Run(run)[step]))


@pytest.mark.parametrize("reader", READERS, indirect=True, ids=[f"{m}-{o}" for m, o in READERS])
@pytest.mark.parametrize("where", ["other", "local"])
def test_logs_and_artifacts_where_recorded(runs, reader, client, where):
    hello = getattr(runs, where)["hello"]
    start, end = _one(client, hello, "start"), _one(client, hello, "end")
    logs = ma.task_logs(end.pathspec, stream="stderr", tail=10)
    assert [ln.text for ln in logs.lines] == end.stderr.splitlines()[-10:]
    assert logs.lines and "HELLO_END_FAIL" in end.stderr
    arts = ma.list_artifacts(start.pathspec)
    assert {a.name: a.sha for a in arts.artifacts} == {a.id: a.sha for a in start}
    assert ma.artifact_preview(start.pathspec, "greeting").repr == repr(start["greeting"].data)
    work = _one(client, getattr(runs, where)["wide"], "work")
    out = ma.task_logs(work.pathspec, stream="stdout", tail=5)
    assert [ln.text for ln in out.lines] == work.stdout.splitlines()[-5:]
    assert ma.artifact_values("HelloFlow", "greeting", runs=10, namespace=None).values[0].value == "hello"


@pytest.mark.parametrize("mode", MODES)
def test_previews_from_another_bucket(runs, client, monkeypatch, double, tmp_path, mode):
    configure(monkeypatch, double, mode, "s3", tmp_path)
    task = _one(client, runs.other["art"], "start")
    preview = ma.artifact_preview(task.pathspec, "config")
    assert preview.repr == repr(task["config"].data)
    blob = next(a for a in ma.list_artifacts(task.pathspec).artifacts if a.name == "blob")
    assert blob.size > 1_000_000 and blob.sha == task["blob"].sha
    with pytest.raises(ma.TooLarge):
        ma.artifact_preview(task.pathspec, "blob", max_bytes=1000)
    diff = ma.compare_runs(runs.configured, runs.other["hello"])  # two runs, two roots
    assert [(d.name, d.value_a, d.value_b) for d in diff.parameters] == [("fail_end", False, True)]


@pytest.mark.parametrize("reader", READERS, indirect=True, ids=[f"{m}-{o}" for m, o in READERS])
@pytest.mark.parametrize("where", ["other", "local"])
def test_failures_where_recorded(runs, reader, client, where):
    hello = getattr(runs, where)["hello"]
    end = _one(client, hello, "end")
    got = ma.failed_tasks(hello)
    assert [(t.pathspec, t.exception_type, t.message) for t in got.failed] == [(end.pathspec, "KeyError", end.exception.exception)]
    assert ma.run_summary(hello).first_failure.exception_type == "KeyError"
    wide = getattr(runs, where)["wide"]
    truth = {t.pathspec: o for s in client.Run(wide) for t in s if (o := client_outcome(t)) and o.outcome != "completed"}
    failed = ma.failed_tasks(wide, limit=100)
    assert {t.pathspec for t in failed.failed} == set(truth)
    for t in failed.failed:
        if t.status == "failed":
            exc = client.Task(t.pathspec).exception
            assert (t.exception_type, t.message) == ("ValueError", exc.exception) and "WIDE_BOOM" in t.message
            assert t.foreach_index and t.foreach_index.startswith("items=")
    assert ma.diagnose_run(hello).failures[0].exception.startswith("KeyError")
    assert not any("could not be read" in n or "no files at" in n for n in got.notes + failed.notes)


@pytest.mark.parametrize("reader", [(m, "s3") for m in MODES], indirect=True, ids=MODES)
def test_search_across_roots(runs, reader, client):
    """HelloFlow has runs in four roots (another bucket, a local root, the reader's own, one run
    split across two); WideFlow in two: every task's data.json is read where it is, and only the
    task recorded away from its run costs a request."""
    urls: list[str] = []
    hook = lambda kind, method, url, nbytes: urls.append(url) if kind == "request" else None  # noqa: E731
    ma.add_cost_hook(hook)
    try:
        hello = ma.search_artifacts("HelloFlow", name="greeting", namespace=None, runs=10)
        wide = ma.search_artifacts("WideFlow", name="value", namespace=None, runs=10, limit=500)
    finally:
        ma.remove_cost_hook(hook)
    expect = {t.pathspec for r in client.Flow("HelloFlow") for s in r for t in s if "greeting" in t}
    assert {h.task for h in hello.hits} == expect and len(expect) == 8  # 4 runs, greeting in start and end
    assert hello.complete, hello.notes
    expect = {t.pathspec: t["value"].sha for r in client.Flow("WideFlow") for s in r for t in s if "value" in t}
    assert {h.task: h.sha for h in wide.hits} == expect and len(expect) > 10
    assert wide.complete, wide.notes
    # One look per run, none per task, but for the one task recorded elsewhere than its run.
    flow, run = runs.split.split("/")
    split_end = f"/flows/{flow}/runs/{run}/steps/end/tasks/{_one(client, runs.split, 'end').id}/metadata"
    assert {u[u.index("/flows/"):] for u in urls if "/tasks/" in u} == {split_end}, urls


@pytest.mark.parametrize("reader", [(m, "s3") for m in MODES], indirect=True, ids=MODES)
def test_a_run_split_across_roots(runs, reader, client):
    """The failed end task of one run was moved to a local root (its ds-root says so): its
    exception, logs and artifacts are read there, the start task's in the other bucket."""
    end = _one(client, runs.split, "end")
    assert end.metadata_dict["ds-root"] == runs.split_root
    got = ma.failed_tasks(runs.split)
    assert [(t.exception_type, t.message) for t in got.failed] == [("KeyError", end.exception.exception)]
    assert [ln.text for ln in ma.task_logs(end.pathspec, stream="stderr", tail=5).lines] == end.stderr.splitlines()[-5:]
    assert {a.name: a.sha for a in ma.list_artifacts(end.pathspec).artifacts} == {a.id: a.sha for a in end}
    start = _one(client, runs.split, "start")
    assert ma.artifact_preview(start.pathspec, "greeting").repr == "'hello'"
    hits = ma.search_artifacts("HelloFlow", name="_exception", include_private=True, namespace=None, runs=10)
    assert end.pathspec in {h.task for h in hits.hits}


@pytest.mark.parametrize("reader", [(m, "s3") for m in MODES], indirect=True, ids=MODES)
def test_a_flows_root_stands_in_for_its_other_runs(runs, reader, client):
    """Once one run of a flow has told its root, the flow's other runs are read there with no look
    of their own; a run of the flow written elsewhere is still read where it recorded (its own look
    once its task is missing there)."""
    urls: list[str] = []
    hook = lambda kind, method, url, nbytes: urls.append(url[url.index("/flows/"):]) if kind == "request" else None  # noqa: E731
    ma.add_cost_hook(hook)
    try:
        looks = []
        for run in (runs.other["hello"], runs.split, runs.local["hello"]):
            start = _one(client, run, "start")
            urls.clear()
            got = ma.list_artifacts(start.pathspec)
            assert {a.name: a.sha for a in got.artifacts} == {a.id: a.sha for a in start}, run
            looks.append([u for u in urls if u.endswith("/steps/_parameters/artifacts")])
    finally:
        ma.remove_cost_hook(hook)
    first, same_bucket, elsewhere = looks
    assert len(first) == 1 and same_bucket == [] and len(elsewhere) == 1, looks


@pytest.mark.parametrize("mode", MODES)
def test_following_a_root_costs_what_configuring_it_does(runs, double, monkeypatch, tmp_path, mode, client):
    """The same calls on runs in bucket mfagent-other, with the reader's own root elsewhere and
    with it set to that bucket: the same metadata requests (first call in a process, and again)
    and the same datastore reads."""
    later = time.time() + 3600  # every run long over: no state flips between the two passes
    monkeypatch.setattr(_config, "now_s", lambda: later)
    start, end = (_one(client, runs.other["hello"], s).pathspec for s in ("start", "end"))
    calls = {
        "failed_tasks": lambda: ma.failed_tasks(runs.other["wide"], limit=100),
        "run_summary": lambda: ma.run_summary(runs.other["wide"]),
        "task_logs": lambda: ma.task_logs(end, stream="stderr", tail=5),
        "list_artifacts": lambda: ma.list_artifacts(start),
        "search_artifacts": lambda: ma.search_artifacts("WideFlow", name="value", namespace=None, runs=1),
    }
    costs = {}
    for own in ("elsewhere", "configured"):
        configure(monkeypatch, double, mode, "s3", tmp_path)
        monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_S3", OTHER if own == "configured" else S3_ENV["METAFLOW_DATASTORE_SYSROOT_S3"])
        for name, fn in calls.items():
            reset_backends()
            ma.capabilities()
            first, again = fn(), fn()
            costs[(own, name)] = (first.cost.metadata_requests, again.cost.metadata_requests, first.cost.datastore_reads)
    double.mode = "master"
    for name in calls:
        assert costs[("elsewhere", name)] == costs[("configured", name)], (name, costs)
        first, again, _ = costs[("elsewhere", name)]
        assert again <= first, (name, costs)


# --- roots that cannot be read -------------------------------------------------------------


@pytest.mark.parametrize(("kind", "root"), [("gs", "gs://mfagent-gcs/metaflow"), ("s3", "s3://mfagent-nosuch/metaflow"),
                                          ("local", "/nonexistent/elsewhere/.metaflow")])
def test_unreadable_roots_are_typed_errors_or_notes(s3_server, double, monkeypatch, tmp_path, kind, root):
    """Tasks that recorded a datastore this library cannot read (another type), a bucket that is
    not there, or a local root not on this machine: a typed error naming the root for one task,
    a note (never silence) where many are read."""
    flow = {"gs": "GcsFlow", "s3": "GoneFlow", "local": "FarFlow"}[kind]
    run = f"{flow}/" + register_simple_run(double.url, flow, end_ok=False)
    store = double.store
    with store.lock:
        for step in ("_parameters", "start", "end"):
            for t in store.list_tasks(flow, run.split("/")[1], step):
                tags = ["attempt_id:0"]
                store.add_metadata(t, {"field_name": "ds-type", "value": kind, "type": "ds-type", "tags": tags})
                store.add_metadata(t, {"field_name": "ds-root", "value": root, "type": "ds-root", "tags": tags})
                store.add_artifact(t, {"name": "_task_ok", "location": ":root:" + root, "ds_type": kind, "sha": "0" * 40,
                                       "type": "metaflow.artifact", "content_type": "pickle-v4"})
    configure(monkeypatch, double, "master", "s3", tmp_path)
    end = f"{run}/end/" + str(store.list_tasks(flow, run.split("/")[1], "end")[0]["task_id"])
    error = ma.NotFound if kind == "local" else ma.BackendError
    for fn in (lambda: ma.list_artifacts(end), lambda: ma.task_logs(end), lambda: ma.artifact_preview(end, "x")):
        with pytest.raises(error) as err:
            fn()
        assert root in err.value.message and (kind != "gs" or "'gs'" in err.value.message), err.value.message
    failed = ma.failed_tasks(run)
    assert [t.pathspec for t in failed.failed] == [end] and failed.failed[0].exception_type is None
    said = "no files at" if kind == "local" else "could not be read"
    assert any(root in n and said in n for n in failed.notes), failed.notes
    found = ma.search_artifacts(flow, name="*", namespace=None)
    assert not found.complete and not found.hits
    assert any(root in n and said in n for n in found.notes), found.notes


# --- the local backend: roots agree by construction --------------------------------------------


def test_local_runs_record_their_own_root(local_runs):
    """A local run's tasks record the root their metadata lives in: the configured store is theirs."""
    root = os.path.join(local_runs.root, ".metaflow")
    flow, run = local_runs.art_a.split("/")
    seen = set()
    for step in ("start", "end"):
        meta = Path(root, flow, run, step)
        for task in meta.iterdir():
            for f in (task / "_meta").glob("sysmeta_ds-*_*.json"):
                row = json.loads(f.read_text())
                seen.add((row["field_name"], row["value"]))
    assert seen == {("ds-type", "local"), ("ds-root", root)}
    backend = get_backend()
    task = next(Path(root, flow, run, "start").iterdir()).name
    assert backend.kind == "local" and backend.store_for(Pathspec.parse(f"{flow}/{run}/start/{task}", "task")) is backend.store
