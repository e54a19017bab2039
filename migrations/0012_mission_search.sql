-- Finding missions (`GET /api/missions?q=&error=&status=&sort=...`): the mission list gains
-- what a search matches and shows (description, last error, the run's start and finish, its
-- run time) and an index for each filter and sort.
--
-- The new columns are filled by the projector from the log, so the model is emptied and its
-- checkpoint set back to 0: the live runner rebuilds it from the first event (a running
-- older process sees its checkpoint below what it applied, takes it as lost state and
-- refills from 0 the same way). Until it has caught up the list shows only part of the
-- missions; `position` in each page says how far it is.

-- The rebuild from the log, emptied first so that the changes below rewrite no rows. A rebuild
-- that was under way built the old shape: it starts over.
TRUNCATE mission_list;
DROP TABLE IF EXISTS mission_list_rebuild;
DELETE FROM projector_checkpoints WHERE projector = 'mission_list:rebuild';
UPDATE projector_checkpoints SET position = 0, updated_at = now() WHERE projector = 'mission_list';
INSERT INTO projector_resets (projector, reason, position)
    SELECT 'mission_list', 'migration', 0 FROM projector_checkpoints WHERE projector = 'mission_list';

-- Trigram indexes for text anywhere in a name, description or error. A trusted extension:
-- the database's owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Milliseconds from one time to a later one: NULL unless both are known, never negative.
CREATE FUNCTION mission_list_ms(since timestamptz, until timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT greatest(0, round(extract(epoch FROM until - since) * 1000))::bigint $$;

ALTER TABLE mission_list
    ADD COLUMN description text,
    -- The last attempt's error, its first 2,000 characters.
    ADD COLUMN last_error  text,
    -- When the current run became due: the enqueue (or its `not_before`), or the retry.
    ADD COLUMN ready_at    timestamptz,
    -- The run's first start.
    ADD COLUMN started_at  timestamptz,
    -- When it reached a final status; NULL while it is not in one.
    ADD COLUMN finished_at timestamptz,
    -- Milliseconds from started_at to finished_at.
    ADD COLUMN run_ms      bigint,
    -- What `q` is matched against: name and description, lowercased once when written, so
    -- that matching is a plain LIKE rather than an ILIKE lowering every row it reads.
    ADD COLUMN search_text text GENERATED ALWAYS AS
        (lower(coalesce(name, '') || E'\n' || coalesce(description, ''))) STORED;

-- Finer statistics for the searched text: the planner estimates how many rows a phrase
-- matches from each column's histogram, and with the default 100 entries a phrase in 2% of a
-- million rows read as 100 rows, so it sorted 20,000 matches instead of walking an index.
ALTER TABLE mission_list
    ALTER COLUMN search_text SET STATISTICS 1000,
    ALTER COLUMN last_error SET STATISTICS 1000;

-- Each sort is a keyset on (key, mission_id): one index a sort, read either way.
DROP INDEX mission_list_newest;
DROP INDEX mission_list_status_newest;
CREATE INDEX mission_list_enqueued ON mission_list (enqueued_position, mission_id);
CREATE INDEX mission_list_status_enqueued ON mission_list (status, enqueued_position, mission_id);
CREATE INDEX mission_list_updated ON mission_list (updated_at, mission_id);
-- Run time, those without one last whichever way it is read.
CREATE INDEX mission_list_duration_desc ON mission_list ((coalesce(run_ms, -1)), mission_id);
CREATE INDEX mission_list_duration_asc
    ON mission_list ((coalesce(run_ms, 9223372036854775807)), mission_id);
-- since / until.
CREATE INDEX mission_list_enqueued_at ON mission_list (enqueued_at);
-- `q` as the start of a mission id (the database's collation may not order like bytes).
CREATE INDEX mission_list_id_prefix ON mission_list (mission_id text_pattern_ops);
-- `q` anywhere in the name or description, `error` anywhere in the last error.
CREATE INDEX mission_list_text ON mission_list USING gin (search_text gin_trgm_ops);
CREATE INDEX mission_list_error ON mission_list USING gin (last_error gin_trgm_ops);
