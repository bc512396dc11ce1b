"""Signed cursors: round trips, tampering, foreign queries, schemas, and a key shared across processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaflow_agent import _cursor as C
from metaflow_agent._errors import BadCursor


@pytest.fixture(autouse=True)
def _own_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(C.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    C._reset_key_cache()
    yield tmp_path / "cache"
    C._reset_key_cache()


STATES: dict[str, dict[str, Any]] = {
    "list_artifacts": {"i": 200},
    "failed_tasks": {"i": 0},
    "search_artifacts": {"pos": [1, 0, 3, -1]},
    "search_artifacts_qs": {"srv": "eyJxIjoiYSJ9", "skip": 3, "since": None, "until": 1_790_000_000_001},
    "list_runs": {"ts": 1_790_000_000_000, "id": "1790000", "since": None, "until": 1_790_000_000_001, "srv": "abc=="},
}


@pytest.mark.parametrize("kind", sorted(STATES))
def test_round_trip(kind: str) -> None:
    q = C.query_key("Flow", 1, None)
    cursor = C.make_cursor(kind, q, **STATES[kind])
    assert C.open_cursor(cursor, kind, q) == STATES[kind]
    assert C.open_cursor(None, kind, q) is None


def test_bound_to_kind_and_query() -> None:
    q = C.query_key("A")
    cursor = C.make_cursor("failed_tasks", q, i=5)
    with pytest.raises(BadCursor, match="different failed_tasks query"):
        C.open_cursor(cursor, "failed_tasks", C.query_key("B"))
    with pytest.raises(BadCursor):
        C.open_cursor(cursor, "list_artifacts", q)


def test_every_single_byte_change_is_refused() -> None:
    q = C.query_key("A")
    cursor = C.make_cursor("list_runs", q, **STATES["list_runs"])
    for i in range(len(cursor)):
        for repl in {"A", "_", "."} - {cursor[i]}:
            forged = cursor[:i] + repl + cursor[i + 1 :]
            with pytest.raises(BadCursor):
                C.open_cursor(forged, "list_runs", q)


def _signed(payload: dict[str, Any]) -> str:
    """A cursor signed with the real key: tests the schema layer behind the signature."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return f"{C.VERSION}.{C._b64(raw)}.{C._b64(C._tag(raw))}"


@pytest.mark.parametrize(
    "fields",
    [
        {"i": 10**400},
        {"i": -1},
        {"i": "5"},
        {"i": True},
        {"i": 1.5},
        {"i": None},
        {},
        {"i": 1, "extra": 2},
        {"i": [1]},
    ],
)
def test_schema_checked_field_by_field(fields: dict[str, Any]) -> None:
    q = C.query_key("A")
    with pytest.raises(BadCursor):
        C.open_cursor(_signed({"k": "failed_tasks", "q": q, **fields}), "failed_tasks", q)


@pytest.mark.parametrize(
    "fields",
    [
        {"pos": [1, 2, 3]},
        {"pos": [1, 2, 3, 10**20]},
        {"pos": "1,2,3,4"},
        {"pos": [1, 2, 3, None]},
    ],
)
def test_position_lists(fields: dict[str, Any]) -> None:
    q = C.query_key("A")
    with pytest.raises(BadCursor):
        C.open_cursor(_signed({"k": "search_artifacts", "q": q, **fields}), "search_artifacts", q)


def test_old_unsigned_cursors_and_sha1_forgeries_are_refused() -> None:
    """The issue's forgery: base64 JSON with a guessed unkeyed sha1 query key."""
    key = hashlib.sha1(repr(("Flow/1/step/2", None, False)).encode()).hexdigest()[:12]
    forged = base64.urlsafe_b64encode(json.dumps({"k": "list_artifacts", "q": key, "i": 10**30}).encode()).decode().rstrip("=")
    with pytest.raises(BadCursor):
        C.open_cursor(forged, "list_artifacts", key)


def test_huge_and_odd_inputs() -> None:
    for bad in [5, b"x", ["c1"], "c1." + "A" * 10_000, "c1..", "c1.!!!.@@@", "c2.a.b", "", "." * 3]:
        with pytest.raises(BadCursor):
            C.open_cursor(bad, "failed_tasks", "q")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_only_badcursor(text: str) -> None:
    try:
        C.open_cursor(text, "list_runs", "q")
    except BadCursor:
        pass


def test_cursor_kind_tells_which_kind_issued_it() -> None:
    q = C.query_key("A")
    served = C.make_cursor("search_artifacts_qs", q, skip=0)
    walked = C.make_cursor("search_artifacts", q, pos=[0, 0, 0, 1])
    kinds = ("search_artifacts", "search_artifacts_qs")
    assert C.cursor_kind(served, kinds) == "search_artifacts_qs" and C.cursor_kind(walked, kinds) == "search_artifacts"
    for bad in (C.make_cursor("failed_tasks", q, i=1), served[:-2] + "AA", "junk"):
        with pytest.raises(BadCursor, match="search_artifacts"):
            C.cursor_kind(bad, kinds)


def test_reissue_and_peek() -> None:
    q = C.query_key("A")
    cursor = C.make_cursor("failed_tasks", q, i=5)
    again = C.reissue_cursor(cursor, "failed_tasks", i=7)
    assert C.open_cursor(again, "failed_tasks", q) == {"i": 7}
    assert C.peek_cursor(again, "failed_tasks") == {"i": 7}
    with pytest.raises(ValueError):
        C.reissue_cursor(cursor, "failed_tasks", i=-3)


def test_key_file_is_private_and_shared_across_processes(_own_key_file: Path) -> None:
    q = C.query_key("Flow", 3)
    cursor = C.make_cursor("failed_tasks", q, i=3)
    path = _own_key_file / "metaflow-agent" / "cursor.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code = (
        "import sys; from metaflow_agent import _cursor as C\n"
        "q = C.query_key('Flow', 3)\n"
        "print(C.open_cursor(sys.argv[1], 'failed_tasks', q)['i'], C.make_cursor('failed_tasks', q, i=9))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(_own_key_file)}
    out = subprocess.run([sys.executable, "-c", code, cursor], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "3"
    assert C.open_cursor(out[1], "failed_tasks", q) == {"i": 9}


def test_other_key_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.KEY_ENV, "team secret one")
    q = C.query_key("A")
    cursor = C.make_cursor("failed_tasks", q, i=1)
    assert C.open_cursor(cursor, "failed_tasks", q) == {"i": 1}
    monkeypatch.setenv(C.KEY_ENV, "team secret two")
    with pytest.raises(BadCursor):
        C.open_cursor(cursor, "failed_tasks", C.query_key("A"))


def test_lax_key_file_is_tightened(_own_key_file: Path) -> None:
    C.key()
    path = _own_key_file / "metaflow-agent" / "cursor.key"
    path.chmod(0o644)
    C._reset_key_cache()
    C.key()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unwritable_cache_falls_back_to_a_process_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    C._reset_key_cache()
    q = C.query_key("A")
    assert C.open_cursor(C.make_cursor("failed_tasks", q, i=2), "failed_tasks", q) == {"i": 2}


def test_tag_is_an_hmac_of_the_payload() -> None:
    raw = b'{"i":1,"k":"failed_tasks","q":"x"}'
    assert C._tag(raw) == hmac.new(C.key(), b"cursor\0" + raw, hashlib.sha256).digest()[:16]
