"""The state rule as SQL, built from `metaflow_agent._states`.

Nothing here restates the rule: task and run states are `sql_case(TASK_RULES | RUN_RULES, facts)`
and liveness is `sql_heartbeat_liveness`; this module only says how each fact is read from the
rows (units: `last_heartbeat_ts` epoch seconds, `ts_epoch` epoch milliseconds).

Facts, per task. Its attempt marks are its `attempt`, `attempt_ok` and `attempt-done` rows, each
tagged `attempt_id:N`; the latest attempt is the highest N among them.
- latest_ok: the latest attempt's `attempt_ok` (the newest such row; NULL when it has none);
- alive: liveness of `tasks_v3.last_heartbeat_ts`; run_alive: liveness of the run's heartbeat;
- exit_recorded: not in the database (NULL).
Per run: end_ok = latest_ok of the `end` step; any_failed = some task whose rule state is failed;
alive = liveness of `runs_v3.last_heartbeat_ts`.

Times: a task's attempt starts at its `attempt` row and ends at its last outcome row
(`attempt_ok` / `attempt-done`). A run that completed finished when its end step's latest attempt
ended (nothing runs after the end step, so that is also the run's last outcome row); a failed or
crashed run, at its last outcome row.
"""

from __future__ import annotations

import itertools

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
FINISHED_IN = _in(FINISHED_STATES)
# Metaflow writes str(bool); the other spellings are accepted in case another writer differs.
# Listed, not lower()-ed, so the partial index on the False rows (migration 002) can be used.
TRUE_TEXT = "('True', 'true', 'TRUE')"
FALSE_TEXT = "('False', 'false', 'FALSE')"


def attempt_no(m: str) -> str:
    """A metadata row's attempt number, from its `attempt_id:N` tag (else 0).

    The service writes tags as `["attempt_id:N"]`: that shape is read with plain string
    functions (a regular expression on every row costs several times more); any other shape
    falls back to searching the whole tag list."""
    first = f"({m}.tags ->> 0)"
    return (f"COALESCE(CASE WHEN left({first}, 11) = 'attempt_id:' AND length({first}) BETWEEN 12 AND 20 "
            f"AND ltrim(substr({first}, 12), '0123456789') = '' THEN substr({first}, 12)::int "
            f"ELSE substring({m}.tags::text FROM 'attempt_id:([0-9]{{1,9}})')::int END, 0)")


def ok_value(m: str) -> str:
    """An `attempt_ok` value as a boolean; NULL for anything else."""
    return f"(CASE WHEN {m}.value IN {TRUE_TEXT} THEN TRUE WHEN {m}.value IN {FALSE_TEXT} THEN FALSE END)"


def liveness(now_s: str, heartbeat_s: str) -> str:
    """Liveness (TRUE / FALSE / NULL) of a heartbeat in epoch seconds."""
    return sql_heartbeat_liveness(f"{now_s} - {heartbeat_s}")


def first_ok(m: str) -> str:
    """A mark's outcome: an `attempt_ok` row's value, else NULL."""
    return f"(CASE WHEN {m}.field_name = 'attempt_ok' THEN {ok_value(m)} END)"


def ok_code(ok: str) -> str:
    """An outcome as a number: 1 True, 0 False, -1 none."""
    return f"COALESCE(({ok})::int, -1)"


def decode_ok(code: str) -> str:
    """The outcome back from `ok_code`."""
    return f"(CASE {code} WHEN 1 THEN TRUE WHEN 0 THEN FALSE END)"


def latest_key(m: str) -> str:
    """A mark as an array whose max() is the latest outcome.

    Attempt first (highest wins), then `attempt_ok` rows over the attempt's other marks, then
    the newest (ts_epoch, id); the outcome rides last. max() over arrays is a plain aggregate:
    no sort per group, which matters when there are 100,000 groups."""
    return (f"ARRAY[{attempt_no(m)}::bigint, ({m}.field_name = 'attempt_ok')::int, {m}.ts_epoch, {m}.id, "
            f"{ok_code(first_ok(m))}]")


