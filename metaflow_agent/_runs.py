"""Runs: filtered listing and one-run summaries."""

from __future__ import annotations

from typing import Iterable, get_args

from . import _limits
from ._backend import get_backend
from ._cost import metered
from ._errors import BadCursor, BadInput
from ._inputs import (
    check_limit,
    iso,
    make_cursor,
    open_cursor,
    parse_pathspec,
    parse_time,
    query_key,
)
from ._models import FailureBrief, RunInfo, RunList, RunStatus, RunSummary, StepSummary
from ._outcomes import assess, first_failure
from ._result import cost_of
from .backends.base import RunQuery

DEFAULT_NAMESPACE = "default"
_STATUSES: tuple[str, ...] = get_args(RunStatus)


def resolve_namespace(namespace: str | None) -> str | None:
    """'default' → Metaflow's default namespace (user:<you>); None → all runs."""
    if namespace == DEFAULT_NAMESPACE:
        from metaflow.util import get_username

        user = get_username()
        return f"user:{user}" if user else None
    return namespace


def _tags(value: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    tags = tuple(value)
    if not all(isinstance(t, str) and t for t in tags):
        raise BadInput(f"{name} must be a list of non-empty strings", hint=f"e.g. {name}=['team:a']")
    return tags


def list_runs(
    flow: str,
    *,
    status: RunStatus | None = None,
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

    Cost: one listing plus a bounded number of status checks.

    Args:
        flow: Flow name.
        status: Only runs in this state.
        since: Created at or after: ISO-8601 or relative ('24h', '7d').
        until: Created before: ISO-8601 or relative.
        tags_any: Runs with at least one of these tags.
        tags_all: Runs with all of these tags.
        user: Runs started by this user.
        namespace: e.g. 'user:alice'; 'default' is yours (user:<you>); null: all users.
        limit: Most runs to return.
        cursor: next_cursor of the previous page.
    """
    with metered() as meter:
        fl = parse_pathspec(flow, "flow").flow
        limit = check_limit("limit", limit, low=1, high=_limits.cap("runs"))
        if status is not None and status not in _STATUSES:
            raise BadInput(f"status={status!r} is not a run status", hint="use one of running, completed, failed, or omit it")
        ns = resolve_namespace(namespace)
        tags = (_tags(tags_any, "tags_any"), _tags(tags_all, "tags_all") + ((ns,) if ns else ()))
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
        scan = backend.scan_runs(fl, query, limit, after, _limits.default("run_status_budget"), server_cursor)
        runs = [
            RunInfo(
                pathspec=f"{fl}/{r.run_id}",
                run_id=r.run_id,
                status=r.status or "running",  # type: ignore[arg-type]
                created_at=iso(r.ts_ms) or "",
                user=r.user,
                tags=sorted(r.tags),
            )
            for r in scan.runs
        ]
        next_cursor = None
        if scan.more:
            last = scan.runs[-1] if scan.runs else None
            resume = scan.resume_after if not scan.complete and scan.resume_after else ((last.ts_ms, last.run_id) if last else after)
            if resume is not None:
                srv = {"srv": scan.server_cursor} if scan.server_cursor else {}
                next_cursor = make_cursor("list_runs", key, ts=resume[0], id=resume[1], since=query.since_ms, until=query.until_ms, **srv)
        notes = list(scan.notes)
        if ns:
            notes.append(f"namespace {ns!r}; for all users pass namespace=None (CLI: --no-namespace)")
        return RunList(
            flow=fl,
            runs=runs,
            truncated=scan.more,
            next_cursor=next_cursor,
            complete=scan.complete,
            scanned=scan.scanned,
            notes=notes,
            cost=cost_of(meter),
        )


def run_summary(run: str) -> RunSummary:
    """One run's status, timing, per-step task counts and first failure.

    Cost: the run, its steps and their outcome sets (flat in the number of
    tasks), plus one lookup per unsettled task (at most 50).

    Args:
        run: Run pathspec 'Flow/RunId'.
    """
    with metered() as meter:
        ps = parse_pathspec(run, "run")
        backend = get_backend()
        rec = backend.get_run(ps.flow, ps.run)
        a = assess(backend, rec)
        status, finished = a.status, a.finished_ms
        summaries = [StepSummary(step=so.step, **a.counts(so)) for so in a.outcomes]
        brief: FailureBrief | None = first_failure(backend, rec, a)
        duration = round((finished - rec.ts_ms) / 1000, 3) if finished else None
        return RunSummary(
            pathspec=f"{ps.flow}/{ps.run}",
            status=status,  # type: ignore[arg-type]
            created_at=iso(rec.ts_ms) or "",
            finished_at=iso(finished),
            duration_s=duration,
            user=rec.user,
            tags=sorted(rec.tags),
            steps=summaries,
            first_failure=brief,
            notes=[f"backend: {backend.kind}"] + a.notes,
            cost=cost_of(meter),
        )
