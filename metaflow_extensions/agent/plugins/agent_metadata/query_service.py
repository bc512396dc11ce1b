"""The query service beside the metadata service: found, probed once, used for whole answers.

Where it is (in order): `METAFLOW_AGENT_QUERY_SERVICE_URL`, else `<METAFLOW_SERVICE_URL>/agent/v1`
(a reverse proxy in front of both services). One `/capabilities` request per process says
whether it is there; absent, or refusing us, the engine keeps its own plans and says why.
Its answers become the library's records (`metaflow_agent._records`), states by the same rule.
"""

from __future__ import annotations

from typing import Any, Mapping

from metaflow_agent import _config
from metaflow_agent._errors import AgentError
from metaflow_agent._pathspec import Pathspec
from metaflow_agent._records import (
    AttemptInfo,
    DecidedFlow,
    DecidedStats,
    DecidedStep,
    DecidedSummary,
    DecidedTask,
    DecidedTasks,
    NameHit,
    NameHitPage,
    RunQuery,
    RunRecord,
    RunScan,
)

from . import query_client as C
from .transport import ServiceTransport

TASK_PAGE = 1000  # tasks per request (the service's cap)
TASK_PAGES = 10  # requests per question: up to 10,000 tasks in the states asked for


class QueryService:
    """One query service, bound to its API root."""

    def __init__(self, transport: ServiceTransport, caps: C.ServiceCapabilities) -> None:
        self.t = transport
        self.caps = caps
        self.url = transport.url

    def get(self, path: str, params: Mapping[str, Any]) -> tuple[int, Mapping[str, str], Any]:
        reply = self.t.get(path, dict(params), raw=True)
        return reply.status, reply.headers, reply.body

    # --- runs ----------------------------------------------------------------------------
    def runs(self, flow: str, query: RunQuery, *, limit: int, cursor: str | None) -> RunScan:
        page = C.list_runs(self.get, flow, states=[query.status] if query.status else None, since_ms=query.since_ms,
                           until_ms=query.until_ms, tags_any=list(query.tags_any) or None, tags_all=list(query.tags_all) or None,
                           users=[query.user] if query.user else None, limit=limit, cursor=cursor)
        runs = [_run(r) for r in page.runs]
        scan = RunScan(runs=runs, more=page.page.truncated, complete=not page.page.budget_hit,
                       scanned=page.page.scanned or len(runs), notes=[f"query service at {self.url}: one request"])
        scan.server_cursor = page.page.next_cursor
        if page.page.budget_hit:
            scan.notes.append("the query service's scan budget stopped this page: continue with next_cursor")
        return scan

    def flows(self, query: RunQuery, budget: int) -> list[DecidedFlow]:
        out: list[DecidedFlow] = []
        cursor = None
        while len(out) < budget:
            page = C.list_flows(self.get, tags_any=query.tags_any or None, tags_all=query.tags_all or None,
                                limit=min(500, budget - len(out)), cursor=cursor)
            out += [DecidedFlow(f.flow_id, _run(f.latest_run) if f.latest_run else None, f.latest_run_steps) for f in page.flows]
            cursor = page.page.next_cursor
            if not cursor:
                break
        return out

    # --- one run ---------------------------------------------------------------------------
    def tasks(self, run: Pathspec, states: list[str], step: str | None) -> DecidedTasks:
        cursor, rows, head = None, [], None
        for _ in range(TASK_PAGES):
            page = C.list_tasks(self.get, run.flow, run.run, states=states, steps=[step] if step else None, limit=TASK_PAGE, cursor=cursor)
            head = page.run
            rows += [_task(t) for t in page.tasks]
            cursor = page.page.next_cursor
            if not cursor:
                return DecidedTasks(_run(head), rows, complete=True)
        assert head is not None
        return DecidedTasks(_run(head), rows, complete=False)

    def summary(self, run: Pathspec) -> DecidedSummary:
        s = C.run_summary(self.get, run.flow, run.run, slowest=3)
        steps = [DecidedStep(x.step, dict(x.counts), x.tasks, x.started_ms, x.finished_ms, [(str(t.task_id), t.duration_ms) for t in x.slowest])
                 for x in s.steps if x.step != "_parameters"]
        return DecidedSummary(_run(s.run), steps, None if s.first_failure is None else _task(s.first_failure), s.ds_type, s.location)

    def stats(self, flows: list[str], query: RunQuery, last: int | None, per_step: bool, budget: int) -> list[DecidedStats]:
        got = C.run_stats(self.get, flows, since_ms=query.since_ms, until_ms=query.until_ms,
                          last=last if last is not None or query.since_ms or query.until_ms else budget, per_step=per_step,
                          tags_any=list(query.tags_any) or None, tags_all=list(query.tags_all) or None)
        by_flow = {g.flow_id: g for g in got.flows}
        steps: dict[str, dict[str, dict[str, float]]] = {}
        for st in got.steps or ():
            row: dict[str, float] = {"runs": st.runs, "failed": st.runs_with_failed_task}
            if st.duration_ms.p50 is not None:
                row["median_s"] = round(st.duration_ms.p50 / 1000, 3)
            if st.duration_ms.max is not None:
                row["max_s"] = round(st.duration_ms.max / 1000, 3)
            steps.setdefault(st.flow_id, {})[st.step] = row
        out = []
        for flow in flows:
            g = by_flow[flow]
            d = g.duration_ms
            durations = {} if not d.of else {"n": d.of, "min": _s(d.min), "median": _s(d.p50), "p90": _s(d.p90), "max": _s(d.max)}
            out.append(DecidedStats(flow, g.runs_examined, dict(g.counts), _rate(g.success_rate), _rate(g.success_rate_finished),
                                    durations, complete=not g.truncated, steps=steps.get(flow, {})))
        return out


    # --- artifacts by name ---------------------------------------------------------------------
    def artifact_hits(self, flow: str, glob: str, *, include_private: bool, runs: int, query: RunQuery, limit: int,
                      cursor: str | None) -> NameHitPage:
        """A page of name hits (latest attempts) in the newest `runs` runs: one request."""
        page = C.search_artifacts(self.get, flow, name=glob, include_private=include_private, attempts="latest", runs=runs,
                                  since_ms=query.since_ms, until_ms=query.until_ms, tags_any=list(query.tags_any) or None,
                                  tags_all=list(query.tags_all) or None, users=[query.user] if query.user else None,
                                  limit=limit, cursor=cursor)
        hits = [NameHit(str(h.run_number), h.step, str(h.task_id), h.attempt, h.name, h.sha, h.tasks_before, h.empty_tasks_before,
                        h.ds_type, h.location) for h in page.hits]
        return NameHitPage(hits, [str(r) for r in page.runs_searched], page.page.scanned or 0, page.tasks_without_artifacts,
                           page.page.next_cursor, f"query service at {self.url}")


