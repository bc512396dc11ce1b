"""Artifacts on real local runs: listing and search from data.json (nothing
unpickled), guarded previews, and run comparison by sha — against the Client."""

from __future__ import annotations

import fnmatch
import json
import os
import pickle

import pytest

import metaflow_agent as ma
from metaflow_agent import _blobs, _unpickle

MB = 1024 * 1024


@pytest.fixture
def client(client_ns):
    from metaflow import Run, Task

    client_ns(None)
    return Run, Task


def _task(run: str, step: str, root: str) -> str:
    folder = os.path.join(root, ".metaflow", run, step)
    (task,) = [n for n in os.listdir(folder) if not n.startswith("_")]
    return f"{run}/{step}/{task}"


def _data_json(root: str, task: str, attempt: int = 0) -> dict:
    with open(os.path.join(root, ".metaflow", task, f"{attempt}.data.json")) as f:
        return json.load(f)


@pytest.fixture
def start_a(local_runs) -> str:
    return _task(local_runs.art_a, "start", local_runs.root)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every unpickling path and every blob read fail loudly."""

    def boom(*a, **k):
        raise AssertionError("unpickled something")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(_unpickle.SafeUnpickler, "load", boom)
    monkeypatch.setattr(_unpickle, "loads", boom)
    monkeypatch.setattr(_blobs, "load_blob", boom)
    blob_reads: list[str] = []

    def hook(kind, method, path, nbytes):
        if "/data/" in path:
            blob_reads.append(path)

    ma.add_cost_hook(hook)
    yield blob_reads
    ma.remove_cost_hook(hook)
    assert blob_reads == [], f"artifact blobs were read: {blob_reads[:3]}"


# --- list_artifacts -----------------------------------------------------------
def test_list_equals_client_names_and_sha(local_runs, client):
    Run, _ = client
    for ps in (local_runs.art_a, local_runs.art_b, local_runs.retry, local_runs.hello_failed):
        for step in Run(ps):
            for task in step:
                try:
                    got = ma.list_artifacts(task.pathspec)
                except ma.NotFound:
                    # No data.json at all: the Client must see no artifacts either.
                    assert [a.id for a in task] == [], task.pathspec
                    continue
                truth = {a.id: a.sha for a in task}
                assert {a.name: a.sha for a in got.artifacts} == truth, task.pathspec
                names = [a.name for a in got.artifacts]
                assert names == sorted(names)


def test_sizes_types_encodings_from_data_json(local_runs, start_a):
    got = ma.list_artifacts(start_a, include_private=True)
    index = _data_json(local_runs.root, start_a)
    assert {a.name for a in got.artifacts} == set(index["objects"])
    for a in got.artifacts:
        info = index["info"][a.name]
        assert a.size == info["size"]
        assert a.encoding == info["encoding"]
        assert a.sha == index["objects"][a.name]
        assert info["type"].endswith(f"'{a.type}'>") or info["type"] == a.type
    types = {a.name: a.type for a in got.artifacts}
    assert types["config"] == "dict" and types["numbers"] == "list" and types["blob"] == "bytes"
    assert types["small_int"] == "int" and types["text"] == "str" and types["alpha"] == "float"
    sizes = {a.name: a.size for a in got.artifacts}
    assert sizes["blob"] > 3 * MB - 1024


def test_private_hidden_unless_asked(start_a):
    public = ma.list_artifacts(start_a)
    everything = ma.list_artifacts(start_a, include_private=True)
    assert not any(a.name.startswith("_") for a in public.artifacts)
    assert {"_task_ok", "_success"} <= {a.name for a in everything.artifacts}
    assert {a.name for a in public.artifacts} == {a.name for a in everything.artifacts if not a.name.startswith("_")}


def test_list_is_one_small_read(start_a):
    got = ma.list_artifacts(start_a)
    assert got.cost.datastore_bytes < 64 * 1024  # a 3 MB blob is listed, not read
    assert got.cost.metadata_requests == 0


def test_list_paging(start_a):
    everything = [a.name for a in ma.list_artifacts(start_a, include_private=True).artifacts]
    seen, cursor = [], None
    while True:
        page = ma.list_artifacts(start_a, include_private=True, limit=4, cursor=cursor)
        assert len(page.artifacts) <= 4
        seen += [a.name for a in page.artifacts]
        if not page.truncated:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor
    assert seen == everything


def test_list_attempts(local_runs, client):
    _, Task = client
    ps = ma.failed_tasks(local_runs.retry).failed[0].pathspec
    assert ma.list_artifacts(ps).attempt == 1
    for attempt in (0, 1):
        got = ma.list_artifacts(ps, attempt=attempt)
        truth = {a.id: a.sha for a in Task(ps, attempt=attempt)}
        assert got.attempt == attempt
        assert {a.name: a.sha for a in got.artifacts} == truth
    assert "value" in {a.name for a in ma.list_artifacts(ps, attempt=1).artifacts}
    assert "value" not in {a.name for a in ma.list_artifacts(ps, attempt=0).artifacts}


def test_list_and_search_never_unpickle(local_runs, start_a, no_unpickling):
    assert ma.list_artifacts(start_a, include_private=True).artifacts
    assert ma.search_artifacts("ArtifactFlow", name="*", namespace=None, limit=1000).hits
    assert ma.search_artifacts("WideFlow", name="value", namespace=None, limit=1000).hits


# --- artifact_preview -----------------------------------------------------------
def test_preview_dict(start_a, client):
    _, Task = client
    value = Task(start_a)["config"].data
    got = ma.artifact_preview(start_a, "config")
    assert got.type == "dict" and got.name == "config"
    assert got.summary["len"] == len(value)
    assert got.summary["keys"] == [repr(k) for k in value]
    assert got.repr == repr(value) and not got.truncated


def test_preview_list_len_and_truncated_repr(start_a, client):
    _, Task = client
    value = Task(start_a)["numbers"].data
    got = ma.artifact_preview(start_a, "numbers", max_chars=100)
    assert got.summary["len"] == len(value) == 1000
    assert got.summary["item_types"] == ["int"]
    assert got.truncated
    assert len(got.repr) <= 100
    assert repr(value).startswith(got.repr.split("…")[0])


def test_preview_bytes_len(start_a, client):
    _, Task = client
    value = Task(start_a)["blob"].data
    got = ma.artifact_preview(start_a, "blob", max_bytes=16 * MB, max_chars=200)
    assert got.summary["len"] == len(value)
    assert got.size == _size_of(start_a, "blob")
    assert got.truncated and len(got.repr) <= 200


def test_preview_scalars_and_strings(start_a, client):
    _, Task = client
    task = Task(start_a)
    assert ma.artifact_preview(start_a, "small_int").repr == repr(task["small_int"].data) == "42"
    text = ma.artifact_preview(start_a, "text")
    assert text.summary["len"] == len(task["text"].data) and text.repr == repr(task["text"].data)


def _size_of(task: str, name: str) -> int:
    return next(a.size for a in ma.list_artifacts(task).artifacts if a.name == name)


def test_preview_too_large_names_the_size(start_a, monkeypatch):
    size = _size_of(start_a, "blob")

    def boom(*a, **k):
        raise AssertionError("a refused artifact must not be loaded")

    monkeypatch.setattr(pickle, "load", boom)
    with pytest.raises(ma.TooLarge) as exc:
        ma.artifact_preview(start_a, "blob", max_bytes=1 * MB)
    assert str(size) in exc.value.message
    assert exc.value.hint and str(size) in exc.value.hint


def test_preview_cost_is_the_one_blob(start_a):
    got = ma.artifact_preview(start_a, "small_int")
    assert got.cost.datastore_bytes < 64 * 1024


# --- search_artifacts -----------------------------------------------------------
def _client_hits(root: str, flow: str, pattern: str, min_size=None, max_size=None, type_=None) -> set[tuple[str, str]]:
    """(task pathspec, name) of public artifacts matching, from the Client; sizes
    and types from each task's data.json, which is where they are recorded."""
    from metaflow import Flow

    out = set()
    for run in sorted(Flow(flow).runs(), key=lambda r: r.created_at, reverse=True)[:10]:
        for step in run:
            for task in step:
                names = [a.id for a in task if fnmatch.fnmatchcase(a.id, pattern)]
                if not names:
                    continue
                info = _data_json(root, task.pathspec, task.current_attempt)["info"]
                for name in names:
                    size, type_name = info[name]["size"], info[name]["type"]
                    if min_size is not None and size < min_size:
                        continue
                    if max_size is not None and size > max_size:
                        continue
                    if type_ is not None and type_ not in type_name:
                        continue
                    out.add((task.pathspec, name))
    return out


