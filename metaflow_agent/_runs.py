"""Runs: filtered listing and one-run summaries."""

from __future__ import annotations

from . import _config
from ._backend import get_backend
from ._cost import metered
from ._errors import BadCursor, BadInput
from ._inputs import (
    DEFAULT_NAMESPACE,
    check_limit,
    check_tags,
    iso,
    make_cursor,
    open_cursor,
    parse_time,
    query_key,
    resolve_namespace,
)
from ._models import Cost, FailureBrief, RunInfo, RunList, RunSummary, StepSummary
from ._outcomes import assess, first_failure, run_status
from ._pathspec import Pathspec
from ._records import RunQuery

_STATUSES = ("running", "completed", "failed")


def list_runs(
    flow: str,
    *,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    tags_any: list[str] | None = None,
    tags_all: list[str] | None = None,
    user: str | None = None,
    namespace: str | None = DEFAULT_NAMESPACE,
    limit: int = 20,
    cursor: str | None = None,
) -> RunList:
    """Recent runs of a flow, newest first, filtered by status, time, tags.

    since/until take ISO-8601 or relative times ('24h', '7d'). namespace
    'default' is Metaflow's default (user:<you>); null searches all runs.
    Cost: one listing (filters pushed to the service when it supports them)
    plus at most a bounded number of status checks.
    """
    with metered() as meter:
        fl = Pathspec.parse(flow, "flow").flow
        limit = check_limit("limit", limit, low=1, high=_config.cap("runs"))
        if status is not None and status not in _STATUSES:
            raise BadInput(f"status={status!r} is not a run status", hint="use one of running, completed, failed, or omit it")
        ns = resolve_namespace(namespace)
        tags = (check_tags(tags_any, "tags_any"), check_tags(tags_all, "tags_all") + ((ns,) if ns else ()))
        # The fingerprint covers the arguments as given; relative times ('7d') are
        # resolved once, on the first page, and carried in the cursor.
        key = query_key(fl, status, since, until, tags, user)
        state = open_cursor(cursor, "list_runs", key)
        after, server_cursor = None, None
        window = (parse_time(since, "since"), parse_time(until, "until"))
        if state is not None:
            try:
                after = (int(state["ts"]), str(state["id"]))
                window = (state.get("since"), state.get("until"))
            except (KeyError, TypeError, ValueError):
                raise BadCursor("list_runs cursor is incomplete", hint="pass the next_cursor of the previous list_runs call, or drop it") from None
            server_cursor = state.get("srv")
        query = RunQuery(status=status, since_ms=window[0], until_ms=window[1], tags_any=tags[0], tags_all=tags[1], user=user)
        backend = get_backend()
        scan = backend.meta.scan_runs(fl, query, limit=limit, after=after, budget=_config.default("run_status_budget"),
                                      server_cursor=server_cursor, decide=lambda rec: run_status(backend, rec))
        runs = [
            RunInfo(
                pathspec=f"{fl}/{r.run_id}",
                run_id=r.run_id,
                status=r.status or "running",  # type: ignore[arg-type]  # statuses come from the rule: running/completed/failed
                created_at=iso(r.ts_ms) or "",
                user=r.user,
                tags=sorted(r.tags),
            )
            for r in scan.runs
        ]

        def cursor_after(ts_id: tuple[int, str] | None, srv: str | None = None) -> str | None:
            if ts_id is None:
                return None
            return make_cursor("list_runs", key, ts=ts_id[0], id=ts_id[1], since=query.since_ms, until=query.until_ms, **({"srv": srv} if srv else {}))

        next_cursor = None
        if scan.more:
            last = scan.runs[-1] if scan.runs else None
            resume = scan.resume_after if not scan.complete and scan.resume_after else ((last.ts_ms, last.run_id) if last else after)
            next_cursor = cursor_after(resume, scan.server_cursor)
        notes = list(scan.notes)
        if ns:
            notes.append(f"namespace {ns!r} (pass namespace=None for all users)")
        result = RunList(flow=fl, runs=runs, truncated=scan.more, next_cursor=next_cursor, complete=scan.complete,
                         scanned=scan.scanned, notes=notes, cost=Cost.of(meter))
        return result.resumable(lambda kept: cursor_after((scan.runs[kept - 1].ts_ms, scan.runs[kept - 1].run_id)))


def run_summary(run: str) -> RunSummary:
    """One run's status, timing, per-step task counts and first failure.

    Cost: the run, its steps, and the steps' outcome sets (filtered queries
    per step on a service), plus one lookup per unsettled task (failed or
    unfinished, at most 50) — flat in the number of tasks.
    """
    with metered() as meter:
        ps = Pathspec.parse(run, "run")
        backend = get_backend()
        rec = backend.meta.get_run(ps)
        a = assess(backend, rec)
        finished = a.finished_ms
        brief: FailureBrief | None = first_failure(backend, rec, a)
        return RunSummary(
            pathspec=str(ps),
            status=a.status,  # type: ignore[arg-type]  # statuses come from the rule: running/completed/failed
            created_at=iso(rec.ts_ms) or "",
            finished_at=iso(finished),
            duration_s=round((finished - rec.ts_ms) / 1000, 3) if finished else None,
            user=rec.user,
            tags=sorted(rec.tags),
            steps=[StepSummary(step=so.step, **a.counts(so)) for so in a.outcomes],
            first_failure=brief,
            notes=[f"backend: {backend.kind}"] + a.notes,
            cost=Cost.of(meter),
        )
