"""Runs: filtered listing, one-run summaries, and statistics over many runs."""

from __future__ import annotations

import statistics

from . import _config
from ._backend import Backend, get_backend
from ._cost import CostMeter, call, skip_damaged
from ._cursor import make_cursor, open_cursor, query_key
from ._errors import BadCursor, BadInput
from ._inputs import (
    DEFAULT_NAMESPACE,
    check_limit,
    check_tags,
    iso,
    parse_time,
    resolve_namespace,
)
from ._models import (
    Cost,
    Counts,
    FailureBrief,
    RunInfo,
    RunList,
    RunStats,
    RunStatsList,
    RunSummary,
    StepSummary,
    TaskTime,
)
from ._outcomes import (
    Assessment,
    assess,
    finish,
    first_decided_failure,
    first_failure,
    settle_run,
)
from ._pathspec import Pathspec
from ._records import DecidedStats, DecidedSummary, RunQuery, RunRecord, StepOutcomes
from ._states import RUN_STATES, RunState

SLOWEST = 3  # slowest tasks shown per step


def _state(value: object, name: str = "status") -> RunState | None:
    if value is None:
        return None
    if value not in RUN_STATES:
        raise BadInput(f"{name}={value!r} is not a run state", hint=f"use one of {', '.join(RUN_STATES)}, or omit it")
    return value


def _duration(start_ms: int | None, end_ms: int | None) -> float | None:
    return round((end_ms - start_ms) / 1000, 3) if start_ms is not None and end_ms is not None else None


def _run_info(r: RunRecord) -> RunInfo:
    return RunInfo(
        pathspec=str(r.pathspec),
        run_id=r.run_id,
        status=r.status or "unknown",
        created_at=iso(r.ts_ms) or "",
        finished_at=iso(r.finished_ms),
        duration_s=_duration(r.ts_ms, r.finished_ms),
        user=r.user,
        tags=sorted(r.tags),
    )


