-- Finished missions by the time they finished, for the last hour's throughput and failure
-- rate (`GET /api/missions/throughput`) without scanning the whole list.
CREATE INDEX mission_list_finished ON mission_list (updated_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
