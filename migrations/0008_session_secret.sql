-- The key console sessions are signed with (`identity::session`): one row, made by the first
-- process that needs it. Not part of the log: replacing it only signs every browser out.
CREATE TABLE session_secret (
    id      smallint PRIMARY KEY CHECK (id = 1),
    secret  bytea    NOT NULL CHECK (length(secret) = 32)
);