def list_runs(
    flow: str,
    *,
    status: RunState | None = None,
    since: str | None = None,
    until: str | None = None,
    tags_any: list[str] | None = None,
    tags_all: list[str] | None = None,
    user: str | None = None,
    namespace: str | None = DEFAULT_NAMESPACE,
    limit: int = 20,
    cursor: str | None = None,
) -> RunList:
    """Recent runs of a flow, newest first, with state, finish and duration.

    Cost: one listing (filters pushed to the service when it supports
    them) plus a bounded number of state checks.

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
    with call() as meter:
        fl = Pathspec.parse(flow, "flow").flow
        limit = check_limit("limit", limit, low=1, high=_config.cap("runs"))
        wanted = _state(status)
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
            except (KeyError, TypeError, ValueError, OverflowError):
                raise BadCursor("list_runs cursor is incomplete", hint="pass the next_cursor of the previous list_runs call, or drop it") from None
            server_cursor = state.get("srv")
        query = RunQuery(status=wanted, since_ms=window[0], until_ms=window[1], tags_any=tags[0], tags_all=tags[1], user=user)
        backend = get_backend()
        scan = backend.meta.scan_runs(fl, query, limit=limit, after=after, budget=_config.default("run_status_budget"),
                                      server_cursor=server_cursor, decide=lambda rec: settle_run(backend, rec))
        finish(backend, scan.runs)

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
            notes.append(f"namespace {ns!r} (namespace=None, CLI --no-namespace, for all users)")
        notes += backend.meta.call_notes() + meter.damage_notes()
        result = RunList(flow=fl, runs=[_run_info(r) for r in scan.runs], truncated=scan.more, next_cursor=next_cursor,
                         complete=scan.complete and not meter.skipped_count, scanned=scan.scanned, notes=notes, cost=Cost.of(meter))
        return result.resumable(lambda kept: cursor_after((scan.runs[kept - 1].ts_ms, scan.runs[kept - 1].run_id)))


def _step_summary(a: Assessment, so: StepOutcomes) -> StepSummary:
    starts = [t[0] for t in so.times.values() if t[0] is not None] + ([so.registered_ms] if so.registered_ms else [])
    ends = [t[1] for t in so.times.values() if t[1] is not None]
    done = len(ends) == len(so.tasks) and bool(ends)
    durations = sorted(((_duration(s, e), tid) for tid, (s, e) in so.times.items() if s is not None and e is not None),
                       key=lambda d: -(d[0] or 0))
    return StepSummary(
        step=so.step,
        **a.counts(so),
        started_at=iso(min(starts)) if starts else None,
        finished_at=iso(max(ends)) if done else None,
        duration_s=_duration(min(starts), max(ends)) if starts and done else None,
        slowest=[TaskTime(task_id=tid, duration_s=d) for d, tid in durations[:SLOWEST]],
    )


def _totals(steps: list[StepSummary]) -> Counts:
    fields = list(Counts.model_fields)
    return Counts(**{f: sum(getattr(s, f) for s in steps) for f in fields})


def run_summary(run: str) -> RunSummary:
    """One run's state, timing, per-step counts and durations, first failure.

    Cost: the run, its steps, their outcome sets and timing (flat in the
    number of tasks), plus one look per unsettled task (at most 50).

    Args:
        run: Run pathspec 'Flow/RunId'.
    """
    with call() as meter:
        ps = Pathspec.parse(run, "run")
        backend = get_backend()
        decided = backend.meta.decided_summary(ps)
        if decided is not None:
            return _decided_summary(backend, ps, decided, meter)
        rec = backend.meta.get_run(ps)
        a = assess(backend, rec, times=True, finish=True)
        brief: FailureBrief | None = first_failure(backend, rec, a)
        steps = [_step_summary(a, so) for so in a.outcomes]
        notes = [f"backend: {backend.kind}"] + a.notes
        if a.outcomes and not all(so.exact_times for so in a.outcomes):
            notes.append("step and task times from task registration and last heartbeat (stored at most every 10 s): approximate")
        notes += meter.damage_notes()
        return RunSummary(
            pathspec=str(ps),
            status=a.state,
            created_at=iso(rec.ts_ms) or "",
            finished_at=iso(a.finished_ms),
            duration_s=_duration(rec.ts_ms, a.finished_ms),
            user=rec.user,
            tags=sorted(rec.tags),
            totals=_totals(steps),
            steps=steps,
            first_failure=brief,
            notes=notes + backend.call_notes(),
            cost=Cost.of(meter),
        )


def _any_failed(d: DecidedSummary) -> bool:
    """A summary whose counts show failures but that did not name the first (an older query service)."""
    return any(s.counts.get("failed") or s.counts.get("crashed") for s in d.steps)


def _decided_summary(backend: Backend, ps: Pathspec, d: DecidedSummary, meter: CostMeter) -> RunSummary:
    """run_summary from a backend that decides states itself (the query service)."""
    retrying: dict[str, int] = {}
    if any(s.counts.get("running") for s in d.steps):  # running after a failed attempt: retrying
        live = backend.meta.decided_tasks(ps, ["running"])
        for t in live.tasks if live is not None else []:
            if any(x.ok is False for x in t.attempts):
                retrying[t.step] = retrying.get(t.step, 0) + 1
    steps = []
    for s in d.steps:
        c = s.counts
        steps.append(StepSummary(
            step=s.step, tasks=s.tasks, completed=c.get("completed", 0), failed=c.get("failed", 0), crashed=c.get("crashed", 0),
            running=c.get("running", 0), unknown=c.get("unknown", 0), retried_ok=c.get("retried_ok", 0), retrying=retrying.get(s.step, 0),
            started_at=iso(s.started_ms), finished_at=iso(s.finished_ms), duration_s=_duration(s.started_ms, s.finished_ms),
            slowest=[TaskTime(task_id=t, duration_s=round(ms / 1000, 3)) for t, ms in s.slowest[:SLOWEST]],
        ))
    rec = d.run
    return RunSummary(
        pathspec=str(ps), status=rec.status or "unknown", created_at=iso(rec.ts_ms) or "", finished_at=iso(rec.finished_ms),
        duration_s=_duration(rec.ts_ms, rec.finished_ms), user=rec.user, tags=sorted(rec.tags), totals=_totals(steps), steps=steps,
        first_failure=first_decided_failure(backend, ps, [s.step for s in d.steps], d.first_failure)
        if d.first_failure is not None or _any_failed(d) else None,
        notes=[f"backend: {backend.kind}, answered by the query service"] + backend.root_notes(), cost=Cost.of(meter),
    )


def _percentile(values: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated (as PostgreSQL's percentile_cont)."""
    pos = q * (len(values) - 1)
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return round(values[low] + (values[high] - values[low]) * (pos - low), 3)


def _decided_stats(d: DecidedStats) -> RunStats:
    return RunStats(flow=d.flow, examined=d.examined, complete=d.complete, counts={s: d.counts.get(s, 0) for s in RUN_STATES},
                    success_rate=d.success_rate, finished_success_rate=d.finished_success_rate, duration_s=d.durations_s,
                    steps={step: {k: int(v) if k in _COUNTED else v for k, v in row.items()} for step, row in d.steps.items()},
                    notes=["answered by the query service"])


_COUNTED = ("runs", "failed")  # per-step figures that are counts: integers on every path


