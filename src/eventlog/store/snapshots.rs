//! The `snapshots` table (migration 0014, decision 0049): for each long stream, its
//! aggregate's state folded up to some version, so that a load reads that row and the
//! events after it, in one query, instead of the whole stream.
//!
//! The table is droppable: a row is only ever a shortcut to what the events say. A load uses
//! a row only when its `snapshot_version` is the one the code asks for and the stream's event
//! at the row's version is still the event it names; anything else reads the whole stream.
//! What the state means is the aggregate's business (`crate::eventlog::snapshot`); here it is
//! JSON.

use domain::{RecordedEvent, StreamId, StreamType};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{EventStore, READ_TIMEOUT, StoreError, recorded_event, to_i64};

/// A stored snapshot: the state after the event `event_id`, at `version` of its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub stream_type: StreamType,
    pub stream_id: StreamId,
    pub version: u64,
    pub event_id: Uuid,
    pub snapshot_version: u32,
    pub state: serde_json::Value,
}

/// A stream as read through its snapshot.
#[derive(Debug, Default)]
pub struct FromSnapshot {
    /// The stored state and the version it folds up to, when a usable one was found.
    pub snapshot: Option<(u64, serde_json::Value)>,
    /// The events after the snapshot; every event of the stream when there is none.
    pub events: Vec<RecordedEvent>,
    /// A snapshot of the wanted version was stored but did not match the log (its event is
    /// gone or another): it was ignored, and the whole stream read instead.
    pub mismatched: bool,
}

impl EventStore {
    /// The stream's snapshot at `snapshot_version` (if one is stored) and the events after
    /// it, in one query; without one, all its events. The snapshot's own event comes along
    /// to prove it still holds the event the snapshot names.
    pub async fn load_stream_from_snapshot(
        &self,
        stream_type: &StreamType,
        stream_id: &StreamId,
        snapshot_version: u32,
    ) -> Result<FromSnapshot, StoreError> {
        // One row at least whenever a snapshot is stored (the lateral join is outer), so a
        // snapshot past the stream's end is seen, not taken for an empty stream. The state
        // comes only on the snapshot's own event's row.
        let rows = sqlx::query(
            "SELECT s.version AS snapshot_at, s.event_id AS snapshot_event_id,
                    CASE WHEN e.version = s.version THEN s.state END AS snapshot_state, e.*
             FROM (SELECT 1) AS one
             LEFT JOIN snapshots s
                 ON s.stream_type = $1 AND s.stream_id = $2 AND s.snapshot_version = $3
             LEFT JOIN LATERAL (
                 SELECT * FROM events
                 WHERE stream_type = $1 AND stream_id = $2 AND version >= coalesce(s.version, 1)
                 ORDER BY version
             ) e ON true
             ORDER BY e.version",
        )
        .bind(stream_type.as_str())
        .bind(stream_id.as_str())
        .bind(snapshot_version as i32);
        let rows = bounded!(self.pool, |c| rows.fetch_all(c))?;
        let mut loaded = FromSnapshot::default();
        let mut rows = rows.iter().peekable();
        let Some(first) = rows.peek() else { return Ok(loaded) };
        if let Some(at) = first.try_get::<Option<i64>, _>("snapshot_at")? {
            let named: Uuid = first.try_get("snapshot_event_id")?;
            let event: Option<Uuid> = first.try_get("event_id")?;
            let version: Option<i64> = first.try_get("version")?;
            let state: Option<serde_json::Value> = first.try_get("snapshot_state")?;
            match state {
                Some(state) if version == Some(at) && event == Some(named) => {
                    loaded.snapshot = Some((at as u64, state));
                    rows.next();
                }
                _ => {
                    let events = stream_up_to(&self.pool, stream_type, stream_id, None).await?;
                    return Ok(FromSnapshot { snapshot: None, events, mismatched: true });
                }
            }
        }
        for row in rows {
            if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
                loaded.events.push(recorded_event(row)?);
            }
        }
        Ok(loaded)
    }
}

/// A stream's events in version order, up to `version_max` when given.
pub async fn stream_up_to(
    pool: &PgPool,
    stream_type: &StreamType,
    stream_id: &StreamId,
    version_max: Option<u64>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    stream_range(pool, stream_type, stream_id, 0, version_max).await
}

