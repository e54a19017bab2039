-- The event chain (decision 0046): every event's `chain_hash` is
--   SHA-256(previous hash || position (int8, big-endian) || stream version (int8, big-endian)
--           || digest of the event's content)
-- with 32 zero bytes before position 1. The digest is SHA-256 of a canonical JSON form that
-- only Rust computes (`eventlog::store::chain`), so this migration cannot compute the chain
-- of events already stored: it leaves their `chain_hash` empty and `head.chain_position` at
-- 0, and `brain migrate` / start-up fill them in pages before anything appends (appends are
-- refused, SQLSTATE BRC01, while the chain stops short of the head).

-- Empty only for events stored before this migration, until the fill reaches them.
ALTER TABLE events ADD COLUMN chain_hash bytea CHECK (length(chain_hash) = 32);

-- The hash of the event at `chain_position`; the chain is complete when it equals `position`.
ALTER TABLE head
    ADD COLUMN chain_position bigint NOT NULL DEFAULT 0 CHECK (chain_position >= 0),
    ADD COLUMN chain_hash bytea NOT NULL
        DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
        CHECK (length(chain_hash) = 32);

-- Takes `n` positions from the head and chains the batch's events onto its hash, in position
-- order: `versions` and `digests` hold one entry per event, in the order of their positions.
-- Returns the position before the first event and each event's hash. The committer calls it
-- as the last statement of its transaction: the head row stays locked until the commit.
-- Hashing the content happens in the appending process before the transaction starts; here
-- only the fixed-size link is computed.
--
-- The committer also sends the head it expects (`expected_base`, `expected_hash`: where its
-- own last commit left it) and the hashes it computed from there (`predicted`). When the head
-- is still there, one guarded update takes the positions and those hashes stand; otherwise
-- (another process appended, or the committer just started) the head is locked and the chain
-- computed here.
CREATE FUNCTION take_positions(n bigint, versions bigint[], digests bytea[],
                               expected_base bigint, expected_hash bytea, predicted bytea[],
                               OUT base bigint, OUT hashes bytea[])
LANGUAGE plpgsql AS $$
DECLARE
    chained bigint;
    previous bytea;
    computed bytea[] := '{}';
BEGIN
    IF cardinality(versions) <> n OR cardinality(digests) <> n THEN
        RAISE EXCEPTION 'take_positions: % events, % versions, % digests',
            n, cardinality(versions), cardinality(digests);
    END IF;
    IF cardinality(predicted) = n THEN
        UPDATE head h SET position = h.position + n, chain_position = h.position + n,
                          chain_hash = predicted[n]
        WHERE h.position = expected_base AND h.chain_position = expected_base
          AND h.chain_hash = expected_hash
        RETURNING h.position - n INTO base;
        IF FOUND THEN
            hashes := predicted;
            RETURN;
        END IF;
    END IF;
    SELECT h.position, h.chain_position, h.chain_hash INTO base, chained, previous
    FROM head h FOR UPDATE;
    IF chained <> base THEN
        RAISE EXCEPTION 'the event chain stops at position % of %', chained, base
            USING ERRCODE = 'BRC01';
    END IF;
    FOR i IN 1 .. n LOOP
        previous := sha256(previous || int8send(base + i) || int8send(versions[i]) || digests[i]);
        computed[i] := previous;
    END LOOP;
    UPDATE head SET position = base + n, chain_position = base + n, chain_hash = previous;
    hashes := computed;
END
$$;
