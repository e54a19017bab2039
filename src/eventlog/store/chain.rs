//! The event chain: every event's `chain_hash` commits to its content, its place in the log
//! and, through its predecessor's hash, to everything before it
//! ([0046](../../../docs/decisions/0046-event-chain.md)).
//!
//! For the event at position `p` with stream version `v`:
//!
//! ```text
//! digest(e) = SHA-256(canonical JSON of {"event_id", "event_type", "metadata", "payload",
//!                                         "schema_version", "stream_id", "stream_type"})
//! hash(p)   = SHA-256(hash(p - 1) || p as 8 bytes big-endian || v as 8 bytes big-endian
//!                     || digest(e))
//! hash(0)   = 32 zero bytes (GENESIS)
//! ```
//!
//! The digest is what a command decided, computed by the appending task before it queues
//! (in [`super::validate::encode`], off the committer's serial path). The link is where the
//! committer put it: `take_positions` (migration `0010_event_chain.sql`) folds the batch's
//! digests onto the head's hash under the head row's lock, in the statement that takes the
//! positions, and stores the last hash in `head`. [`link`] is the same rule in Rust, for the
//! committer (which links a batch from where its last commit left the head, and has
//! `take_positions` check that the head is still there rather than fold again), [`fill`] and
//! the verifier (`eventlog::chain`). `recorded_at` is not covered: the database
//! sets it while the statement runs; the metadata's own `timestamp` is covered.
//!
//! [`fill`] computes the chain for events stored without one (a log from before the chain,
//! or rows written by an older build), in pages, in position order; `db::migrate` runs it,
//! and the committer runs it when `take_positions` says the chain stops short of the head.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{READ_TIMEOUT, StoreError, canonical, to_i64};

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The SQLSTATE `take_positions` raises when `head.chain_position` is short of
/// `head.position`: events were stored without a chain hash, and [`fill`] must run first.
pub const CHAIN_BEHIND_SQLSTATE: &str = "BRC01";

/// Events one page of [`fill`] reads and updates in one transaction.
pub const FILL_PAGE_EVENTS: i64 = 2_000;
/// Times [`fill`] starts over when the head moved under it (an older build appending, or a
/// second filler); each round makes progress, so this only bounds a pathological writer.
pub const FILL_ROUNDS_MAX: usize = 100;
/// Longest one page of [`fill`] may take, read and write.
pub const FILL_PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a command decided about one event: everything the chain's digest covers but the
/// metadata, which one append's events share.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub stream_type: &'a str,
    pub stream_id: &'a str,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub payload: &'a Value,
}

impl Content<'_> {
    /// The digest of the event: the canonical JSON (see [`canonical`]) of the object of its
    /// seven fields, keys sorted. `metadata` is already in canonical form; `scratch` is a
    /// buffer kept between calls.
    pub fn digest(&self, metadata: &[u8], scratch: &mut Vec<u8>) -> [u8; 32] {
        use std::io::Write;
        let text = |value: &str, out: &mut Vec<u8>| canonical::write(&Value::from(value), out);
        scratch.clear();
        scratch.extend_from_slice(b"{\"event_id\":\"");
        let _ = write!(scratch, "{}", self.event_id.hyphenated());
        scratch.extend_from_slice(b"\",\"event_type\":");
        text(self.event_type, scratch);
        scratch.extend_from_slice(b",\"metadata\":");
        scratch.extend_from_slice(metadata);
        scratch.extend_from_slice(b",\"payload\":");
        canonical::write(self.payload, scratch);
        let _ = write!(scratch, ",\"schema_version\":{},\"stream_id\":", self.schema_version);
        text(self.stream_id, scratch);
        scratch.extend_from_slice(b",\"stream_type\":");
        text(self.stream_type, scratch);
        scratch.push(b'}');
        Sha256::digest(&scratch[..]).into()
    }
}

/// One step of the chain: the hash of the event at `position`, version `version`.
pub fn link(previous: &[u8; 32], position: u64, version: u64, digest: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(to_i64(position).to_be_bytes());
    hasher.update(to_i64(version).to_be_bytes());
    hasher.update(digest);
    hasher.finalize().into()
}

/// An event as the chain reads it back from the store: its columns, payload and metadata as
/// the store prints them, and the hash stored with it (none before [`fill`]).
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub position: u64,
    pub stream_type: String,
    pub stream_id: String,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload_json: String,
    pub metadata_json: String,
    pub chain_hash: Option<Vec<u8>>,
}