/// A stream's events after version `after`, in version order, up to `version_max` when
/// given: the tail of a long stream without reading its start.
pub async fn stream_range(
    pool: &PgPool,
    stream_type: &StreamType,
    stream_id: &StreamId,
    after: u64,
    version_max: Option<u64>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM events
         WHERE stream_type = $1 AND stream_id = $2 AND version > $3 AND version <= $4
         ORDER BY version",
    )
    .bind(stream_type.as_str())
    .bind(stream_id.as_str())
    .bind(to_i64(after))
    .bind(version_max.map_or(i64::MAX, to_i64));
    let rows = bounded!(pool, |c| rows.fetch_all(c))?;
    rows.iter().map(recorded_event).collect()
}

/// Stores `snapshot` as its stream's snapshot, unless the one stored is of the same
/// `snapshot_version`, at least as far along and still matching the log (two writers racing:
/// the later version wins), or with `replace`, whatever is stored (a loader found it
/// unreadable). Returns whether it was written.
pub async fn save(pool: &PgPool, snapshot: &Snapshot, replace: bool) -> Result<bool, StoreError> {
    let query = sqlx::query(
        "INSERT INTO snapshots (stream_type, stream_id, version, event_id, snapshot_version, state)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (stream_type, stream_id) DO UPDATE SET
             version = EXCLUDED.version, event_id = EXCLUDED.event_id,
             snapshot_version = EXCLUDED.snapshot_version, state = EXCLUDED.state,
             taken_at = now()
         WHERE $7 OR snapshots.snapshot_version <> EXCLUDED.snapshot_version
            OR snapshots.version < EXCLUDED.version
            OR NOT EXISTS (
                SELECT 1 FROM events e
                WHERE e.stream_type = snapshots.stream_type AND e.stream_id = snapshots.stream_id
                  AND e.version = snapshots.version AND e.event_id = snapshots.event_id)",
    )
    .bind(snapshot.stream_type.as_str())
    .bind(snapshot.stream_id.as_str())
    .bind(to_i64(snapshot.version))
    .bind(snapshot.event_id)
    .bind(snapshot.snapshot_version as i32)
    .bind(&snapshot.state)
    .bind(replace);
    let done = bounded!(pool, |c| query.execute(c))?;
    Ok(done.rows_affected() > 0)
}

/// How many snapshots are stored.
pub async fn count(pool: &PgPool) -> Result<u64, StoreError> {
    let query = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM snapshots");
    Ok(bounded!(pool, |c| query.fetch_one(c))? as u64)
}

/// Up to `limit` stored snapshots: all of them when there are no more, else a random
/// sample. In stream order, so a report lists them the same way each time.
pub async fn sample(pool: &PgPool, limit: u32) -> Result<Vec<Snapshot>, StoreError> {
    let query = sqlx::query(
        "SELECT * FROM (
             SELECT stream_type, stream_id, version, event_id, snapshot_version, state
             FROM snapshots
             ORDER BY CASE WHEN (SELECT count(*) FROM snapshots) > $1 THEN random() END
             LIMIT $1) chosen
         ORDER BY stream_type, stream_id",
    )
    .bind(i64::from(limit));
    let rows = bounded!(pool, |c| query.fetch_all(c))?;
    rows.iter()
        .map(|row| {
            let stream_type: String = row.try_get("stream_type")?;
            let stream_id: String = row.try_get("stream_id")?;
            let corrupt = |e: domain::NameError| {
                StoreError::Corrupt(format!("snapshot {stream_type}/{stream_id}: {e}"))
            };
            Ok(Snapshot {
                stream_type: StreamType::parse(stream_type.clone()).map_err(corrupt)?,
                stream_id: StreamId::parse(stream_id.clone()).map_err(corrupt)?,
                version: row.try_get::<i64, _>("version")? as u64,
                event_id: row.try_get("event_id")?,
                snapshot_version: row.try_get::<i32, _>("snapshot_version")? as u32,
                state: row.try_get("state")?,
            })
        })
        .collect()
}
