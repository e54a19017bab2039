-- Each time a read model was reset: rebuilt from the log beside the live one, refilled after
-- it lost its state (Redis flushed), or dropped because it was ahead of the log (the database
-- restored). `brain projections status` shows the last one; only the last hundred of each
-- projector are kept.
CREATE TABLE projector_resets (
    id         bigserial   PRIMARY KEY,
    projector  text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    reason     text        NOT NULL,
    position   bigint      NOT NULL
);

CREATE INDEX projector_resets_by_projector ON projector_resets (projector, id);