@pytest.mark.parametrize(
    "kw",
    [
        {"name": "blob"},
        {"name": "s*"},
        {"name": "[a-z]*", "type": "dict"},
        {"name": "[a-z]*", "min_size": 1_000_000},
        {"name": "[a-z]*", "max_size": 8},
        {"name": "[a-z]*", "min_size": 20, "max_size": 100},
        {"name": "no_such_artifact"},
    ],
)
def test_search_equals_client(local_runs, client, kw):
    got = ma.search_artifacts("ArtifactFlow", namespace=None, limit=1000, **kw)
    truth = _client_hits(local_runs.root, "ArtifactFlow", kw["name"], min_size=kw.get("min_size"), max_size=kw.get("max_size"), type_=kw.get("type"))
    assert {(h.task, h.name) for h in got.hits} == truth
    assert not got.truncated and got.complete
    for h in got.hits:
        if "min_size" in kw:
            assert h.size >= kw["min_size"]
        if "type" in kw:
            assert kw["type"] in h.type


def test_search_blob_found_in_both_runs_newest_first(local_runs, client):
    got = ma.search_artifacts("ArtifactFlow", name="blob", namespace=None)
    runs = [h.task.rsplit("/", 2)[0] for h in got.hits]
    assert {local_runs.art_a, local_runs.art_b} <= set(runs)
    # Newest run first, as in runs_searched.
    order = [f"ArtifactFlow/{r}" for r in got.runs_searched]
    assert [order.index(r) for r in runs] == sorted(order.index(r) for r in runs)
    shas = {h.sha for h in got.hits}
    assert len(shas) == 1  # the same bytes in every task: one sha


