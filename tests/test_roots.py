"""The pieces that follow recorded datastore roots (`metaflow_agent._roots`), on real files:
parsing what tasks record, opening roots, and a task's view moving to the root the task itself
recorded only when its folder is missing from its run's root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaflow_agent._blobs import data_index, latest_attempt, load_blob
from metaflow_agent._cost import metered
from metaflow_agent._datastore import Datastore, LocalDatastore, S3Datastore
from metaflow_agent._errors import BackendError, NotFound
from metaflow_agent._pathspec import Pathspec
from metaflow_agent._roots import DataRoot, TaskStore, forget_roots, open_root, root_notes

TASK = Pathspec.parse("F/1/start/2", "task")


def test_recorded_values_parse_and_normalise():
    assert DataRoot.of("s3", "s3://bucket/metaflow/") == DataRoot("s3", "s3://bucket/metaflow")
    assert DataRoot.of("local", "/data/x/../metaflow/.metaflow") == DataRoot("local", "/data/metaflow/.metaflow")
    assert DataRoot.of("s3", "") is None and DataRoot.of(None, "/x") is None and DataRoot.of("local", 5) is None
    assert DataRoot.of_location("s3", ":root:s3://b/mf", "F") == DataRoot("s3", "s3://b/mf")
    # Records older than `:root:` locations name the blob itself: its root is before <flow>/data/.
    assert DataRoot.of_location("s3", "s3://b/mf/F/data/ab/abcdef", "F") == DataRoot("s3", "s3://b/mf")
    assert DataRoot.of_location("s3", "s3://b/mf/G/data/ab/abcdef", "F") is None
    assert DataRoot.of_location("local", None, "F") is None


def test_open_root_kinds():
    forget_roots()
    with pytest.raises(BackendError) as err:
        open_root(DataRoot("gs", "gs://bucket/mf"))
    assert "'gs'" in err.value.message and "gs://bucket/mf" in err.value.message and "Client API" in err.value.hint
    for bad in (DataRoot("local", "relative/.metaflow"), DataRoot("s3", "bucket/mf"), DataRoot("local", "/x\x00y")):
        with pytest.raises(BackendError) as err:
            open_root(bad)
        assert "malformed" in err.value.message
    s3 = open_root(DataRoot("s3", "s3://bucket/mf"))
    assert isinstance(s3, S3Datastore) and s3.bucket == "bucket" and s3.prefix == "mf"
    assert open_root(DataRoot("s3", "s3://bucket/mf")) is s3  # opened once per process
    local = open_root(DataRoot("local", "/nowhere/.metaflow"))
    assert isinstance(local, LocalDatastore) and local.list("F/1/start/2") == []
    forget_roots()
    assert open_root(DataRoot("s3", "s3://bucket/mf")) is not s3


def _task_files(root: Path, task: Pathspec, value: bytes = b"\x80\x04K*.") -> None:
    """A task folder with one attempt and one raw (uncompressed) artifact blob."""
    import hashlib

    sha = hashlib.sha1(value).hexdigest()
    folder = root / str(task)
    folder.mkdir(parents=True)
    (folder / "0.data.json").write_text(json.dumps({"objects": {"x": sha}, "info": {"x": {"size": len(value), "type": "<class 'int'>"}}}))
    (folder / "0.runtime_stdout.log").write_text("hi\n")
    blob = root / task.flow / "data" / sha[:2] / sha
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(value)
    (blob.parent / (sha + "_meta")).write_text(json.dumps({"cas_raw": True}))


class Looks:
    """Counts the lookups a view makes."""

    def __init__(self, first: Datastore | None, own: Datastore | None) -> None:
        self.first, self.own, self.calls = first, own, []

    def view(self) -> TaskStore:
        return TaskStore(TASK, self._first, self._own, self._recheck)

    def _first(self):
        self.calls.append("first")
        return self.first

    def _own(self):
        self.calls.append("own")
        return self.own

    def _recheck(self, current):
        self.calls.append("recheck")
        return None if self.own is current else self.own


def test_a_task_found_in_its_runs_root_costs_no_look_of_its_own(tmp_path):
    run_root = LocalDatastore(str(tmp_path / "a"))
    _task_files(tmp_path / "a", TASK)
    looks = Looks(run_root, LocalDatastore(str(tmp_path / "b")))
    view = looks.view()
    with metered():
        att = latest_attempt(view, TASK, with_data=True)
        sha = data_index(view, TASK, att)["objects"]["x"]
        assert load_blob(view, TASK.flow, sha, max_bytes=100) == b"\x80\x04K*."
        assert root_notes() == []
    assert looks.calls == ["first"] and view.root == run_root.root


def test_a_task_missing_from_its_runs_root_is_read_where_it_recorded(tmp_path):
    _task_files(tmp_path / "b", TASK, b"\x80\x04K\x07.")
    elsewhere = LocalDatastore(str(tmp_path / "b"))
    looks = Looks(LocalDatastore(str(tmp_path / "a")), elsewhere)
    view = looks.view()
    with metered():
        att = latest_attempt(view, TASK, with_data=True)
        sha = data_index(view, TASK, att)["objects"]["x"]
        # The blob is under the flow, not the task: it is read from the root the task moved to.
        assert load_blob(view, TASK.flow, sha, max_bytes=100) == b"\x80\x04K\x07."
        assert root_notes() == []
    assert looks.calls == ["first", "recheck"] and view.root == elsewhere.root


def test_a_miss_on_a_file_also_moves_the_view(tmp_path):
    """A read of a named file (an explicit attempt) misses the same way a listing does."""
    _task_files(tmp_path / "b", TASK)
    looks = Looks(LocalDatastore(str(tmp_path / "a")), LocalDatastore(str(tmp_path / "b")))
    view = looks.view()
    assert view.read_small(f"{TASK}/0.runtime_stdout.log") == b"hi\n"
    assert looks.calls == ["first", "recheck"]


def test_a_task_missing_everywhere_is_named_in_notes(tmp_path):
    here = LocalDatastore(str(tmp_path / "a"))
    looks = Looks(here, here)  # it recorded the run's own root: nothing else to try
    view = looks.view()
    with metered():
        assert latest_attempt(view, TASK, with_data=True) is None
        assert view.list(str(TASK)) == []
        with pytest.raises(NotFound):
            view.read(f"{TASK}/0.data.json")
        notes = root_notes()
    assert looks.calls == ["first", "recheck"]  # looked once, not per read
    assert len(notes) == 1 and f"no files at {here.root} for 1 task(s)" in notes[0]


def test_no_root_at_all_is_a_typed_error(tmp_path):
    looks = Looks(None, None)
    with pytest.raises(BackendError) as err:
        looks.view().list(str(TASK))
    assert "no datastore root is known" in err.value.message
    assert looks.calls == ["first", "own"]


def test_a_root_that_fails_is_noted_and_names_itself(tmp_path):
    class Broken(LocalDatastore):
        kind = "s3"

        def entries(self, rel_dir, *, with_stat=False):
            raise BackendError(f"S3 list of {rel_dir} failed: AccessDenied", hint="check credentials")

    broken = Broken("s3://locked-bucket/mf")
    view = Looks(broken, broken).view()
    with metered():
        with pytest.raises(BackendError) as err:
            view.list(str(TASK))
        notes = root_notes()
    assert "s3://locked-bucket/mf" in err.value.message and err.value.hint == "check credentials"
    assert notes == [f"datastore root s3://locked-bucket/mf could not be read: S3 list of {TASK} failed: AccessDenied; "
                     "what its tasks saved is missing here"]


def test_root_problems_are_told_from_service_failures(tmp_path):
    """search_artifacts skips a task whose root fails, but not a failure of the metadata service."""
    from metaflow_agent._errors import ServiceUnavailable
    from metaflow_agent._roots import is_root_problem

    class Broken(LocalDatastore):
        def entries(self, rel_dir, *, with_stat=False):
            raise ServiceUnavailable("S3 list failed: SlowDown")

    with metered():
        with pytest.raises(ServiceUnavailable) as err:
            Looks(Broken(str(tmp_path)), None).view().list(str(TASK))
        assert is_root_problem(err.value)
        assert not is_root_problem(ServiceUnavailable("metadata service at http://x answered 503"))


def test_a_recorded_root_is_read_where_the_map_puts_it(monkeypatch):
    from metaflow_agent._errors import BadInput
    from metaflow_agent._roots import mapped

    here = DataRoot("local", "/data/metaflow/.metaflow")
    monkeypatch.delenv("METAFLOW_AGENT_DATASTORE_ROOT_MAP", raising=False)
    assert mapped(here) == here
    monkeypatch.setenv("METAFLOW_AGENT_DATASTORE_ROOT_MAP", json.dumps({"/data/metaflow/.metaflow/": "/mnt/copy/.metaflow",
                                                                        "s3://old/mf": "s3://new/mf"}))
    assert mapped(here) == DataRoot("local", "/mnt/copy/.metaflow")  # recorded roots compared normalised
    assert mapped(DataRoot.of("s3", "s3://old/mf/")) == DataRoot("s3", "s3://new/mf")
    assert mapped(DataRoot("s3", "s3://other/mf")) == DataRoot("s3", "s3://other/mf")
    for bad in ("[1]", "{not json", '{"/a": 5}', '{"": "/b"}'):
        monkeypatch.setenv("METAFLOW_AGENT_DATASTORE_ROOT_MAP", bad)
        with pytest.raises(BadInput, match="METAFLOW_AGENT_DATASTORE_ROOT_MAP"):
            mapped(here)
