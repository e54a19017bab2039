-- Read model of the `mission_tree` projector: which mission spawned which. The projector's
-- store also reacts to the tree (a child's end reported to its parent, a parent's cancel
-- passed on), with idempotent commands. Rebuilt from the log like every read model.
CREATE TABLE mission_links (
    child_id   text   PRIMARY KEY,
    parent_id  text   NOT NULL,
    position   bigint NOT NULL
);
CREATE INDEX mission_links_parent ON mission_links (parent_id, position);