def test_search_runs_limits_the_runs_scanned(local_runs, client):
    from metaflow import Flow

    newest = max(Flow("ArtifactFlow").runs(), key=lambda r: r.created_at)
    got = ma.search_artifacts("ArtifactFlow", name="blob", namespace=None, runs=1)
    assert got.runs_searched == [newest.id]
    assert {h.task.rsplit("/", 2)[0] for h in got.hits} == {newest.pathspec}


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_search_paging_covers_every_hit_once(local_runs, limit):
    everything = [(h.task, h.name) for h in ma.search_artifacts("ArtifactFlow", name="[a-z]*", namespace=None, limit=1000).hits]
    assert len(everything) > 7
    seen, cursor, pages = [], None, 0
    while True:
        page = ma.search_artifacts("ArtifactFlow", name="[a-z]*", namespace=None, limit=limit, cursor=cursor)
        pages += 1
        assert len(page.hits) <= limit
        seen += [(h.task, h.name) for h in page.hits]
        if not page.truncated:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor
        assert pages < 200
    assert seen == everything


def test_search_over_a_wide_run(local_runs, client):
    Run, _ = client
    got = ma.search_artifacts("WideFlow", name="value", namespace=None, limit=1000)
    truth = {t.pathspec for t in Run(local_runs.wide)["work"] if "value" in t}
    assert {h.task for h in got.hits if h.task.startswith(local_runs.wide)} == truth


def test_search_cursor_bound_to_its_query(local_runs):
    page = ma.search_artifacts("ArtifactFlow", name="[a-z]*", namespace=None, limit=1)
    with pytest.raises(ma.BadInput) as exc:
        ma.search_artifacts("ArtifactFlow", name="blob", namespace=None, limit=1, cursor=page.next_cursor)
    assert exc.value.hint


