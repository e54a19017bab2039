//! Checking what arrives on the bus against the store (design invariant 11: the bus is not
//! trusted, anywhere).
//!
//! A message on `<ns>.events.>` is believed only if it is the store's event at its stream
//! sequence: same position, event id, stream, version, type, schema version, time, and the
//! same payload and metadata text (compared by SHA-256, so the store sends 32 bytes per event,
//! not its payload). The event id alone is not enough: an event's id is readable through the
//! API as soon as it commits, so a publisher racing the relay could put the real id on a
//! forged payload at the next position.
//!
//! Readers ask the store for the [`Fingerprint`]s of a whole batch in one primary-key range
//! query ([`fingerprints`]) and compare each message's ([`Fingerprint::of_envelope`]). A
//! reader that refuses a message tells the relay where ([`report_refused`], a PostgreSQL
//! `NOTIFY`), so the relay checks the stream there and rebuilds it if it holds a forgery.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::eventlog::bus::Envelope;
use crate::eventlog::store::{self, StoreError, StoredEvent};

/// What a message must agree with the store on. Built from the store's row or from a bus
/// envelope; two are equal only if the message carries the store's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub event_id: Uuid,
    pub stream_type: String,
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at_unix_ns: i128,
    /// SHA-256 of the payload's JSON text, a NUL byte, and the metadata's JSON text (as the
    /// store prints them; neither can hold a NUL, so the boundary is unambiguous).
    pub content_sha256: [u8; 32],
}

fn content_sha256(payload_json: &str, metadata_json: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(payload_json.as_bytes());
    hasher.update([0u8]);
    hasher.update(metadata_json.as_bytes());
    hasher.finalize().into()
}

impl Fingerprint {
    pub fn of_envelope(envelope: &Envelope) -> Fingerprint {
        Fingerprint {
            event_id: Uuid::from_bytes(envelope.event_id),
            stream_type: envelope.stream_type.clone(),
            stream_id: envelope.stream_id.clone(),
            version: envelope.version,
            event_type: envelope.event_type.clone(),
            schema_version: envelope.schema_version,
            recorded_at_unix_ns: envelope.recorded_at_unix_ns,
            content_sha256: content_sha256(&envelope.payload_json, &envelope.metadata_json),
        }
    }

    pub fn of_stored(event: &StoredEvent) -> Fingerprint {
        Fingerprint {
            event_id: event.event_id,
            stream_type: event.stream_type.clone(),
            stream_id: event.stream_id.clone(),
            version: event.version as u64,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version as u32,
            recorded_at_unix_ns: event.recorded_at.unix_timestamp_nanos(),
            content_sha256: content_sha256(&event.payload_json, &event.metadata_json),
        }
    }
}

/// The store's fingerprints at positions `after < position <= up_to`, by position: one
/// primary-key range query. Callers keep the range to a batch (a page or less); the store
/// hashes the payloads, so only 32 bytes of each travel.
pub async fn fingerprints(
    pool: &PgPool,
    after: u64,
    up_to: u64,
) -> Result<HashMap<u64, Fingerprint>, StoreError> {
    fingerprints_wanted(pool, &projections::Reads::All, after, up_to).await
}

/// Like [`fingerprints`], only of the events `reads` wants, and of the event at `up_to`
/// whatever it is: a filtered reader learns in the same one query which of the range's
/// events it must have been sent, and whether the message that ends its batch (up to which
/// it moves its checkpoint) is the store's event.
pub async fn fingerprints_wanted(
    pool: &PgPool,
    reads: &projections::Reads,
    after: u64,
    up_to: u64,
) -> Result<HashMap<u64, Fingerprint>, StoreError> {
    type Row = (i64, Uuid, String, String, i64, String, i32, OffsetDateTime, Vec<u8>);
    const SELECT: &str = "SELECT global_position, event_id, stream_type, stream_id, version,
                event_type, schema_version, recorded_at,
                sha256(convert_to(payload::text, 'UTF8') || '\\x00'::bytea
                       || convert_to(metadata::text, 'UTF8'))";
    let wanted = store::wanted_parameters(reads);
    let sql = match wanted {
        None => format!(
            "{SELECT} FROM events WHERE global_position > $1 AND global_position <= $2 LIMIT $3"
        ),
        Some(_) => format!(
            "{SELECT} FROM {} WHERE (global_position = $2 OR {}) LIMIT $3",
            store::RANGE_BY_POSITION,
            store::WANTED_CONDITION
        ),
    };
    // The range is one batch, so the limit only bounds what a corrupt range could return.
    let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(up_to).unwrap_or(i64::MAX))
        .bind(i64::try_from(up_to.saturating_sub(after)).unwrap_or(i64::MAX));
    if let Some((types, pair_types, pair_events)) = wanted {
        query = query.bind(types).bind(pair_types).bind(pair_events);
    }
    let query = query.fetch_all(pool);
    let rows = tokio::time::timeout(store::READ_TIMEOUT, query)
        .await
        .map_err(|_| StoreError::Timeout)??;
    let mut by_position = HashMap::with_capacity(rows.len());
    for (position, event_id, stream_type, stream_id, version, event_type, schema, at, digest) in
        rows
    {
        let Ok(content_sha256) = <[u8; 32]>::try_from(digest.as_slice()) else { continue };
        let fingerprint = Fingerprint {
            event_id,
            stream_type,
            stream_id,
            version: version as u64,
            event_type,
            schema_version: schema as u32,
            recorded_at_unix_ns: at.unix_timestamp_nanos(),
            content_sha256,
        };
        by_position.insert(position as u64, fingerprint);
    }
    Ok(by_position)
}

