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
//!
//! A committed event never changes, so what the store answered is kept, per database, for
//! the last [`FINGERPRINTS_KEPT`] positions ([`Remembered`]): a process's readers (seven
//! projectors and the live feed) all check the same positions within milliseconds of each
//! other, and the relay, which has just read those events from the store to publish them,
//! [`remember`]s them first. Where the relay runs in the same process, readers then check
//! every message without a query; elsewhere the first reader of a batch asks the store for
//! all of them. Measured under `brain bench missions`, these queries were a fifth of
//! PostgreSQL's time and decoding their rows a quarter of the projectors' CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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

/// Positions whose fingerprints are kept per database: several seconds of events at the
/// pipeline's peak, so readers a few batches behind the relay still find theirs.
pub const FINGERPRINTS_KEPT: usize = 16_384;

/// Databases whose fingerprints a process keeps at once (a serve has one; a test process
/// many, one after another).
const DATABASES_KEPT: usize = 64;

/// The store's fingerprints of the last [`FINGERPRINTS_KEPT`] positions asked for or
/// published, for one database: a ring indexed by position.
pub struct Remembered {
    slots: Vec<Option<(u64, Fingerprint)>>,
}

impl Remembered {
    fn new(capacity: usize) -> Remembered {
        Remembered { slots: vec![None; capacity.max(1)] }
    }

    fn slot(&self, position: u64) -> usize {
        (position % self.slots.len() as u64) as usize
    }

    fn keep(&mut self, position: u64, fingerprint: Fingerprint) {
        let slot = self.slot(position);
        self.slots[slot] = Some((position, fingerprint));
    }

    /// The fingerprints of every position in `after < position <= up_to`, if all are kept.
    fn all(&self, after: u64, up_to: u64) -> Option<HashMap<u64, Fingerprint>> {
        if up_to.saturating_sub(after) > self.slots.len() as u64 {
            return None;
        }
        let mut found = HashMap::with_capacity((up_to - after) as usize);
        for position in after + 1..=up_to {
            match &self.slots[self.slot(position)] {
                Some((kept, fingerprint)) if *kept == position => {
                    found.insert(position, fingerprint.clone());
                }
                _ => return None,
            }
        }
        Some(found)
    }
}

/// The kept fingerprints of the database `pool` connects to.
fn remembered(pool: &PgPool) -> Arc<Mutex<Remembered>> {
    type Registry = Mutex<HashMap<String, Arc<Mutex<Remembered>>>>;
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let options = pool.connect_options();
    let database = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    let mut registry = REGISTRY.get_or_init(Registry::default).lock().expect("not poisoned");
    if !registry.contains_key(&database) && registry.len() >= DATABASES_KEPT {
        registry.clear();
    }
    let entry = registry.entry(database);
    entry.or_insert_with(|| Arc::new(Mutex::new(Remembered::new(FINGERPRINTS_KEPT)))).clone()
}

/// Keeps the fingerprints of events just read from the store (the relay, before publishing
/// them), so that readers in this process check those messages without asking again.
pub fn remember(pool: &PgPool, events: &[StoredEvent]) {
    if events.is_empty() {
        return;
    }
    let remembered = remembered(pool);
    let mut remembered = remembered.lock().expect("not poisoned");
    for event in events {
        remembered.keep(event.global_position as u64, Fingerprint::of_stored(event));
    }
}

/// The store's fingerprints at positions `after < position <= up_to`, by position: those
/// kept if every one is, else one primary-key range query. Callers keep the range to a
/// batch (a page or less); the store hashes the payloads, so only 32 bytes of each travel.
/// A position past the store's head has none, and costs a query each time it is asked for.
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
/// it moves its checkpoint) is the store's event. Answered from the kept fingerprints when
/// they hold the whole range.
pub async fn fingerprints_wanted(
    pool: &PgPool,
    reads: &projections::Reads,
    after: u64,
    up_to: u64,
) -> Result<HashMap<u64, Fingerprint>, StoreError> {
    let remembered = remembered(pool);
    let kept = remembered.lock().expect("not poisoned").all(after, up_to);
    if let Some(mut kept) = kept {
        metrics::counter!("brain_bus_fingerprints_total", "from" => "kept").increment(1);
        kept.retain(|position, fingerprint| {
            *position == up_to || reads.wants(&fingerprint.stream_type, &fingerprint.event_type)
        });
        return Ok(kept);
    }
    metrics::counter!("brain_bus_fingerprints_total", "from" => "store").increment(1);
    let found = fingerprints_stored(pool, reads, after, up_to).await?;
    let mut kept = remembered.lock().expect("not poisoned");
    for (position, fingerprint) in &found {
        kept.keep(*position, fingerprint.clone());
    }
    Ok(found)
}

async fn fingerprints_stored(
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

    fn at(position: i64) -> StoredEvent {
        StoredEvent { global_position: position, event_id: Uuid::now_v7(), ..stored() }
    }

    #[test]
    fn kept_fingerprints_answer_a_range_only_when_they_hold_all_of_it() {
        let mut kept = Remembered::new(4);
        for position in 1..=3 {
            kept.keep(position, Fingerprint::of_stored(&at(position as i64)));
        }
        let found = kept.all(0, 3).expect("1 to 3 kept");
        assert_eq!(
            found.keys().copied().collect::<std::collections::BTreeSet<_>>(),
            [1, 2, 3].into()
        );
        assert!(kept.all(0, 4).is_none(), "4 was never kept");
        assert!(kept.all(3, 3).is_some_and(|none| none.is_empty()));
        // A ring: 5 takes the place of 1, which is then no longer kept.
        kept.keep(5, Fingerprint::of_stored(&at(5)));
        assert!(kept.all(0, 2).is_none());
        assert!(kept.all(1, 3).is_some());
        assert!(kept.all(0, 9).is_none(), "wider than the ring");
    }

    #[test]
    fn a_message_is_checked_against_the_kept_fingerprint_like_the_stores() {
        let event = at(7);
        let mut kept = Remembered::new(16);
        kept.keep(7, Fingerprint::of_stored(&event));
        let stored = kept.all(6, 7).unwrap();
        assert!(is_the_stores(7, &Envelope::from_stored(&event), &stored));
        let mut forged = Envelope::from_stored(&event);
        forged.payload_json = r#"{"worker": "w2"}"#.into();
        assert!(!is_the_stores(7, &forged, &stored));
    }

    #[test]
    fn the_right_event_at_the_wrong_sequence_or_past_the_store_is_not_the_stores() {
        let event = stored();
        let envelope = Envelope::from_stored(&event);
        assert!(!is_the_stores(8, &envelope, &store_of(&event)));
        assert!(!is_the_stores(7, &envelope, &HashMap::new()));
    }
}