def latest_ok_agg(m: str) -> str:
    """Aggregate over marks `m`: the latest attempt's outcome, else NULL."""
    return decode_ok(f"(max({latest_key(m)}))[5]")


def end_where(m: str, flow: str, run: str) -> str:
    """The attempt marks of a run's end step."""
    return f"{m}.flow_id = {flow} AND {m}.run_number = {run} AND {m}.step_name = '{END_STEP}' AND {m}.field_name IN {MARKS_IN}"


END_OK_AGG = latest_ok_agg("m")
END_DONE_AGG = f"max(m.ts_epoch) FILTER (WHERE m.field_name IN {OUTCOMES_IN})"


def end_facts_of_runs(runs: str) -> str:
    """End facts (end_ok, end_done_ms) of every run in `runs`.

    One pass over their end steps' marks."""
    return f"""
      SELECT m.flow_id, m.run_number, {END_OK_AGG} AS end_ok, {END_DONE_AGG} AS end_done_ms
      FROM {runs} x JOIN metadata_v3 m ON {end_where('m', 'x.flow_id', 'x.run_number')}
      GROUP BY m.flow_id, m.run_number"""


def attempts_sql(where: str) -> str:
    """One row per task attempt among the marks matching `where`.

    Columns: started_ms (its `attempt` row), ok_code (its newest `attempt_ok`, see `ok_code`;
    NULL when it has none), finished_ms (its last outcome row)."""
    return f"""
      SELECT m.step_name, m.task_id, {attempt_no('m')} AS att,
             min(m.ts_epoch) FILTER (WHERE m.field_name = 'attempt') AS started_ms,
             (max(ARRAY[m.ts_epoch, m.id, {ok_code(ok_value('m'))}]) FILTER (WHERE m.field_name = 'attempt_ok'))[3] AS ok_code,
             max(m.ts_epoch) FILTER (WHERE m.field_name IN {OUTCOMES_IN}) AS finished_ms
      FROM metadata_v3 m
      WHERE m.field_name IN {MARKS_IN} AND {where}
      GROUP BY m.step_name, m.task_id, 3"""


# Over rows of `attempts_sql` grouped by task (alias a): the latest attempt (highest att) with its
# outcome and finish (the same answer as `latest_ok_agg` on the marks), and whether an earlier
# attempt did not succeed (attempts that did not succeed, less the latest one if it did not).
LATEST_ATTEMPT_AGG = "max(ARRAY[a.att::bigint, COALESCE(a.ok_code, -1), COALESCE(a.finished_ms, -1)])"
EARLIER_FAILED_AGG = ("(count(*) FILTER (WHERE a.ok_code IS DISTINCT FROM 1) > "
                      f"CASE WHEN ({LATEST_ATTEMPT_AGG})[2] = 1 THEN 0 ELSE 1 END)")


def task_state(*, latest_ok: str, run_alive: str, alive: str) -> str:
    """The task rule as a SQL CASE (exit_recorded: NULL)."""
    return sql_case(TASK_RULES, {"latest_ok": latest_ok, "run_alive": run_alive, "alive": alive})


def run_state(*, end_ok: str, any_failed: str, alive: str) -> str:
    """The run rule as a SQL CASE, evaluated lazily."""
    return sql_case(RUN_RULES, {"end_ok": end_ok, "any_failed": any_failed, "alive": alive})


def latest_ok_domain(state: str) -> frozenset[bool | None]:
    """The `latest_ok` values under which the task rule gives `state`."""
    names = sorted({n for _, conds in TASK_RULES for n, _ in conds} - {"latest_ok"})
    out: set[bool | None] = set()
    for latest in (True, False, None):
        for combo in itertools.product((True, False, None), repeat=len(names)):
            if decide(TASK_RULES, {"latest_ok": latest, **dict(zip(names, combo))}) == state:
                out.add(latest)
                break
    return frozenset(out)


# A task can be failed only when its latest attempt recorded attempt_ok False (derived from the
# rule table, not assumed): then its run has an attempt_ok False row for it, which narrows the
# search for failed tasks from every task of a run to a handful.
FAILED_NEEDS_A_FALSE_OK = latest_ok_domain("failed") <= {False}


