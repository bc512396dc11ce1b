-- metaflow-agent-service, optional migration 001: the attempt marks of every task, in one small index.
--
-- What it is for: task and run states read only three metadata rows per attempt (`attempt`,
-- `attempt_ok`, `attempt-done`) out of the ~18 a task attempt writes. This partial index holds just
-- those rows, with the columns the state queries read (INCLUDE), so they are answered from the
-- index alone: the end step of a run (completed or not), a run's tasks by state, per-step counts,
-- run statistics. The service works without it (slower); GET /agent/v1/capabilities says whether
-- it is present. Size: measured 32 MB for 1.8 M metadata rows (a 302 MB heap): about a ninth of the heap.
--
-- Apply (not inside a transaction: CREATE INDEX CONCURRENTLY does not block the metadata service's writes):
--   psql "$DSN" -f 001_metadata_attempt_marks.sql
-- Remove:
--   DROP INDEX CONCURRENTLY IF EXISTS metadata_v3_idx_agent_attempt_marks;
CREATE INDEX CONCURRENTLY IF NOT EXISTS metadata_v3_idx_agent_attempt_marks
    ON metadata_v3 (flow_id, run_number, step_name, task_id)
    INCLUDE (field_name, value, tags, ts_epoch, id)
    WHERE field_name IN ('attempt', 'attempt_ok', 'attempt-done');