impl ChainRow {
    /// The digest of the row's content as stored now; an error names what does not parse.
    pub fn digest(&self, scratch: &mut Vec<u8>) -> Result<[u8; 32], String> {
        let payload: Value = serde_json::from_str(&self.payload_json)
            .map_err(|error| format!("payload does not parse: {error}"))?;
        let metadata: Value = serde_json::from_str(&self.metadata_json)
            .map_err(|error| format!("metadata does not parse: {error}"))?;
        let content = Content {
            stream_type: &self.stream_type,
            stream_id: &self.stream_id,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &payload,
        };
        Ok(content.digest(&canonical::to_vec(&metadata), scratch))
    }
}

/// Up to `limit` rows in `after < position <= up_to`, in position order, and at most about
/// [`super::PAGE_BYTES_MAX`] of payload and metadata.
pub async fn read_rows(
    pool: &PgPool,
    after: u64,
    up_to: u64,
    limit: i64,
) -> Result<Vec<ChainRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT global_position, stream_type, stream_id, version, event_id, event_type,
                schema_version, payload::text AS payload_json, metadata::text AS metadata_json,
                chain_hash
         FROM events WHERE global_position > $1 AND global_position <= $2
         ORDER BY global_position LIMIT $3",
    )
    .bind(to_i64(after))
    .bind(to_i64(up_to))
    .bind(limit);
    let size = |row: &sqlx::postgres::PgRow| {
        let raw = |column| {
            row.try_get_raw(column).ok().and_then(|v| v.as_bytes().ok()).map_or(0, <[u8]>::len)
        };
        raw("payload_json") + raw("metadata_json")
    };
    let rows = bounded!(pool, |c| super::take_page(rows.fetch(c), size))?;
    rows.iter()
        .map(|row| {
            Ok(ChainRow {
                position: row.try_get::<i64, _>("global_position")? as u64,
                stream_type: row.try_get("stream_type")?,
                stream_id: row.try_get("stream_id")?,
                version: row.try_get::<i64, _>("version")? as u64,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                schema_version: row.try_get::<i32, _>("schema_version")? as u32,
                payload_json: row.try_get("payload_json")?,
                metadata_json: row.try_get("metadata_json")?,
                chain_hash: row.try_get("chain_hash")?,
            })
        })
        .collect()
}

/// The head as the chain sees it: the last position handed out, how far the chain has been
/// computed, and the hash there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub position: u64,
    pub chain_position: u64,
    pub hash: [u8; 32],
}

pub async fn chain_head(pool: &PgPool) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT position, chain_position, chain_hash FROM head");
    let row = bounded!(pool, |c| row.fetch_one(c))?;
    head_of(&row)
}

fn head_of(row: &sqlx::postgres::PgRow) -> Result<ChainHead, StoreError> {
    let hash: Vec<u8> = row.try_get("chain_hash")?;
    let hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| StoreError::Corrupt("head: chain hash is not 32 bytes".into()))?;
    Ok(ChainHead {
        position: row.try_get::<i64, _>("position")? as u64,
        chain_position: row.try_get::<i64, _>("chain_position")? as u64,
        hash,
    })
}

