-- Read model of the `conversation_list` projector: one row per chat conversation, listed
-- newest change first (`GET /api/conversations`). Columns set by the start are nullable so
-- a batch holding only messages can be written as an upsert.
CREATE TABLE conversation_list (
    conversation_id text        PRIMARY KEY,
    agent           text,
    started_by      text,
    title           text,
    messages        integer     NOT NULL,
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL,
    last_position   bigint      NOT NULL
);
CREATE INDEX conversation_list_newest ON conversation_list (last_position DESC);
