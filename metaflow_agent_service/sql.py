"""The state rule as SQL over the metadata service's tables, built from `metaflow_agent._states`.

Nothing here restates the rule: task and run states are `sql_case(TASK_RULES | RUN_RULES, facts)`
and liveness is `sql_heartbeat_liveness`; this module only says how each fact is read from the
rows (units: `last_heartbeat_ts` epoch seconds, `ts_epoch` epoch milliseconds).

Facts, per task (its latest attempt = the highest `attempt_id:N` tag among its attempt marks):
- latest_ok: the latest attempt's `attempt_ok` (NULL when that attempt recorded none);
- alive: liveness of `tasks_v3.last_heartbeat_ts`; run_alive: liveness of the run's heartbeat;
- exit_recorded: not in the database (NULL).
Per run: end_ok = latest_ok of the `end` step; any_failed = some task whose rule state is failed;
alive = liveness of `runs_v3.last_heartbeat_ts`.
"""

from __future__ import annotations

import itertools
from typing import Callable

from metaflow_agent._states import (
    FINISHED,
    RUN_RULES,
    TASK_RULES,
    decide,
    sql_case,
    sql_heartbeat_liveness,
)

MARK_FIELDS = ("attempt", "attempt_ok", "attempt-done")  # the outcome evidence of an attempt
OUTCOME_FIELDS = ("attempt_ok", "attempt-done")  # written when an attempt ends
END_STEP = "end"
HIDDEN_STEP = r"\_%"  # LIKE pattern of pseudo-steps (`_parameters`): not tasks anyone ran
FINISHED_STATES = tuple(sorted(FINISHED))


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


MARKS_IN = _in(MARK_FIELDS)
OUTCOMES_IN = _in(OUTCOME_FIELDS)


def attempt_no(alias: str) -> str:
    """The attempt number of a metadata row, from its `attempt_id:N` tag (0 when untagged)."""
    return f"COALESCE(substring({alias}.tags::text FROM 'attempt_id:([0-9]+)')::int, 0)"


def ok_value(alias: str) -> str:
    """An `attempt_ok` value as a boolean (Metaflow writes 'True' / 'False'); NULL otherwise."""
    return f"(CASE lower({alias}.value) WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END)"


def liveness(now_s: str, heartbeat_s: str) -> str:
    """Heartbeat liveness (TRUE / FALSE / NULL) of a heartbeat column in epoch seconds."""
    return sql_heartbeat_liveness(f"{now_s} - {heartbeat_s}")


def attempts_sql(where: str) -> str:
    """One row per (task_id, att) of the metadata rows matching `where` (alias m):
    started_ms (its `attempt` row), ok (its latest `attempt_ok`), finished_ms (its last outcome row)."""
    return f"""
      SELECT m.task_id, {attempt_no('m')} AS att,
             min(m.ts_epoch) FILTER (WHERE m.field_name = 'attempt') AS started_ms,
             (array_agg({ok_value('m')} ORDER BY m.ts_epoch DESC, m.id DESC) FILTER (WHERE m.field_name = 'attempt_ok'))[1] AS ok,
             max(m.ts_epoch) FILTER (WHERE m.field_name IN {OUTCOMES_IN}) AS finished_ms
      FROM metadata_v3 m
      WHERE m.field_name IN {MARKS_IN} AND {where}
      GROUP BY m.task_id, 2"""


# Over rows of `attempts_sql` grouped by task: the latest attempt's outcome and the history.
LATEST_OK_AGG = "(array_agg(a.ok ORDER BY a.att DESC))[1]"
EARLIER_FAILED_AGG = "COALESCE(TRUE = ANY((array_agg(a.ok IS NOT TRUE ORDER BY a.att DESC))[2:]), FALSE)"


def task_state(*, latest_ok: str, run_alive: str, alive: str) -> str:
    """The task rule as a SQL CASE (exit_recorded is not in the database: NULL)."""
    return sql_case(TASK_RULES, {"latest_ok": latest_ok, "run_alive": run_alive, "alive": alive})


def run_state(*, end_ok: str, any_failed: str, alive: str) -> str:
    """The run rule as a SQL CASE."""
    return sql_case(RUN_RULES, {"end_ok": end_ok, "any_failed": any_failed, "alive": alive})


