-- Read model of the `mission_list` projector: one row per mission, for listing and
-- filtering. Columns set only by the enqueue are nullable so that a status change can be
-- written as an upsert (which always finds its row by the primary key).
CREATE TABLE mission_list (
    mission_id        text        PRIMARY KEY,
    name              text,
    priority          text,
    agent             text,
    enqueued_by       text,
    status            text        NOT NULL,
    attempt           integer,
    enqueued_position bigint,
    enqueued_at       timestamptz,
    updated_at        timestamptz NOT NULL,
    last_position     bigint      NOT NULL
);
CREATE INDEX mission_list_newest ON mission_list (enqueued_position DESC);
CREATE INDEX mission_list_status_newest ON mission_list (status, enqueued_position DESC);
