"""list_runs and run_summary on real local runs, checked against the Client API."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers import OTHER_USER, TEST_USER, client_run_state

import metaflow_agent as ma


def _client_runs(flow: str, ns=None) -> list:
    """The Client's runs of a flow in namespace ns, newest first."""
    from metaflow import Flow, namespace
    from metaflow.exception import MetaflowNamespaceMismatch

    namespace(ns)
    try:
        runs = list(Flow(flow).runs())
    except MetaflowNamespaceMismatch:  # no run of the flow in this namespace
        return []
    return sorted(runs, key=lambda r: r.created_at, reverse=True)


def _status(run) -> str:
    # Every test run is over: its state by the Client's own metadata.
    return client_run_state(run)


def _epoch(run) -> float:
    return run.created_at.timestamp()  # the Client builds created_at with fromtimestamp (local time)


def _ids(result: ma.RunList) -> list[str]:
    return [r.pathspec for r in result.runs]


def _all_pages(flow: str, limit: int, **kw) -> tuple[list[str], int]:
    seen, pages, cursor = [], 0, None
    while True:
        page = ma.list_runs(flow, limit=limit, cursor=cursor, **kw)
        pages += 1
        assert len(page.runs) <= limit
        assert page.truncated == (page.next_cursor is not None)
        seen += _ids(page)
        if not page.truncated:
            return seen, pages
        cursor = page.next_cursor
        assert pages < 50, "paging does not end"


# --- list_runs ----------------------------------------------------------------
def test_newest_first_with_client_status_user_tags(local_runs, client_ns):
    truth = _client_runs("HelloFlow")
    got = ma.list_runs("HelloFlow", namespace=None)
    assert _ids(got) == [r.pathspec for r in truth]
    assert len(truth) >= 4
    for info, run in zip(got.runs, truth):
        assert info.status == _status(run)
        assert info.run_id == run.id
        assert info.user == TEST_USER
        assert set(info.tags) == set(run.user_tags)
        created = datetime.fromisoformat(info.created_at.replace("Z", "+00:00"))
        assert abs(created.timestamp() - _epoch(run)) < 1.0
    assert got.truncated is False and got.next_cursor is None and got.complete
    assert got.cost.metadata_requests == 0 and got.cost.datastore_reads > 0


def test_status_filter(local_runs, client_ns):
    truth = _client_runs("HelloFlow")
    for status in ("completed", "failed", "crashed", "running", "unknown"):
        got = ma.list_runs("HelloFlow", status=status, namespace=None)
        assert _ids(got) == [r.pathspec for r in truth if _status(r) == status], status
        assert all(r.status == status for r in got.runs)
    assert _ids(ma.list_runs("HelloFlow", status="failed", namespace=None)) == [local_runs.hello_failed]


def test_status_of_other_flows(local_runs, client_ns):
    from metaflow import Run, namespace

    namespace(None)
    for ps in (local_runs.wide, local_runs.retry, local_runs.crash, local_runs.log, local_runs.art_a):
        flow = ps.split("/")[0]
        got = {r.pathspec: r.status for r in ma.list_runs(flow, namespace=None, limit=500).runs}
        assert got[ps] == _status(Run(ps)), ps
    # The killed task never wrote attempt_ok and nothing raised: the run crashed (not running, not failed).
    assert ma.run_summary(local_runs.crash).status == "crashed"


@pytest.mark.parametrize(
    "tags_any, tags_all",
    [
        (["team:a"], None),
        (["team:a", "batch:1"], None),
        (["team:b", "batch:1"], None),
        (None, ["team:a", "batch:0"]),
        (None, ["team:b"]),
        (["batch:0", "batch:1"], ["team:a"]),
        (["no-such-tag"], None),
        (None, ["team:a", "team:b"]),
    ],
)
def test_tag_filters(local_runs, client_ns, tags_any, tags_all):
    truth = _client_runs("HelloFlow")
    want = [
        r.pathspec
        for r in truth
        if (not tags_any or set(tags_any) & set(r.tags)) and (not tags_all or set(tags_all) <= set(r.tags))
    ]
    got = ma.list_runs("HelloFlow", tags_any=tags_any, tags_all=tags_all, namespace=None)
    assert _ids(got) == want
    for info in got.runs:
        if tags_all:
            assert set(tags_all) <= set(info.tags)
        if tags_any:
            assert set(tags_any) & set(info.tags)