# --- compare_runs -----------------------------------------------------------------
def test_compare_alpha_changed(local_runs, client):
    Run, _ = client
    a, b = Run(local_runs.art_a), Run(local_runs.art_b)
    got = ma.compare_runs(local_runs.art_a, local_runs.art_b)
    assert got.status_a == got.status_b == "completed"
    params = {d.name: d for d in got.parameters}
    assert set(params) == {"alpha"}  # big_mb is equal in both runs
    alpha = params["alpha"]
    assert alpha.change == "changed"
    assert alpha.value_a == a.data.alpha == 0.5  # small plain values, as JSON
    assert alpha.value_b == b.data.alpha == 0.7
    assert alpha.sha_a != alpha.sha_b
    # Changed end-step artifacts show their values the same way, when small and plain.
    arts = {d.name: d for d in got.artifacts}
    assert (arts["score"].value_a, arts["score"].value_b) == (a.data.score, b.data.score)
    assert arts["summary"].value_a == a.data.summary and arts["summary"].value_b == b.data.summary
    assert arts["config"].value_a == a.data.config  # a dict holding a list


def test_compare_artifacts_by_sha_match_client(local_runs, client):
    Run, _ = client
    end_a = {x.id: x.sha for x in Run(local_runs.art_a)["end"].task}
    end_b = {x.id: x.sha for x in Run(local_runs.art_b)["end"].task}
    got = ma.compare_runs(local_runs.art_a, local_runs.art_b)
    changed = {n for n in set(end_a) & set(end_b) if end_a[n] != end_b[n]}
    equal = {n for n in set(end_a) & set(end_b) if end_a[n] == end_b[n]}
    assert {d.name for d in got.artifacts if d.change == "changed"} == changed
    assert {"alpha", "config", "score", "summary"} <= changed
    assert got.equal == len(equal)
    assert "blob" in equal and "numbers" in equal
    for d in got.artifacts:
        assert d.step == "end"
        assert (d.sha_a, d.sha_b) == (end_a.get(d.name), end_b.get(d.name))
    assert not got.truncated


def test_compare_with_itself_is_all_equal(local_runs):
    got = ma.compare_runs(local_runs.art_a, local_runs.art_a)
    assert got.parameters == [] and got.artifacts == []
    assert got.equal == len(ma.list_artifacts(_task(local_runs.art_a, "end", local_runs.root)).artifacts)


def test_compare_loads_no_big_blob(local_runs):
    got = ma.compare_runs(local_runs.art_a, local_runs.art_b)
    assert got.cost.datastore_bytes < 256 * 1024  # the 3 MB blobs are compared by sha only


def test_preview_of_an_unimportable_class_is_a_typed_error(local_runs):
    """The flow's own class is not on the allow-list: NotAllowed naming it, with what to do instead."""
    from metaflow_agent._backend import get_backend
    from metaflow_agent._pathspec import Pathspec

    flow, run = local_runs.art_a.split("/")
    task = get_backend().meta.list_tasks(Pathspec(flow, run, "start"))[0]
    listed = {a.name: a for a in ma.list_artifacts(f"{local_runs.art_a}/start/{task}").artifacts}
    assert listed["opaque"].type == "__main__.Opaque"  # known without unpickling
    with pytest.raises(ma.NotAllowed) as exc:
        ma.artifact_preview(f"{local_runs.art_a}/start/{task}", "opaque")
    assert "__main__.Opaque" in exc.value.message and "list_artifacts" in exc.value.hint and "unsafe=True" in exc.value.hint


def test_search_outside_the_runs_namespace_says_how_to_widen(local_runs):
    got = ma.search_artifacts("ArtifactFlow", name="*", namespace="user:nobody-here")
    assert got.hits == [] and got.scanned == 0
    assert any("--no-namespace" in n and "user:nobody-here" in n for n in got.notes)
    assert not any("namespace" in n for n in ma.search_artifacts("ArtifactFlow", name="*", namespace=None).notes)
