"""Flows: what exists, with each one's latest run."""

from __future__ import annotations

from . import _config
from ._backend import get_backend
from ._cost import call, shown_without, skip_damaged
from ._cursor import cursor_offset, make_cursor, open_cursor, query_key
from ._inputs import DEFAULT_NAMESPACE, check_limit, iso, resolve_namespace
from ._models import Cost, FlowInfo, FlowList
from ._outcomes import settle_run
from ._records import RunQuery, RunRecord


def list_flows(*, namespace: str | None = DEFAULT_NAMESPACE, limit: int = 50, cursor: str | None = None) -> FlowList:
    """Every flow with its latest run: id, state, start, step count.

    Most recently run first. Cost: one look per flow for its latest run,
    plus the state of each run shown.

    Args:
        namespace: Whose latest run: 'default' is yours (user:<you>); null: anyone's.
        limit: Most flows to return.
        cursor: next_cursor of the previous page.
    """
    with call() as meter:
        limit = check_limit("limit", limit, low=1, high=_config.cap("flows"))
        ns = resolve_namespace(namespace)
        key = query_key(namespace)
        start = cursor_offset(open_cursor(cursor, "list_flows", key), "list_flows")
        backend = get_backend()
        budget = _config.default("flow_budget")
        query = RunQuery(tags_all=(ns,) if ns else ())
        decided = backend.meta.decided_flows(query)
        latest: dict[str, RunRecord | None] = {}
        step_counts: dict[str, int] = {}
        if decided is not None:  # the query service: every flow with its latest run, states decided
            names = sorted(d.flow for d in decided)
            latest = {d.flow: d.latest for d in decided}
            step_counts = {d.flow: d.steps for d in decided if d.steps is not None}
        else:
            names = backend.meta.list_flows()
            for name in names[:budget]:
                latest[name] = None
                with skip_damaged(name):
                    scan = backend.meta.scan_runs(name, query, limit=1, after=None, budget=1)
                    latest[name] = scan.runs[0] if scan.runs else None
        def recency(name: str) -> tuple[int, str]:
            rec = latest[name]
            return (rec.ts_ms if rec is not None else -1, name)

        ordered = sorted(names[:budget], key=recency, reverse=True)
        ordered += names[budget:]  # past the budget: by name, latest run not looked up
        page = ordered[start : start + limit]
        rows = []
        for name in page:
            rec = latest.get(name)
            if rec is None:
                rows.append(FlowInfo(flow=name))
                continue
            steps: int | None = None
            with shown_without(str(rec.pathspec)):
                if rec.status is None:
                    settle_run(backend, rec)
                steps = step_counts[name] if name in step_counts else len(backend.meta.list_steps(rec.pathspec))
            rows.append(FlowInfo(flow=name, latest_run=str(rec.pathspec), status=rec.status, created_at=iso(rec.ts_ms), steps=steps))
        more = start + limit < len(ordered)
        notes = [f"backend: {backend.kind}; {len(names)} flows"]
        if ns:
            notes.append(f"latest runs in namespace {ns!r} (namespace=None, CLI --no-namespace, for anyone's)")
        if len(names) > budget:
            notes.append(f"latest runs looked up for the first {budget} flows only; the rest follow by name")
        notes += meter.damage_notes()
        result = FlowList(flows=rows, truncated=more, next_cursor=make_cursor("list_flows", key, i=start + limit) if more else None,
                          complete=len(names) <= budget and not meter.skipped_count, scanned=min(len(names), budget), notes=notes,
                          cost=Cost.of(meter))
        return result.resumable(lambda kept: make_cursor("list_flows", key, i=start + kept))
