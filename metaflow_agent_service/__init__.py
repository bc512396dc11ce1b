"""Read-only query service over the Metaflow metadata service's PostgreSQL database.

It runs beside the metadata service on the same database (as Metaflow's UI backend does) and
answers the questions the service's REST routes cannot: states on every run and task, failed
tasks of any run in one request, per-step counts, statistics over many runs, artifact search by
name. States are `metaflow_agent._states`, rendered as SQL (`.sql`).

Routes (GET, JSON, under `/agent/v1`; lists take `_limit` and `_cursor` and answer with
`X-Limit` / `X-Next-Cursor` headers and a `page` object; times are epoch ms, heartbeats epoch s):

    /health                                   {status, database, version}            (no token needed)
    /capabilities                             {service, version, api, read_only, auth, endpoints[],
                                               limits{}, states{run, task}, indexes{name: {present,
                                               origin, migration}}, database{server_version, goose_version}}
    /flows                                    {as_of_s, data: [{flow_id, created_ms, latest_run: Run|null}], page}
    /flows/{flow}/runs                        ?state=a,b &since &until (ms or ISO-8601) &tags_any &tags_all &user
                                              {flow_id, as_of_s, data: [Run], page}         newest first
    /flows/{flow}/runs/{run}                  {as_of_s, data: Run}
    /flows/{flow}/runs/{run}/tasks            ?state=failed,crashed,running,completed,unknown,retried_ok &step=a,b
                                              {run: Run, as_of_s, data: [Task], page}       task-id order
    /flows/{flow}/runs/{run}/summary          ?slowest=0..20
                                              {run: Run, as_of_s, steps: [{step, created_ms, tasks, counts,
                                               started_ms, finished_ms, duration_ms, slowest: [{task_id, state,
                                               duration_ms}]}], totals: {tasks, counts}, steps_truncated}
    /stats/runs                               ?flows=A,B (required) &since &until | &last=N &per_step=true
                                              {as_of_s, window, max_runs_per_flow, runs_examined,
                                               flows: [Stats + flow_id, truncated], total: Stats,
                                               steps?: [{flow_id, step, runs, runs_with_failed_task, tasks, duration_ms}]}
    /flows/{flow}/artifacts                   ?name=<glob: * ? [abc] [!abc]> | name_prefix= &include_private=false
                                              &attempts=latest|all &runs=N (newest N runs: the window, default 50)
                                              &since &until &tags_any &tags_all &user
                                              {flow_id, data: [Artifact], page, runs_searched: [run_number],
                                               tasks_without_artifacts, window, pattern}
                                              walk order: run newest first, step (created), task id, attempt, name

    Run      {flow_id, run_number, run_id, pathspec, state, created_ms, finished_ms, duration_ms, user,
              tags, system_tags, heartbeat_s}
    Task     {pathspec, step, task_id, state, retried_ok, attempt_count, attempts: [{attempt, ok,
              started_ms, finished_ms}], created_ms, started_ms, finished_ms, duration_ms, heartbeat_s}
    Stats    {runs_examined, counts{running, completed, failed, crashed, unknown}, success_rate,
              success_rate_finished, duration_ms{min, p50, p90, max, of} (completed runs), first_created_ms,
              last_created_ms}
    Artifact {pathspec, name, run_number, step, task_id, attempt, sha, type, content_type, location,
              ds_type, created_ms, tasks_before, empty_tasks_before}
    page     {limit, next_cursor, truncated, scanned, budget_hit}

An artifact page covers the tasks from the previous page's last hit (or the window's first task)
through the next page's first hit (or the window's end): `page.scanned` counts them,
`tasks_without_artifacts` those with no artifact rows (running, or killed before saving),
`runs_searched` their runs; each hit says how many of them come before its task. That is exactly
what the library's own walk over a flow's runs examines, so a client can match it page for page.

Bounds: every list has a default and a hard cap (`/capabilities` lists them); a state filter
examines at most `--scan-budget` runs per request, then answers with a cursor that resumes the
scan (`budget_hit`); an artifact search covers at most `runs` (<= 500) runs. Errors are JSON:
`{error, message, hint, param?}` with 400 (bad parameter, named), 401, 404, 503, 504 (statement
timeout). Every session is read-only and time-limited (`.db`). See README.md beside this file.
"""

from __future__ import annotations

__version__ = "0.1.0"
