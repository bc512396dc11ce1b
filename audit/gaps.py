"""The service's gaps, the query-service endpoint that closes each, and where the audit measures the saving."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Gap:
    title: str
    endpoint: str  # the query-service route that closes it ("" when none does)
    measured: list[tuple[str, str]] = field(default_factory=list)  # (call, dimension) of the function traces
    note: str = ""


GAPS: list[Gap] = [
    Gap("A task status filter (failed / crashed / running / retried_ok per run)",
        "`GET /agent/v1/flows/{f}/runs/{r}/tasks?state=…`",
        [("failed_tasks(run)", "steps"), ("failed_tasks(run)", "tasks"), ("list_tasks(run)", "steps")],
        "replaces 3 `filtered_tasks` per step"),
    Gap("Failed attempts of every task (outcome and times per attempt)",
        "the same route: each row carries its attempts",
        [("failed_tasks(run)", "attempts")],
        "replaces the metadata look per retried-then-ok task and the datastore listings per failed task"),
    Gap("Per-step outcome counts and timings",
        "`GET /agent/v1/flows/{f}/runs/{r}/summary`",
        [("run_summary(run)", "steps"), ("run_summary(run)", "tasks")],
        "it also names the first failure (its exception is then read from the datastore)"),
    Gap("Artifact search by name across runs",
        "`GET /agent/v1/flows/{f}/artifacts?name=…`",
        [("search_artifacts(flow, name='model', runs=10)", "runs"), ("search_artifacts(flow, name='value', runs=10)", "tasks")],
        "data.json is then read only for tasks with a name hit; size and type filters still read it for each (gap 5)"),
    Gap("Size and Python type in artifact rows", "",
        [],
        "not closable by a read-only service over the same tables: size and type are only in the datastore's `data.json`"),
    Gap("Run state on every run row (and on released versions)",
        "`GET /agent/v1/flows/{f}/runs`: state, finish and duration on every row, from a 2.5.1 or master database",
        [("list_runs(flow, status='failed', limit=10)", "runs"), ("list_runs(flow, namespace=None)", "runs"),
         ("list_runs(flow, namespace=None)", "run_seconds")],
        "replaces the end-step checks (2.5.1), the failure looks and the finish dating (master)"),
    Gap("Filters and cursors on released services",
        "the same route: `state`, `since`, `until`, `tags_any`, `tags_all`, `user`, `_limit`, `_cursor` on any database",
        [("list_runs(flow, since=…, until=…, limit=100)", "runs")],
        "2.5.1 answers the whole flow's runs to any question; 2.6.1 filters like master"),
    Gap("Run statistics over many runs (counts by state, success rates, duration percentiles)",
        "`GET /agent/v1/stats/runs?flows=…`",
        [("run_stats(flow)", "runs"), ("run_stats(flow)", "run_seconds"), ("run_stats(flow, last=10, per_step=True)", "runs")], ""),
    Gap("Flows with their latest run", "`GET /agent/v1/flows`",
        [("list_flows(namespace=None)", "flows")],
        "each flow's latest run among those the namespace selects, with its step count"),
    Gap("A capability signal",
        "`GET /agent/v1/capabilities` (the query service's own routes, limits, indexes)",
        [("capabilities()", "once")],
        "not closed for the metadata service: master and 2.6.1 are still told from 2.5.1 by a probe (`GET /flows?_limit=1`); "
        "finding the query service is one request more"),
    Gap("`filtered_tasks` pagination",
        "`…/tasks?state=…&_limit=…&_cursor=…` (at most 1,000 rows a page)",
        [("list_tasks(run)", "tasks")], "bounded pages instead of one body per step"),
    Gap("Bugs seen: `_limit=notanumber` is a 500 with a traceback on master", "", [],
        "not a query-service matter: clients validate limits"),
]


def endpoint_calls() -> list[tuple[str, str, Callable[[Any, dict[str, Any]], Any]]]:
    """(call shown, dimension, call(qs_url, args)): endpoints the library does not use, called directly (none now)."""
    return []