def latest_ok_domain(state: str) -> frozenset[bool | None]:
    """The values of `latest_ok` under which the task rule can give `state` (any other fact)."""
    names = sorted({n for _, conds in TASK_RULES for n, _ in conds} - {"latest_ok"})
    out: set[bool | None] = set()
    for latest in (True, False, None):
        for combo in itertools.product((True, False, None), repeat=len(names)):
            if decide(TASK_RULES, {"latest_ok": latest, **dict(zip(names, combo))}) == state:
                out.add(latest)
                break
    return frozenset(out)


# A task can be failed only when its latest attempt recorded attempt_ok False (derived from the
# rule table, not assumed): then its run has an attempt_ok 'False' row for it, which narrows the
# search for failed tasks from every task of a run to a handful.
FAILED_NEEDS_A_FALSE_OK = latest_ok_domain("failed") <= {False}


def false_ok_tasks(flow: str, run: str) -> str:
    """Task ids of a run with an `attempt_ok` False row (`flow`, `run`: SQL expressions)."""
    return (f"SELECT f.task_id FROM metadata_v3 f WHERE f.flow_id = {flow} AND f.run_number = {run} "
            f"AND f.field_name = 'attempt_ok' AND lower(f.value) = 'false'")


def run_facts(r: str, now_s: str) -> dict[str, str]:
    """Correlated SQL for the run facts of the `runs_v3` row aliased `r`."""
    run_alive = liveness(now_s, f"{r}.last_heartbeat_ts")
    end_ok = f"""(SELECT {LATEST_OK_AGG} FROM ({attempts_sql(
        f"m.flow_id = {r}.flow_id AND m.run_number = {r}.run_number AND m.step_name = '{END_STEP}'")}) a)"""
    narrow = f" AND m.task_id IN ({false_ok_tasks(f'{r}.flow_id', f'{r}.run_number')})" if FAILED_NEEDS_A_FALSE_OK else ""
    per_task = attempts_sql(f"m.flow_id = {r}.flow_id AND m.run_number = {r}.run_number AND m.step_name NOT LIKE '{HIDDEN_STEP}'{narrow}")
    state = task_state(latest_ok="p.latest_ok", run_alive=run_alive, alive=liveness(now_s, "t.last_heartbeat_ts"))
    any_failed = f"""EXISTS (SELECT 1 FROM (SELECT a.task_id, {LATEST_OK_AGG} AS latest_ok FROM ({per_task}) a GROUP BY a.task_id) p
        JOIN tasks_v3 t ON t.task_id = p.task_id WHERE {state} = 'failed')"""
    return {"end_ok": end_ok, "any_failed": any_failed, "alive": run_alive}


def run_state_of(r: str, now_s: str) -> str:
    """The state of the `runs_v3` row aliased `r`: the facts are evaluated lazily, so a run whose
    end step succeeded costs one index probe, and only unfinished ones look at their tasks."""
    return run_state(**run_facts(r, now_s))


def finished_ms_of(r: str) -> str:
    """When the run (alias `r`, with flow_id and run_number) last recorded an outcome (ms)."""
    return (f"(SELECT max(m.ts_epoch) FROM metadata_v3 m WHERE m.flow_id = {r}.flow_id "
            f"AND m.run_number = {r}.run_number AND m.field_name IN {OUTCOMES_IN})")


def verified_user(r: str) -> str:
    """The run's verified owner, written as the service's index expression so it can be used."""
    return f"(CASE WHEN {r}.system_tags ? ('user:' || {r}.user_name) THEN {r}.user_name ELSE NULL END)"


class Params:
    """Collects bind values and hands out `$n` placeholders (asyncpg numbering)."""

    def __init__(self) -> None:
        self.values: list[object] = []
        self._seen: dict[int, str] = {}

    def __call__(self, value: object, cast: str | None = None) -> str:
        self.values.append(value)
        return f"${len(self.values)}" + (f"::{cast}" if cast else "")


def now_sql(params: Params, override_s: int | None) -> str:
    """The query's clock in epoch seconds: the override (tests only) or the database's now()."""
    return f"COALESCE({params(override_s, 'bigint')}, EXTRACT(EPOCH FROM now())::bigint)"


Builder = Callable[[Params], str]