def _flow_stats(backend: Backend, flow: str, query: RunQuery, last: int | None, budget: int, per_step: bool,
                step_runs: int) -> RunStats:
    limit = last if last is not None else budget
    scan = backend.meta.scan_runs(flow, query, limit=limit, after=None, budget=budget, decide=lambda rec: settle_run(backend, rec))
    runs = scan.runs
    finish(backend, [r for r in runs if r.status == "completed"])
    counts: dict[RunState, int] = {s: 0 for s in RUN_STATES}
    for r in runs:
        counts[r.status or "unknown"] += 1
    finished = counts["completed"] + counts["failed"] + counts["crashed"]
    durations = sorted(d for r in runs if r.status == "completed" and (d := _duration(r.ts_ms, r.finished_ms)) is not None)
    stats = RunStats(
        flow=flow,
        examined=len(runs),
        complete=scan.complete and (last is not None or not scan.more),
        counts=counts,
        success_rate=round(counts["completed"] / len(runs), 4) if runs else None,
        finished_success_rate=round(counts["completed"] / finished, 4) if finished else None,
        notes=list(scan.notes),
    )
    if durations:
        stats.duration_s = {"n": len(durations), "min": durations[0], "median": round(statistics.median(durations), 3),
                            "p90": _percentile(durations, 0.9), "max": durations[-1]}
    if last is None and scan.more:
        stats.notes.append(f"stopped after {len(runs)} runs (budget): narrow since/until or pass last")
    undated = counts["completed"] - len(durations)
    if undated:
        stats.notes.append(f"{undated} successful runs too short to date from heartbeats on this service: durations of the other {len(durations)}")
    if per_step:
        stats.steps = _step_stats(backend, runs[:step_runs])
        if len(runs) > step_runs:
            stats.notes.append(f"per-step figures from the newest {step_runs} runs")
    return stats


def _step_stats(backend: Backend, runs: list[RunRecord]) -> dict[str, dict[str, float]]:
    per: dict[str, dict[str, list[float]]] = {}
    for rec in runs:
        a: Assessment | None = None
        with skip_damaged(str(rec.pathspec)):
            a = assess(backend, rec, times=True)
        if a is None:
            continue
        for so in a.outcomes:
            s = _step_summary(a, so)
            row = per.setdefault(so.step, {"runs": [], "failed": [], "durations": []})
            row["runs"].append(1)
            row["failed"].append(s.failed + s.crashed)
            if s.duration_s is not None:
                row["durations"].append(s.duration_s)
    out: dict[str, dict[str, float]] = {}
    for step, row in per.items():
        out[step] = {"runs": len(row["runs"]), "failed": sum(row["failed"])}
        if row["durations"]:
            out[step]["median_s"] = round(statistics.median(row["durations"]), 3)
            out[step]["max_s"] = max(row["durations"])
    return out


def run_stats(
    flows: str | list[str],
    *,
    last: int | None = None,
    since: str | None = None,
    until: str | None = None,
    per_step: bool = False,
    namespace: str | None = DEFAULT_NAMESPACE,
) -> RunStatsList:
    """Runs counted by state, success rates and durations, per flow.

    Over the last N runs or a time window, else all runs within a budget;
    `examined` and `complete` say what was counted.

    Args:
        flows: A flow name, or a list of up to 20.
        last: Count the newest N runs.
        since: Runs created at or after: ISO-8601 or relative ('24h', '7d').
        until: Runs created before: ISO-8601 or relative.
        per_step: Add each step's failures and durations (newest 20 runs).
        namespace: e.g. 'user:alice'; 'default' is yours (user:<you>); null: all users.
    """
    with call() as meter:
        names = [flows] if isinstance(flows, str) else flows
        if not isinstance(names, list) or not names:
            raise BadInput("flows must be a flow name or a list of them", hint="e.g. flows='TrainFlow' or flows=['TrainFlow', 'ScoreFlow']")
        if len(names) > 20:
            raise BadInput(f"{len(names)} flows asked for at once", hint="ask for at most 20 flows per call")
        parsed = [Pathspec.parse(f, "flow").flow for f in names]
        budget = _config.default("stats_runs")
        if last is not None:
            last = check_limit("last", last, low=1, high=_config.cap("stats_runs"))
        ns = resolve_namespace(namespace)
        query = RunQuery(since_ms=parse_time(since, "since"), until_ms=parse_time(until, "until"), tags_all=(ns,) if ns else ())
        window = f"last {last} runs" if last is not None else (f"since {since}" if since else "all runs") + (f" until {until}" if until else "")
        backend = get_backend()
        decided = backend.meta.decided_stats(parsed, query, last, per_step)
        if decided is not None:
            out = [_decided_stats(d) for d in decided]
        else:
            out = []
            for f in parsed:
                skipped = meter.skipped_count
                stats = _flow_stats(backend, f, query, last, budget, per_step, _config.default("stats_step_runs"))
                if meter.skipped_count > skipped:  # damaged runs were left out of this flow's counts
                    stats.complete = False
                    stats.notes.append(f"{meter.skipped_count - skipped} damaged item(s) left out (see the answer's notes)")
                out.append(stats)
        notes = [f"backend: {backend.kind}"] + ([f"namespace {ns!r} (namespace=None, CLI --no-namespace, for all users)"] if ns else [])
        notes += backend.meta.call_notes() + meter.damage_notes()
        return RunStatsList(flows=out, window=window, notes=notes, cost=Cost.of(meter))
