"""Every public function of metaflow_agent, and the calls the audit traces for it.

Each `Case` is one call as an agent would write it, traced along one dimension of the data set
(audit/world.py) on every service generation, with and without the query service. `answer`
reduces the result to what must not depend on the generation or on the query service (states,
counts, names; not durations, notes or cost): the audit checks those agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import metaflow_agent as ma


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc).isoformat()


@dataclass(frozen=True)
class Case:
    function: str  # its name in metaflow_agent.FUNCTIONS
    call: str  # the call as shown in the README
    dimension: str  # what grows (audit.world.SIZES)
    run: Callable[[dict[str, Any]], Any]  # the size's arguments -> the function's result
    answer: Callable[[Any], Any] | None  # what must agree across generations and with/without the query service
    env: dict[str, str | None] = field(default_factory=dict)  # settings for this call only (None: unset)
    cold: bool = False  # measured in a fresh process state: the one-time probes are part of it
    query_service: bool = True  # also traced with the query service

    @property
    def key(self) -> str:
        return f"{self.call} by {self.dimension}"


def _runs(r: ma.RunList) -> Any:
    return [(x.run_id, x.status) for x in r.runs], r.truncated


def _summary(r: ma.RunSummary) -> Any:
    steps = [(s.step, s.tasks, s.completed, s.failed, s.crashed, s.running, s.unknown, s.retried_ok) for s in r.steps]
    return r.status, r.totals.model_dump(), steps, r.first_failure.pathspec if r.first_failure else None


def _stats(r: ma.RunStatsList) -> Any:
    return [(f.flow, f.examined, f.counts, f.success_rate, f.finished_success_rate,
             {k: (int(v["runs"]), int(v["failed"])) for k, v in (f.steps or {}).items()}) for f in r.flows]  # ints or floats, by path


def _failed(r: ma.FailedTaskList) -> Any:
    return ([(t.pathspec, t.status, t.attempts, t.failed_attempts, t.exception_type, t.message) for t in r.failed],
            r.total_failed, r.total_crashed, r.total_retried_ok)


def _tasks(r: ma.TaskList) -> Any:
    return [(t.pathspec, t.state, t.retried) for t in r.tasks], r.counts


def _diagnosis(r: ma.Diagnosis) -> Any:
    return r.status, [(f.pathspec, f.status, f.exception, f.log) for f in r.failures], r.total_failures, r.parameters


def _flows(r: ma.FlowList) -> Any:
    return [(f.flow, f.latest_run, f.status, f.steps) for f in r.flows]


def _compare(r: ma.RunComparison) -> Any:
    return r.status_a, r.status_b, [(d.name, d.change, d.value_a, d.value_b) for d in r.parameters + r.artifacts], r.equal


NS: dict[str, Any] = {"namespace": None}  # the audit's runs are anyone's

CASES: list[Case] = [
    Case("list_flows", "list_flows(namespace=None)", "flows", lambda a: ma.list_flows(**NS), _flows),
    *[Case("list_runs", "list_runs(flow, namespace=None)", d, lambda a: ma.list_runs(a["flow"], **NS), _runs) for d in ("runs", "run_seconds")],
    Case("list_runs", "list_runs(flow, status='failed', limit=10)", "runs",
         lambda a: ma.list_runs(a["flow"], status="failed", limit=10, **NS), _runs),
    Case("list_runs", "list_runs(flow, since=…, until=…, limit=100)", "runs",
         lambda a: ma.list_runs(a["flow"], since=_iso(a["since_ms"]), until=_iso(a["until_ms"]), limit=100, **NS), _runs),
    *[Case("run_stats", "run_stats(flow)", d, lambda a: ma.run_stats(a["flow"], **NS), _stats) for d in ("runs", "run_seconds")],
    Case("run_stats", "run_stats(flow, last=10, per_step=True)", "runs", lambda a: ma.run_stats(a["flow"], last=10, per_step=True, **NS), _stats),
    *[Case("run_summary", "run_summary(run)", d, lambda a: ma.run_summary(a["run"]), _summary) for d in ("tasks", "steps", "attempts")],
    *[Case("diagnose_run", "diagnose_run(run)", d, lambda a: ma.diagnose_run(a["run"]), _diagnosis) for d in ("tasks", "steps", "attempts")],
    *[Case("failed_tasks", "failed_tasks(run)", d, lambda a: ma.failed_tasks(a["run"]), _failed) for d in ("tasks", "steps", "attempts")],
    *[Case("list_tasks", "list_tasks(run)", d, lambda a: ma.list_tasks(a["run"]), _tasks) for d in ("tasks", "steps", "attempts")],
    Case("task_logs", "task_logs(task, tail=50)", "log_lines", lambda a: ma.task_logs(a["task"], tail=50),
         lambda r: (r.log_size, r.line_count, [x.text for x in r.lines])),
    Case("list_artifacts", "list_artifacts(task)", "artifact_bytes", lambda a: ma.list_artifacts(a["task"]),
         lambda r: [(x.name, x.size, x.type) for x in r.artifacts]),
    Case("artifact_preview", "artifact_preview(task, 'config')", "artifact_bytes", lambda a: ma.artifact_preview(a["task"], a["name"]),
         lambda r: (r.type, r.size, r.repr)),
    Case("artifact_values", "artifact_values(flow, 'score')", "runs", lambda a: ma.artifact_values(a["flow"], a["value"], **NS),
         lambda r: [(v.run, v.status, v.task, v.value) for v in r.values]),
    Case("search_artifacts", "search_artifacts(flow, name='model', runs=10)", "runs",
         lambda a: ma.search_artifacts(a["flow"], name=a["name"], runs=10, **NS), lambda r: ([(h.task, h.size) for h in r.hits], r.runs_searched)),
    Case("search_artifacts", "search_artifacts(flow, name='value', runs=10)", "tasks",
         lambda a: ma.search_artifacts(a["flow"], name=a["name"], runs=10, **NS), lambda r: ([(h.task, h.size) for h in r.hits], r.runs_searched)),
    Case("compare_runs", "compare_runs(run_a, run_b)", "runs", lambda a: ma.compare_runs(a["run_a"], a["run_b"]), _compare),
    Case("compare_runs", "compare_runs(run_a, run_b)", "tasks", lambda a: ma.compare_runs(a["run"], a["run_b"]), _compare),
    Case("capabilities", "capabilities()", "once", lambda a: ma.capabilities(), None, cold=True),
    Case("capabilities", "capabilities(), query service not configured", "once", lambda a: ma.capabilities(), None,
         env={"METAFLOW_AGENT_QUERY_SERVICE_URL": None}, cold=True, query_service=False),
]


def covered() -> set[str]:
    return {c.function for c in CASES}