def test_tags_any_accepts_a_single_string(local_runs, client_ns):
    assert _ids(ma.list_runs("HelloFlow", tags_any="team:a", namespace=None)) == _ids(
        ma.list_runs("HelloFlow", tags_any=["team:a"], namespace=None)
    )


def test_since_until_iso(local_runs, client_ns):
    truth = _client_runs("HelloFlow")
    assert len(truth) >= 3
    # Boundaries exactly at a run's creation (ms) include it on both sides.
    mid = truth[1]
    iso = datetime.fromtimestamp(_epoch(mid), tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    since = ma.list_runs("HelloFlow", since=iso, namespace=None)
    assert _ids(since) == [r.pathspec for r in truth if _epoch(r) >= _epoch(mid) - 0.0005]
    assert mid.pathspec in _ids(since) and truth[2].pathspec not in _ids(since)
    until = ma.list_runs("HelloFlow", until=iso, namespace=None)
    assert _ids(until) == [r.pathspec for r in truth if _epoch(r) <= _epoch(mid) + 0.0005]
    assert truth[0].pathspec not in _ids(until)
    # A window holding only the middle run, given as datetimes.
    lo = datetime.fromtimestamp(_epoch(mid) - 0.5, tz=timezone.utc)
    hi = datetime.fromtimestamp(_epoch(mid) + 0.5, tz=timezone.utc)
    assert _ids(ma.list_runs("HelloFlow", since=lo, until=hi, namespace=None)) == [mid.pathspec]
    # Offsets other than Z are honoured.
    plus2 = lo.astimezone(timezone(timedelta(hours=2)))
    assert _ids(ma.list_runs("HelloFlow", since=plus2.isoformat(), namespace=None)) == _ids(
        ma.list_runs("HelloFlow", since=lo, namespace=None)
    )


def test_since_until_relative(local_runs, client_ns):
    truth = _client_runs("HelloFlow")
    # A relative time between the 2nd and 3rd newest runs' ages (runs are seconds apart).
    now = time.time()
    age_2, age_3 = now - _epoch(truth[1]), now - _epoch(truth[2])
    assert age_3 - age_2 > 1.0
    between = (age_2 + age_3) / 2
    got = ma.list_runs("HelloFlow", since=f"{between:.3f}s", namespace=None)
    assert _ids(got) == [r.pathspec for r in truth[:2]]
    older = ma.list_runs("HelloFlow", until=f"{between:.3f}s", namespace=None)
    assert _ids(older) == [r.pathspec for r in truth[2:]]
    assert _ids(ma.list_runs("HelloFlow", since="10000d", namespace=None)) == [r.pathspec for r in truth]
    assert ma.list_runs("HelloFlow", until="10000d", namespace=None).runs == []
    for spec in ("1w", "2h", "30m", "45s"):
        ma.list_runs("HelloFlow", since=spec, namespace=None)  # every unit parses


def test_user_filter(local_runs, client_ns):
    truth = _client_runs("HelloFlow")
    assert _ids(ma.list_runs("HelloFlow", user=TEST_USER, namespace=None)) == [r.pathspec for r in truth]
    assert ma.list_runs("HelloFlow", user="nobody-else", namespace=None).runs == []


def test_namespace_default_is_the_clients_default(local_runs, client_ns):
    from metaflow import default_namespace

    ns = default_namespace()
    assert ns == f"user:{TEST_USER}"
    default = ma.list_runs("HelloFlow")
    assert _ids(default) == [r.pathspec for r in _client_runs("HelloFlow", ns)]
    assert any(ns in n for n in default.notes)
    assert _ids(ma.list_runs("HelloFlow", namespace=ns)) == _ids(default)


@pytest.mark.parametrize("ns", ["team:a", "team:b", "batch:0", "user:nobody-else"])
def test_namespace_tag_matches_client(local_runs, client_ns, ns):
    assert _ids(ma.list_runs("HelloFlow", namespace=ns)) == [r.pathspec for r in _client_runs("HelloFlow", ns)]


def test_namespace_default_excludes_other_users(other_user_root, monkeypatch):
    root, run = other_user_root
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", root)
    assert ma.list_runs("HelloFlow").runs == []  # default namespace: user:tester
    everyone = ma.list_runs("HelloFlow", namespace=None)
    assert _ids(everyone) == [run]
    assert everyone.runs[0].user == OTHER_USER
    assert everyone.runs[0].tags == ["team:z"]
    assert _ids(ma.list_runs("HelloFlow", namespace=f"user:{OTHER_USER}")) == [run]
    assert _ids(ma.list_runs("HelloFlow", namespace=None, user=OTHER_USER)) == [run]
    assert ma.list_runs("HelloFlow", namespace=None, user=TEST_USER).runs == []


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_covers_every_run_once(local_runs, client_ns, limit):
    truth = [r.pathspec for r in _client_runs("HelloFlow")]
    seen, pages = _all_pages("HelloFlow", limit, namespace=None)
    assert seen == truth
    assert len(set(seen)) == len(seen)
    assert pages == -(-len(truth) // limit)  # no empty trailing page


def test_paging_with_a_status_filter(local_runs, client_ns):
    truth = [r.pathspec for r in _client_runs("HelloFlow") if r.successful]
    seen, _ = _all_pages("HelloFlow", 1, status="completed", namespace=None)
    assert seen == truth


def test_paging_across_flows_with_many_runs(local_runs, client_ns):
    truth = [r.pathspec for r in _client_runs("ArtifactFlow")]
    seen, _ = _all_pages("ArtifactFlow", 1, namespace=None)
    assert seen == truth


def test_truncated_flag(local_runs, client_ns):
    n = len(_client_runs("HelloFlow"))
    cut = ma.list_runs("HelloFlow", limit=n - 1, namespace=None)
    assert cut.truncated and cut.next_cursor and len(cut.runs) == n - 1
    exact = ma.list_runs("HelloFlow", limit=n, namespace=None)
    assert not exact.truncated and exact.next_cursor is None and len(exact.runs) == n
    roomy = ma.list_runs("HelloFlow", limit=500, namespace=None)
    assert not roomy.truncated and len(roomy.runs) == n


def test_cursor_is_bound_to_its_filters(local_runs, client_ns):
    page = ma.list_runs("HelloFlow", limit=1, namespace=None)
    with pytest.raises(ma.BadInput) as exc:
        ma.list_runs("HelloFlow", limit=1, status="completed", namespace=None, cursor=page.next_cursor)
    assert exc.value.hint


# --- run_summary --------------------------------------------------------------
def _expected_steps(outcomes: dict) -> dict[str, dict[str, int]]:
    out = {}
    for step, tasks in outcomes.items():
        vals = list(tasks.values())
        out[step] = {
            "tasks": len(vals),
            "completed": sum(o.outcome == "completed" for o in vals),
            "failed": sum(o.outcome == "failed" for o in vals),
            "running": 0,
            "retrying": 0,  # every run here is over
            "unknown": 0,
            "crashed": sum(o.outcome == "crashed" for o in vals),
            "retried_ok": sum(o.outcome == "completed" and bool(o.failed_attempts) for o in vals),
        }
    return out


@pytest.mark.parametrize("which", ["wide", "retry", "crash", "log", "art_a", "hello_failed", "hello_ok0"])
def test_run_summary_counts_match_client(local_runs, client_outcomes, which):
    from metaflow import Run

    ps = local_runs.hello_ok[0] if which == "hello_ok0" else getattr(local_runs, which)
    truth = client_outcomes(ps)
    got = ma.run_summary(ps)
    run = Run(ps)
    assert got.pathspec == ps
    assert got.status == _status(run)
    counts = set(ma.RunSummary.model_fields["totals"].annotation.model_fields)
    got_steps = {s.step: s.model_dump(include=counts) for s in got.steps}
    assert got_steps == _expected_steps(truth)
    for key in counts:  # the run's totals are the steps' sums
        assert getattr(got.totals, key) == sum(c[key] for c in got_steps.values()), key
    # Step timing against the Client's: a step finished when its last task did (_task_ok saved).
    for s in got.steps:
        client_step = run[s.step]
        finished = client_step.finished_at
        if s.finished_at is None:
            assert s.crashed or s.failed or finished is None, s.step
            continue
        assert finished is not None, s.step
        ours = datetime.fromisoformat(s.finished_at.replace("Z", "+00:00")).timestamp()
        assert abs(ours - finished.timestamp()) < 1.5, s.step
        assert s.duration_s is not None and s.duration_s >= 0
        assert len(s.slowest) == min(3, s.tasks) and all(t.duration_s is not None and t.duration_s >= 0 for t in s.slowest)
        assert [t.duration_s for t in s.slowest] == sorted((t.duration_s for t in s.slowest), reverse=True)
    assert "_parameters" not in got_steps
    # Steps in execution order: start first, end (when reached) last.
    names = [s.step for s in got.steps]
    assert names[0] == "start"
    if "end" in names:
        assert names[-1] == "end"
    assert got.user == TEST_USER
    assert set(got.tags) == set(run.user_tags)
    assert got.finished_at is not None and got.duration_s is not None and got.duration_s > 0
    assert got.finished_at >= got.created_at
    assert got.cost.metadata_requests == 0


def test_run_summary_first_failure(local_runs, client_outcomes, client_ns):
    from metaflow import Run, Task

    for ps in (local_runs.wide, local_runs.hello_failed, local_runs.crash, local_runs.retry, local_runs.hello_ok[0]):
        truth = client_outcomes(ps)
        got = ma.run_summary(ps).first_failure
        order = [s.id for s in sorted(Run(ps), key=lambda s: (s.created_at, s.id))]
        failed = [(order.index(st), int(t), o) for st, ts in truth.items() for t, o in ts.items() if o.outcome == "failed"]
        crashed = [(order.index(st), int(t), o) for st, ts in truth.items() for t, o in ts.items() if o.outcome == "crashed"]
        if not failed and not crashed:
            assert got is None, ps
            continue
        first = min(failed or crashed, key=lambda x: x[:2])[2]
        assert got is not None and got.pathspec == first.pathspec, ps
        if failed:
            exc = Task(first.pathspec).exception
            assert got.exception_type == exc.type.split(".")[-1]
            assert got.message == exc.exception
        else:
            assert got.exception_type == "crashed"
    assert ma.run_summary(local_runs.hello_failed).first_failure.exception_type == "KeyError"
    assert "WIDE_BOOM" in ma.run_summary(local_runs.wide).first_failure.message


def test_run_summary_wide_is_flat_in_reads(local_runs):
    # Cost sanity: bounded by a few reads per task, not by log or artifact sizes.
    got = ma.run_summary(local_runs.wide)
    tasks = sum(s.tasks for s in got.steps)
    assert got.cost.datastore_bytes < 4096 * tasks


def test_paging_with_a_relative_since_keeps_its_window(local_runs):
    """'since' given as '3650d' is resolved once; page 2 accepts the cursor and continues."""
    first = ma.list_runs("HelloFlow", since="3650d", limit=2, namespace=None)
    assert first.truncated and first.next_cursor
    second = ma.list_runs("HelloFlow", since="3650d", limit=2, namespace=None, cursor=first.next_cursor)
    ids = [r.run_id for r in first.runs + second.runs]
    every = [r.run_id for r in ma.list_runs("HelloFlow", namespace=None, limit=50).runs]
    assert ids == every[: len(ids)] and len(set(ids)) == len(ids)