/// Computes the chain for every event after `head.chain_position`, in pages of
/// [`FILL_PAGE_EVENTS`], each page's hashes and the head's new chain position in one
/// transaction, so a fill that stops half-way goes on from its last page. Idempotent: with
/// the chain at the head it reads one row and changes nothing. Returns how many events it
/// chained.
///
/// A page's head update is guarded by the chain position it started from: if another filler
/// moved it, this one starts over from the head (at most [`FILL_ROUNDS_MAX`] times).
pub async fn fill(pool: &PgPool) -> Result<u64, StoreError> {
    let mut filled = 0;
    let mut scratch = Vec::new();
    for _ in 0..FILL_ROUNDS_MAX {
        let head = chain_head(pool).await?;
        if head.chain_position >= head.position {
            return Ok(filled);
        }
        tracing::info!(
            from = head.chain_position,
            to = head.position,
            "computing the event chain for events stored without it"
        );
        let (mut after, mut previous) = (head.chain_position, head.hash);
        let mut moved = false;
        while after < head.position && !moved {
            let rows = read_rows(pool, after, head.position, FILL_PAGE_EVENTS).await?;
            let Some(last) = rows.last() else {
                return Err(StoreError::Corrupt(format!(
                    "head is at {} but no event follows position {after}",
                    head.position
                )));
            };
            let last_position = last.position;
            let (mut positions, mut hashes) = (Vec::new(), Vec::new());
            for (row, expected) in rows.iter().zip(after + 1..) {
                if row.position != expected {
                    return Err(StoreError::Corrupt(format!("no event at position {expected}")));
                }
                let digest = row
                    .digest(&mut scratch)
                    .map_err(|what| StoreError::Corrupt(format!("event {expected}: {what}")))?;
                previous = link(&previous, row.position, row.version, &digest);
                positions.push(to_i64(row.position));
                hashes.push(previous);
            }
            let write = write_page(pool, after, last_position, &positions, &hashes, &previous);
            match tokio::time::timeout(FILL_PAGE_TIMEOUT, write).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => moved = true,
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => return Err(StoreError::Timeout),
            }
            if !moved {
                filled += positions.len() as u64;
                after = last_position;
            }
        }
    }
    Err(StoreError::Corrupt(format!(
        "the chain's head kept moving: gave up after {FILL_ROUNDS_MAX} rounds"
    )))
}

/// One page of [`fill`]: the events' hashes and the head's chain position, if the head's
/// chain position is still `from`. Returns whether it was.
async fn write_page(
    pool: &PgPool,
    from: u64,
    to: u64,
    positions: &[i64],
    hashes: &[[u8; 32]],
    last: &[u8; 32],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The head first: it orders this page against the committer and any other filler.
    let moved = sqlx::query(
        "UPDATE head SET chain_position = $2, chain_hash = $3 WHERE chain_position = $1",
    )
    .bind(to_i64(from))
    .bind(to_i64(to))
    .bind(last.as_slice())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "UPDATE events SET chain_hash = u.hash
         FROM unnest($1::int8[], $2::bytea[]) AS u(position, hash)
         WHERE events.global_position = u.position",
    )
    .bind(positions)
    .bind(hashes)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_digest_covers_every_field_and_reads_back_from_stored_text() {
        let id = Uuid::from_u128(7);
        let payload = json!({"b": [1.0, "\u{e9}"], "a": {}});
        let metadata = json!({"actor": "cli", "timestamp": "2026-01-01T00:00:00Z"});
        let metadata = canonical::to_vec(&metadata);
        let mut scratch = Vec::new();
        let content = Content {
            stream_type: "mission",
            stream_id: "m1",
            event_id: id,
            event_type: "Done",
            schema_version: 1,
            payload: &payload,
        };
        let base = content.digest(&metadata, &mut scratch);
        let row = ChainRow {
            position: 1,
            stream_type: "mission".into(),
            stream_id: "m1".into(),
            version: 1,
            event_id: id,
            event_type: "Done".into(),
            schema_version: 1,
            // As PostgreSQL prints the same values.
            payload_json: r#"{"a": {}, "b": [1.0, "é"]}"#.into(),
            metadata_json: r#"{"actor": "cli", "timestamp": "2026-01-01T00:00:00Z"}"#.into(),
            chain_hash: None,
        };
        assert_eq!(row.digest(&mut scratch).unwrap(), base);
        let empty = json!({});
        let changed = [
            Content { stream_type: "agent", ..content },
            Content { stream_id: "m2", ..content },
            Content { event_id: Uuid::from_u128(8), ..content },
            Content { event_type: "Undone", ..content },
            Content { schema_version: 2, ..content },
            Content { payload: &empty, ..content },
        ];
        for (index, other) in changed.iter().enumerate() {
            assert_ne!(other.digest(&metadata, &mut scratch), base, "field {index} is covered");
        }
        assert_ne!(content.digest(b"{}", &mut scratch), base, "metadata is covered");
    }

    #[test]
    fn a_link_covers_the_previous_hash_the_position_and_the_version() {
        let digest = [5u8; 32];
        let base = link(&GENESIS, 1, 1, &digest);
        assert_ne!(link(&[1u8; 32], 1, 1, &digest), base);
        assert_ne!(link(&GENESIS, 2, 1, &digest), base);
        assert_ne!(link(&GENESIS, 1, 2, &digest), base);
        assert_ne!(link(&GENESIS, 1, 1, &[6u8; 32]), base);
    }
}
