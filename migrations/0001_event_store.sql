-- The event store: the only source of truth (design invariant 1).

-- Every event, in one total order. `global_position` is assigned from `head` inside the
-- appending transaction, as its last statement, so positions are gapless and follow commit
-- order (invariant 2); there is deliberately no sequence or identity column here.
CREATE TABLE events (
    global_position bigint PRIMARY KEY CHECK (global_position > 0),
    stream_type     text        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_type, stream_id, version)
);

-- One row: the last position handed out. Its row lock orders commits.
CREATE TABLE head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO head (position) VALUES (0);

-- Current version of every stream. Appends lock the rows of the streams they touch (in a fixed
-- order, so two batches never deadlock) to check expected versions without scanning events.
CREATE TABLE streams (
    stream_type text   NOT NULL,
    stream_id   text   NOT NULL,
    version     bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (stream_type, stream_id)
);

-- Command ids seen, with the outcome of their first execution (idempotency). A row is claimed
-- at the start of the appending transaction; its outcome columns are filled at its end.
CREATE TABLE commands (
    command_id     uuid        PRIMARY KEY,
    stream_type    text,
    stream_id      text,
    first_version  bigint,
    last_version   bigint,
    first_position bigint,
    last_position  bigint,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Where each projector has got to. Updated in the same transaction as the projector's effect
-- (invariant 4), for projectors whose read model lives in PostgreSQL.
CREATE TABLE projector_checkpoints (
    projector  text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
