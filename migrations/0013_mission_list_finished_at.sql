-- `GET /api/analytics/missions` reads the missions that finished within a window: by when
-- they finished, not when their row last changed (a finished mission's row still changes,
-- when it is forked from, say).
CREATE INDEX mission_list_finished_at ON mission_list (finished_at) WHERE finished_at IS NOT NULL;
