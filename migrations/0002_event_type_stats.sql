-- Read model of the `event_type_stats` projector: how many events of each type each stream
-- type has seen, and the latest one. Rebuilt from the log like every read model.
CREATE TABLE event_type_stats (
    stream_type        text        NOT NULL,
    event_type         text        NOT NULL,
    events             bigint      NOT NULL,
    last_position      bigint      NOT NULL,
    last_recorded_at   timestamptz NOT NULL,
    PRIMARY KEY (stream_type, event_type)
);
