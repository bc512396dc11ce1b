-- metaflow-agent-service, optional migration 003: the end step's attempt marks, run by run.
--
-- What it is for: a run's state starts from its end step's outcome, and a completed run's finish
-- time is its end step's last outcome row. Statistics over many runs (GET /agent/v1/stats/runs)
-- read those three rows for every run examined; with this index that is one ordered pass (a merge
-- join with the runs) instead of one index probe per run. The service works without it;
-- GET /agent/v1/capabilities says whether it is present. Size: three entries per run (measured
-- 2.6 MB for 10,000 runs).
--
-- Apply (not inside a transaction):
--   psql "$DSN" -f 003_metadata_end_marks.sql
-- Remove:
--   DROP INDEX CONCURRENTLY IF EXISTS metadata_v3_idx_agent_end_marks;
CREATE INDEX CONCURRENTLY IF NOT EXISTS metadata_v3_idx_agent_end_marks
    ON metadata_v3 (flow_id, run_number)
    INCLUDE (field_name, value, tags, ts_epoch, id)
    WHERE step_name = 'end' AND field_name IN ('attempt', 'attempt_ok', 'attempt-done');
