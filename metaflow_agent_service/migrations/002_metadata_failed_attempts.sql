-- metaflow-agent-service, optional migration 002: the failed attempts, in a tiny index.
--
-- What it is for: a task is failed only when its latest attempt recorded attempt_ok False, so the
-- failed tasks of a run (and whether a run has any) are found among its `attempt_ok` False rows.
-- Without this index that means reading every `attempt_ok` row of the run (one per task attempt);
-- with it, only the failures: the failed tasks of a 100,000-task run in milliseconds. The service
-- works without it; GET /agent/v1/capabilities says whether it is present. Size: one entry per
-- failed attempt (measured 88 kB for 1.8 M metadata rows).
--
-- Apply (not inside a transaction):
--   psql "$DSN" -f 002_metadata_failed_attempts.sql
-- Remove:
--   DROP INDEX CONCURRENTLY IF EXISTS metadata_v3_idx_agent_failed_attempts;
CREATE INDEX CONCURRENTLY IF NOT EXISTS metadata_v3_idx_agent_failed_attempts
    ON metadata_v3 (flow_id, run_number, step_name, task_id)
    WHERE field_name = 'attempt_ok' AND value IN ('False', 'false', 'FALSE');
