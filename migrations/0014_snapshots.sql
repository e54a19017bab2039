-- The latest snapshot of each long stream (decision 0049): its aggregate's state folded up to
-- `version`, so that a load reads this row and the events after it instead of the whole
-- stream. Droppable: deleting any or every row changes nothing but the speed of loads, until
-- the next snapshot is taken. A row is used only while its `snapshot_version` is the one the
-- code declares for its aggregate and the stream's event at `version` is still `event_id`;
-- otherwise it is ignored, and replaced by the next snapshot taken.
CREATE TABLE snapshots (
    stream_type      text        NOT NULL,
    stream_id        text        NOT NULL,
    version          bigint      NOT NULL CHECK (version > 0),
    event_id         uuid        NOT NULL,
    snapshot_version integer     NOT NULL,
    state            jsonb       NOT NULL,
    taken_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_type, stream_id)
);