/// Whether `envelope`, found at stream sequence `sequence`, is the store's event there.
pub fn is_the_stores(
    sequence: u64,
    envelope: &Envelope,
    stored: &HashMap<u64, Fingerprint>,
) -> bool {
    envelope.global_position == sequence
        && stored.get(&sequence).is_some_and(|fingerprint| {
            fingerprint.event_id.as_bytes() == &envelope.event_id
                && *fingerprint == Fingerprint::of_envelope(envelope)
        })
}

/// The `NOTIFY` channel on which readers tell the namespace's relay where they refused a
/// message.
pub fn refused_channel(namespace: &str) -> String {
    format!("{namespace}_bus_refused")
}

/// Tells the relay (whichever process runs it) that the message at `sequence` was refused.
/// Best effort: a reader goes on with the store's event whether or not this arrives, and
/// the relay checks its stream on its own too.
pub async fn report_refused(pool: &PgPool, namespace: &str, sequence: u64) {
    let notify = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(refused_channel(namespace))
        .bind(sequence.to_string())
        .execute(pool);
    match tokio::time::timeout(store::READ_TIMEOUT, notify).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, sequence, "cannot tell the relay of a refused bus message")
        }
        Err(_) => tracing::warn!(sequence, "telling the relay of a refused bus message timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredEvent {
        StoredEvent {
            global_position: 7,
            stream_type: "mission".into(),
            stream_id: "m-1".into(),
            version: 2,
            event_id: Uuid::now_v7(),
            event_type: "MissionStarted".into(),
            schema_version: 1,
            payload_json: r#"{"worker": "w1"}"#.into(),
            metadata_json: r#"{"actor": "test"}"#.into(),
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000)
                .unwrap(),
        }
    }

    fn store_of(event: &StoredEvent) -> HashMap<u64, Fingerprint> {
        HashMap::from([(event.global_position as u64, Fingerprint::of_stored(event))])
    }

    #[test]
    fn the_relays_copy_of_an_event_is_the_stores() {
        let event = stored();
        assert!(is_the_stores(7, &Envelope::from_stored(&event), &store_of(&event)));
    }

    #[test]
    fn a_forged_payload_under_the_real_event_id_is_not_the_stores() {
        let event = stored();
        let mut forged = Envelope::from_stored(&event);
        forged.event_type = "MissionCompleted".into();
        assert!(!is_the_stores(7, &forged, &store_of(&event)));
        let mut forged = Envelope::from_stored(&event);
        forged.payload_json = r#"{"worker": "w2"}"#.into();
        assert!(!is_the_stores(7, &forged, &store_of(&event)));
        // Moving bytes between payload and metadata changes the digest too.
        let mut forged = Envelope::from_stored(&event);
        forged.payload_json = r#"{"worker": "w1"}{"#.into();
        forged.metadata_json = r#""actor": "test"}"#.into();
        assert!(!is_the_stores(7, &forged, &store_of(&event)));
    }

    #[test]
    fn the_right_event_at_the_wrong_sequence_or_past_the_store_is_not_the_stores() {
        let event = stored();
        let envelope = Envelope::from_stored(&event);
        assert!(!is_the_stores(8, &envelope, &store_of(&event)));
        assert!(!is_the_stores(7, &envelope, &HashMap::new()));
    }
}
