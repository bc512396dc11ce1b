"""Run and task states: one vocabulary and one rule, for every backend and the query service.

The rule is a table, written once here and rendered two ways: `decide()` evaluates it in
Python (the library, on local Metaflow and on the metadata service), `sql_case()` renders it
as a SQL ``CASE`` (the query service over the service's PostgreSQL database). Facts are
three-valued: True, False, or None when the evidence cannot tell.

Liveness is a fact each backend proves its own way:
- local Metaflow: a live runtime or task process of the run on this host proves it alive;
  a readable process table on a local file system without one proves it dead;
- metadata service: a heartbeat at most `ALIVE_WITHIN_S` old proves it alive, one older than
  `DEAD_AFTER_S` proves it dead (the service's own cutoff); in between, nobody can tell.

Task rule (first match wins), by the task's latest attempt:

    latest_ok True                        completed  (retried_ok when an earlier attempt failed)
    latest_ok False, retries_left False   failed     (its @retry is used up: no attempt follows)
    latest_ok False, run_alive True       running    (a retry may follow: "retrying")
    latest_ok False                       failed
    exit_recorded True, retries_left False  crashed  (the runtime saw it die; no attempt follows)
    exit_recorded True, run_alive True    running    (a retry may follow)
    exit_recorded True                    crashed
    alive True                            running
    alive False                           crashed
    run_alive False                       crashed
    otherwise                             unknown

Run rule:

    end_ok True                      completed   (the end step's latest attempt succeeded)
    any_failed True                  failed      (a task is failed by the rule above)
    any_crashed True                 crashed     (a task died for good: the runtime stops)
    alive True                       running
    alive False                      crashed     (the run died: killed, lost)
    otherwise                        unknown
"""

from __future__ import annotations

from typing import Literal, Mapping

RunState = Literal["running", "completed", "failed", "crashed", "unknown"]
TaskState = Literal["running", "completed", "failed", "crashed", "unknown"]
RUN_STATES: tuple[RunState, ...] = ("running", "completed", "failed", "crashed", "unknown")
TASK_STATES: tuple[TaskState, ...] = ("running", "completed", "failed", "crashed", "unknown")
FINISHED: frozenset[str] = frozenset({"completed", "failed", "crashed"})

ALIVE_WITHIN_S = 60  # heartbeats come every 10 s and are stored at most every 10 s
DEAD_AFTER_S = 360  # the metadata service's own cutoff for "running"

Fact = bool | None
# (state, conditions): every (fact, value) must hold; () always holds.
Rule = tuple[str, tuple[tuple[str, bool], ...]]

TASK_RULES: tuple[Rule, ...] = (
    ("completed", (("latest_ok", True),)),
    ("failed", (("latest_ok", False), ("retries_left", False))),
    ("running", (("latest_ok", False), ("run_alive", True))),
    ("failed", (("latest_ok", False),)),
    ("crashed", (("exit_recorded", True), ("retries_left", False))),
    ("running", (("exit_recorded", True), ("run_alive", True))),
    ("crashed", (("exit_recorded", True),)),
    ("running", (("alive", True),)),
    ("crashed", (("alive", False),)),
    ("crashed", (("run_alive", False),)),
    ("unknown", ()),
)
RUN_RULES: tuple[Rule, ...] = (
    ("completed", (("end_ok", True),)),
    ("failed", (("any_failed", True),)),
    ("crashed", (("any_crashed", True),)),
    ("running", (("alive", True),)),
    ("crashed", (("alive", False),)),
    ("unknown", ()),
)


def decide(rules: tuple[Rule, ...], facts: Mapping[str, Fact]) -> str:
    """The state the first matching rule gives; a missing fact counts as None (unknown)."""
    for state, conditions in rules:
        if all(facts.get(name) is value for name, value in conditions):
            return state
    raise AssertionError("state rules must end with an unconditional rule")


def task_state(*, latest_ok: Fact, run_alive: Fact, exit_recorded: Fact = None, alive: Fact = None,
               retries_left: Fact = None) -> TaskState:
    """A task's state from its latest attempt's outcome, its retries and the liveness facts."""
    facts = {"latest_ok": latest_ok, "run_alive": run_alive, "exit_recorded": exit_recorded, "alive": alive,
             "retries_left": retries_left}
    return decide(TASK_RULES, facts)  # type: ignore[return-value]  # the table holds TaskState values only


def run_state(*, end_ok: Fact, any_failed: Fact, alive: Fact, any_crashed: Fact = None) -> RunState:
    """A run's state from its end step, its tasks' states and its liveness."""
    return decide(RUN_RULES, {"end_ok": end_ok, "any_failed": any_failed, "any_crashed": any_crashed, "alive": alive})  # type: ignore[return-value]  # the table holds RunState values only


def heartbeat_liveness(age_s: float | None) -> Fact:
    """Liveness proved by a heartbeat `age_s` seconds old (None: no heartbeat recorded)."""
    if age_s is None:
        return None
    if age_s <= ALIVE_WITHIN_S:
        return True
    if age_s > DEAD_AFTER_S:
        return False
    return None


def sql_heartbeat_liveness(age_s_sql: str) -> str:
    """`heartbeat_liveness` as a SQL boolean expression (NULL when it cannot tell)."""
    return (
        f"(CASE WHEN ({age_s_sql}) IS NULL THEN NULL WHEN ({age_s_sql}) <= {ALIVE_WITHIN_S} THEN TRUE "
        f"WHEN ({age_s_sql}) > {DEAD_AFTER_S} THEN FALSE ELSE NULL END)"
    )


def sql_case(rules: tuple[Rule, ...], facts_sql: Mapping[str, str]) -> str:
    """The rule table as a SQL CASE over boolean expressions (three-valued: NULL = unknown).

    `facts_sql` maps each fact the rules use to a SQL expression yielding TRUE, FALSE or NULL;
    a fact left out is NULL.
    """
    arms = []
    for state, conditions in rules:
        if not conditions:
            arms.append(f"ELSE '{state}'")
            continue
        test = " AND ".join(f"({facts_sql.get(name, 'NULL')}) IS {'TRUE' if value else 'FALSE'}" for name, value in conditions)
        arms.append(f"WHEN {test} THEN '{state}'")
    return "(CASE " + " ".join(arms) + " END)"