def false_ok_tasks(flow: str, run: str) -> str:
    """(step_name, task_id) of a run's tasks with an `attempt_ok` False row."""
    return (f"SELECT f.step_name, f.task_id FROM metadata_v3 f WHERE f.flow_id = {flow} AND f.run_number = {run} "
            f"AND f.field_name = 'attempt_ok' AND f.value IN {FALSE_TEXT}")


def any_failed_of(r: str, now_s: str) -> str:
    """Correlated SQL: has run `r` a task whose state is failed?"""
    narrow = (f" AND (m.step_name, m.task_id) IN ({false_ok_tasks(f'{r}.flow_id', f'{r}.run_number')})"
              if FAILED_NEEDS_A_FALSE_OK else "")
    state = task_state(latest_ok="p.latest_ok", run_alive=liveness(now_s, f"{r}.last_heartbeat_ts"),
                       alive=liveness(now_s, "t.last_heartbeat_ts"))
    return f"""EXISTS (
        SELECT 1 FROM (
          SELECT m.task_id, {latest_ok_agg('m')} AS latest_ok FROM metadata_v3 m
          WHERE m.flow_id = {r}.flow_id AND m.run_number = {r}.run_number AND m.step_name NOT LIKE '{HIDDEN_STEP}'
            AND m.field_name IN {MARKS_IN}{narrow}
          GROUP BY m.task_id) p
        JOIN tasks_v3 t ON t.task_id = p.task_id WHERE {state} = 'failed')"""


def run_state_of(r: str, end_ok: str, now_s: str) -> str:
    """The state of run row `r`, given its end step's outcome.

    A run whose end succeeded costs nothing more; only the others look at their tasks."""
    return run_state(end_ok=end_ok, any_failed=any_failed_of(r, now_s), alive=liveness(now_s, f"{r}.last_heartbeat_ts"))


def end_facts_lateral(r: str) -> str:
    """A LATERAL subquery giving `end_ok` and `end_done_ms` of the run aliased `r`."""
    return (f"LEFT JOIN LATERAL (SELECT {END_OK_AGG} AS end_ok, {END_DONE_AGG} AS end_done_ms FROM metadata_v3 m "
            f"WHERE {end_where('m', f'{r}.flow_id', f'{r}.run_number')}) e ON TRUE")


def last_activity_ms_of(r: str) -> str:
    """When the run (alias `r`) last recorded anything: its newest metadata row or its heartbeat (ms)."""
    # Written as "newest first, one row" so a time-ordered index (master's) can answer it directly.
    newest = (f"(SELECT m.ts_epoch FROM metadata_v3 m WHERE m.flow_id = {r}.flow_id "
              f"AND m.run_number = {r}.run_number ORDER BY m.ts_epoch DESC LIMIT 1)")
    return f"GREATEST({newest}, {r}.last_heartbeat_ts * 1000)"


def finished_ms_of(s: str) -> str:
    """The finish time of judged run row `s` (the library's rule); NULL while not over: a completed
    run's end step's last outcome, a failed or crashed run's last activity."""
    return (f"(CASE WHEN {s}.state = 'completed' THEN {s}.end_done_ms "
            f"WHEN {s}.state IN {FINISHED_IN} THEN {last_activity_ms_of(s)} END)")


def verified_user(r: str) -> str:
    """The run's verified owner, as the service's index expression."""
    return f"(CASE WHEN {r}.system_tags ? ('user:' || {r}.user_name) THEN {r}.user_name ELSE NULL END)"


class Params:
    """Collects bind values and hands out `$n` placeholders (asyncpg numbering)."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def __call__(self, value: object, cast: str | None = None) -> str:
        self.values.append(value)
        return f"${len(self.values)}" + (f"::{cast}" if cast else "")


def now_sql(params: Params, override_s: int | None) -> str:
    """The query's clock (epoch s): the test override or now()."""
    return f"COALESCE({params(override_s, 'bigint')}, EXTRACT(EPOCH FROM now())::bigint)"
