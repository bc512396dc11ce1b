"""Path safety and read economy of the local datastore (issue 11), on small synthetic trees.

Paths are checked once per folder, not per file: a folder is opened O_NOFOLLOW or seen as a
real folder in its parent's listing; a link must resolve inside the root. Files are opened
O_NOFOLLOW|O_NONBLOCK and must be regular. Within a call each folder is listed once and each
small file read once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaflow_agent._cost import metered, one_time
from metaflow_agent._datastore import LocalDatastore
from metaflow_agent._errors import Damaged, NotFound, PathEscape

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path: Path) -> tuple[LocalDatastore, Path, Path]:
    """A root with Flow/1/step/1/{a.json,_meta/x.json}, and a secret folder beside the root."""
    root = tmp_path / "root" / ".metaflow"
    task = root / "Flow" / "1" / "step" / "1"
    (task / "_meta").mkdir(parents=True)
    (task / "a.json").write_text(json.dumps({"value": 1}))
    (task / "_meta" / "x.json").write_text("{}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "a.json").write_text(json.dumps({"secret": True}))
    (secret / "_meta").mkdir()
    return LocalDatastore(str(root)), root, secret


def test_reads_and_lists_inside_the_root(tree):
    store, _, _ = tree
    with metered():
        assert store.read_json("Flow/1/step/1/a.json") == {"value": 1}
        assert sorted(store.list("Flow/1/step/1")) == ["_meta", "a.json"]
        assert store.list("Flow/1/step/1/_meta") == ["x.json"]
        assert store.size("Flow/1/step/1/a.json") == len(json.dumps({"value": 1}))
        assert store.list("Flow/1/nope") == [] and store.size("Flow/1/nope/a.json") is None
        with pytest.raises(NotFound):
            store.read("Flow/1/step/1/missing.json")


@pytest.mark.parametrize("rel", ["Flow/../x", "/etc/passwd", "Flow//1", "Flow/./1", "Flow\\1", "Flow/\x001"])
def test_paths_that_leave_the_root_are_bad_input(tree, rel):
    store, _, _ = tree
    with metered(), pytest.raises(PathEscape):
        store.read(rel)


@pytest.mark.parametrize("where", ["task folder", "file", "_meta folder", "flow folder"])
def test_a_link_out_of_the_root_is_damaged(tree, where):
    store, root, secret = tree
    task = root / "Flow" / "1" / "step" / "1"
    if where == "task folder":
        os.rename(task, task.with_name("gone"))
        os.symlink(secret, task)
    elif where == "file":
        (task / "a.json").unlink()
        os.symlink(secret / "a.json", task / "a.json")
    elif where == "_meta folder":
        os.rename(task / "_meta", task / "gone")
        os.symlink(secret / "_meta", task / "_meta")
    else:
        os.rename(root / "Flow", root / "Gone")
        os.symlink(root / "Gone", root / "Flow")  # inside: followed
        os.rename(root / "Gone" / "1", secret / "1")
        os.symlink(secret / "1", root / "Gone" / "1")  # the run folder leaves
    read_file = lambda: store.read_json("Flow/1/step/1/a.json")  # noqa: E731
    list_task = lambda: store.list("Flow/1/step/1")  # noqa: E731
    list_meta = lambda: store.list("Flow/1/step/1/_meta")  # noqa: E731
    refused, fine = {"task folder": ([read_file, list_task, list_meta], []), "file": ([read_file], [list_task, list_meta]),
                     "_meta folder": ([list_meta], [read_file, list_task]), "flow folder": ([read_file, list_task, list_meta], [])}[where]
    for read in refused:
        with metered(), pytest.raises(Damaged) as info:
            read()
        assert "leaves the datastore root" in info.value.message and info.value.hint
    for read in fine:
        with metered():
            read()


def test_links_inside_the_root_are_followed(tree):
    store, root, _ = tree
    task = root / "Flow" / "1" / "step" / "1"
    elsewhere = root / "Flow" / "copies" / "1"
    elsewhere.parent.mkdir()
    os.rename(task, elsewhere)
    os.symlink(elsewhere, task)
    (elsewhere / "b.json").symlink_to(elsewhere / "a.json")
    with metered():
        assert store.read_json("Flow/1/step/1/a.json") == {"value": 1}
        assert store.read_json("Flow/1/step/1/b.json") == {"value": 1}
        assert sorted(store.list("Flow/1/step/1")) == ["_meta", "a.json", "b.json"]
        assert store.list("Flow/1/step/1/_meta") == ["x.json"]


def test_a_root_reached_through_a_link_works(tree, tmp_path):
    _, root, _ = tree
    link = tmp_path / "link-to-root"
    os.symlink(root, link)
    store = LocalDatastore(str(link))
    with metered():
        assert store.read_json("Flow/1/step/1/a.json") == {"value": 1}


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_what_is_not_a_file_is_refused_at_once(tree, kind):
    store, root, _ = tree
    path = root / "Flow" / "1" / "step" / "1" / "a.json"
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    started = time.perf_counter()
    for read in (lambda: store.read("Flow/1/step/1/a.json"), lambda: store.read_tail("Flow/1/step/1/a.json", 10),
                 lambda: store.read_json("Flow/1/step/1/a.json")):
        with metered(), pytest.raises(Damaged) as info:
            read()
        assert ("FIFO" if kind == "fifo" else "folder") in info.value.message
    assert time.perf_counter() - started < 2


def test_a_link_loop_is_damaged(tree):
    store, root, _ = tree
    meta = root / "Flow" / "1" / "step" / "1" / "_meta"
    for p in meta.iterdir():
        p.unlink()
    meta.rmdir()
    os.symlink(meta, meta)
    with metered(), pytest.raises(Damaged) as info:
        store.list("Flow/1/step/1/_meta")
    assert "cannot be resolved" in info.value.message


def test_unparseable_json_is_damaged(tree):
    store, root, _ = tree
    (root / "Flow" / "1" / "step" / "1" / "a.json").write_bytes(b'{"value": ')
    with metered(), pytest.raises(Damaged) as info:
        store.read_json("Flow/1/step/1/a.json")
    assert "not valid JSON" in info.value.message and info.value.item == "Flow/1/step/1/a.json"


def test_each_folder_listed_and_each_small_file_read_once_per_call(tree):
    store, _, _ = tree
    with metered() as meter:
        for _ in range(3):
            store.list("Flow/1/step/1")
            store.entries("Flow/1/step/1", with_stat=True)
            store.read_small("Flow/1/step/1/a.json")
    assert meter.datastore_reads == 2  # one listing, one read
    assert [p for p, _ in meter.reads] == ["Flow/1/step/1/", "Flow/1/step/1/a.json"]
    with metered() as again:  # a new call looks again
        store.list("Flow/1/step/1")
    assert again.datastore_reads == 1


def test_reads_are_sized_to_the_file(tree):
    store, root, _ = tree
    big = root / "Flow" / "1" / "step" / "1" / "big.log"
    big.write_bytes(b"x" * 100_000)
    with metered() as meter:
        assert len(store.read("Flow/1/step/1/big.log", 99_990, 1 << 20)) == 10
        data, total = store.read_tail("Flow/1/step/1/big.log", 7)
    assert data == b"x" * 7 and total == 100_000
    assert [n for _, n in meter.reads] == [10, 7]


def test_one_time_work_is_left_out_of_elapsed():
    with metered() as meter:
        with one_time():
            time.sleep(0.3)
    assert meter.elapsed_ms < 250


def test_a_local_query_does_not_import_metaflow(tmp_path):
    """Settings come from the environment and Metaflow's config files, read without importing it."""
    home = tmp_path / "home"
    home.mkdir()
    sysroot = tmp_path / "sys"
    meta = sysroot / ".metaflow" / "SomeFlow" / "_meta"
    meta.mkdir(parents=True)
    (meta / "_self.json").write_text(json.dumps({"flow_id": "SomeFlow", "ts_epoch": 0}))
    (home / "config.json").write_text(json.dumps({"METAFLOW_DEFAULT_METADATA": "local", "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(sysroot)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_") and k not in ("USERNAME", "SUDO_USER")}
    env |= {"METAFLOW_HOME": str(home), "USER": "someone"}
    code = ("import sys, metaflow_agent as ma; r = ma.list_runs('SomeFlow'); "
            "print(r.runs == [], 'metaflow' in sys.modules, r.notes[-1])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 2)[:2] == ["True", "False"], out.stdout
    assert "user:someone" in out.stdout


def test_settings_read_without_metaflow_equal_metaflows(tmp_path):
    """The global and local config files and the environment, in Metaflow's order."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    (tmp_path / "project" / ".metaflow").mkdir()
    (home / "config_prof.json").write_text(json.dumps({"METAFLOW_DEFAULT_METADATA": "service", "METAFLOW_SERVICE_URL": "http://x",
                                                      "METAFLOW_USER": "from-global", "METAFLOW_DEFAULT_DATASTORE": "s3"}))
    (tmp_path / "project" / ".metaflow" / "config.json").write_text(json.dumps({"METAFLOW_SERVICE_URL": "http://local",
                                                                              "METAFLOW_DATASTORE_SYSROOT_S3": "s3://b/p"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env |= {"METAFLOW_HOME": str(home), "METAFLOW_PROFILE": "prof", "METAFLOW_DEFAULT_DATASTORE": "local"}
    code = ("import sys, json; from metaflow_agent import _config as c; "
            "names = ['DEFAULT_METADATA', 'SERVICE_URL', 'USER', 'DEFAULT_DATASTORE', 'DATASTORE_SYSROOT_S3', 'DATASTORE_SYSROOT_LOCAL']; "
            "ours = [c.metaflow_setting(n) for n in names]; before = 'metaflow' in sys.modules; "
            "from metaflow import metaflow_config as m; print(json.dumps([before, ours, [getattr(m, n) for n in names]]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, ours, theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert before is False
    assert ours == theirs
    assert ours[:2] == ["service", "http://local"]
