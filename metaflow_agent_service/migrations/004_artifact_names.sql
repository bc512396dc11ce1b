-- metaflow-agent-service, optional migration 004: artifact names, step by step.
--
-- What it is for: an artifact search (GET /agent/v1/flows/{flow}/artifacts) walks the steps of the
-- newest runs and, in each, looks for the names asked for. The metadata service's own indexes put
-- the name after the task, so without this index every artifact row of a step is read to find a
-- name (from an index, but all of them: 14 ms for a 10,000-task step of 200,000 rows, measured);
-- with it, a plain name or a prefix is a seek (0.2 ms for the same step). The
-- pattern operator class makes LIKE 'model%' a range whatever the database's collation. The
-- service works without it; GET /agent/v1/capabilities says whether it is present. Size: about the
-- table's primary key (measured 140 MB for 1.8 M artifact rows; the primary key is 133 MB).
--
-- Apply (not inside a transaction: CREATE INDEX CONCURRENTLY does not block the metadata service's writes):
--   psql "$DSN" -f 004_artifact_names.sql
-- Remove:
--   DROP INDEX CONCURRENTLY IF EXISTS artifact_v3_idx_agent_names;
CREATE INDEX CONCURRENTLY IF NOT EXISTS artifact_v3_idx_agent_names
    ON artifact_v3 (flow_id, run_number, step_name, name varchar_pattern_ops, task_id, attempt_id);
