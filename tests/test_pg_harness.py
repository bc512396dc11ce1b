"""The PostgreSQL harness restores the real service's dump exactly (README's row counts)."""

from __future__ import annotations

EXPECTED = {"flows_v3": 4, "runs_v3": 17, "steps_v3": 72, "tasks_v3": 370, "metadata_v3": 7157, "artifact_v3": 6919, "goose_db_version": 13}


def test_dump_restored_with_the_readme_counts(pg_cluster, service_db):
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in EXPECTED)
    got = dict(line.split("|") for line in pg_cluster.psql("metaflow", sql).split())
    assert {k: int(v) for k, v in got.items()} == EXPECTED


def test_sequences_resume_after_the_dump(pg_cluster, service_db):
    out = pg_cluster.psql("metaflow", "SELECT last_value FROM runs_v3_run_number_seq UNION ALL SELECT last_value FROM tasks_v3_task_id_seq")
    assert out.split() == ["17", "370"]


def test_server_listens_on_loopback_only(pg_cluster, service_db):
    assert pg_cluster.psql("postgres", "SHOW listen_addresses").strip() == "127.0.0.1"
