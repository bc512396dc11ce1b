"""The state rule table: the Python and SQL renderings agree on every combination of facts."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from metaflow_agent._states import (
    ALIVE_WITHIN_S,
    DEAD_AFTER_S,
    RUN_RULES,
    TASK_RULES,
    decide,
    heartbeat_liveness,
    run_state,
    sql_case,
    sql_heartbeat_liveness,
    task_state,
)

VALUES = (True, False, None)


def _facts(rules):
    return sorted({name for _, conds in rules for name, _ in conds})


def _sql_literal(v):
    return {True: "1", False: "0", None: "NULL"}[v]


@pytest.mark.parametrize("rules", [TASK_RULES, RUN_RULES], ids=["task", "run"])
def test_sql_rendering_agrees_with_python_on_every_combination(rules):
    names = _facts(rules)
    db = sqlite3.connect(":memory:")  # three-valued IS TRUE / IS FALSE, as in PostgreSQL
    for combo in itertools.product(VALUES, repeat=len(names)):
        facts = dict(zip(names, combo))
        sql = sql_case(rules, {n: _sql_literal(v) for n, v in facts.items()})
        (got,) = db.execute("SELECT " + sql).fetchone()
        assert got == decide(rules, facts), facts


def test_task_rule_examples():
    assert task_state(latest_ok=True, run_alive=None) == "completed"
    assert task_state(latest_ok=False, run_alive=True) == "running"  # a retry may follow
    assert task_state(latest_ok=False, run_alive=True, retries_left=False) == "failed"  # none will
    assert task_state(latest_ok=False, run_alive=None) == "failed"
    assert task_state(latest_ok=None, run_alive=True, exit_recorded=True) == "running"  # a retry may follow
    assert task_state(latest_ok=None, run_alive=True, exit_recorded=True, retries_left=False) == "crashed"
    assert task_state(latest_ok=None, run_alive=None, exit_recorded=True) == "crashed"
    assert task_state(latest_ok=None, run_alive=True, alive=True) == "running"
    assert task_state(latest_ok=None, run_alive=None, alive=False) == "crashed"
    assert task_state(latest_ok=None, run_alive=False) == "crashed"
    assert task_state(latest_ok=None, run_alive=None) == "unknown"


def test_run_rule_examples():
    assert run_state(end_ok=True, any_failed=True, alive=True) == "completed"
    assert run_state(end_ok=None, any_failed=True, alive=True) == "failed"
    assert run_state(end_ok=None, any_failed=False, alive=True) == "running"
    assert run_state(end_ok=None, any_failed=False, alive=False) == "crashed"
    assert run_state(end_ok=None, any_failed=False, any_crashed=True, alive=True) == "crashed"
    assert run_state(end_ok=None, any_failed=False, alive=None) == "unknown"


@pytest.mark.parametrize("age", [None, 0, ALIVE_WITHIN_S, ALIVE_WITHIN_S + 1, DEAD_AFTER_S, DEAD_AFTER_S + 1, 10**6])
def test_heartbeat_liveness_sql_agrees(age):
    db = sqlite3.connect(":memory:")
    (got,) = db.execute("SELECT " + sql_heartbeat_liveness(_sql_literal(None) if age is None else str(age))).fetchone()
    want = heartbeat_liveness(age)
    assert got == (None if want is None else int(want))
    assert heartbeat_liveness(ALIVE_WITHIN_S) is True and heartbeat_liveness(DEAD_AFTER_S + 1) is False
    assert heartbeat_liveness(ALIVE_WITHIN_S + 1) is None