def _s(ms: float | None) -> float:
    return round((ms or 0) / 1000, 3)


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _run(r: C.RunRow) -> RunRecord:
    rec = RunRecord(r.flow_id, str(r.run_number), r.created_ms, r.user, list(r.tags), list(r.system_tags),
                    float(r.heartbeat_s) if r.heartbeat_s is not None else None)
    rec.status, rec.finished_ms = r.state, r.finished_ms
    return rec


def _task(t: C.TaskRow) -> DecidedTask:
    attempts = [AttemptInfo(a.attempt, a.ok, a.started_ms, a.finished_ms) for a in t.attempts]
    return DecidedTask(t.step, str(t.task_id), t.state, t.retried_ok, attempts, t.started_ms, t.finished_ms)


def discover(metadata_url: str, headers: Mapping[str, str]) -> tuple[QueryService | None, str]:
    """The query service for this metadata service, if one answers: (service, note)."""
    configured = _config.query_service_url()
    if configured.lower() == "off":
        return None, "query service off (METAFLOW_AGENT_QUERY_SERVICE_URL=off)"
    url = configured or (metadata_url.rstrip("/") + C.API_PREFIX if metadata_url else "")
    if not url:
        return None, "no query service configured"
    token = _config.query_service_token()
    auth = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        transport = ServiceTransport(url, headers=auth)
        caps = C.probe(lambda path, params: (lambda r: (r.status, r.headers, r.body))(transport.get(path, dict(params), raw=True)))
    except AgentError as exc:
        return None, f"query service at {url} not used: {exc.message}"
    if caps is None:
        return None, f"no query service at {url}: the metadata service's own routes answer"
    return QueryService(transport, caps), f"query service {caps.version} at {url}"
