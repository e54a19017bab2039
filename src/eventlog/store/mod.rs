//! The PostgreSQL event store: appends (through the group committer), stream loads and reads
//! of the global log by position.
//!
//! It is the only source of truth (design invariant 1). Appends go through one committer task
//! per process ([`committer`]), which assigns gapless global positions from the `head` row;
//! reads here are plain queries, safe to run from any number of tasks, because a reader that
//! sees position N can never later see a smaller one appear (see `committer` for why).

pub mod canonical;
mod committer;
mod error;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use domain::{EventMetadata, ExpectedVersion, NewEvent, RecordedEvent, StreamId, StreamType};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use committer::{CommitterConfig, CommitterStats};
pub use error::{AppendError, StoreError};
pub use validate::{
    ACTOR_BYTES_MAX, APPEND_EVENTS_MAX, BATCH_PAYLOAD_BYTES_MAX, EVENT_PAYLOAD_BYTES_MAX,
    EVENT_TYPE_LEN_MAX, GROUP_APPENDS_MAX, validate,
};

/// Longest one read of the log may take on the client's side: a little over the sessions'
/// `statement_timeout` (60 s), so a slow statement ends with the server's definite error
/// first, and only a read on a dead connection (half-open: the server never answers, and
/// sqlx has no client-side keepalive) ends here, its connection closed rather than pooled.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(65);

/// Runs `$run`, an expression reading through `$connection`, on a connection of `$pool`
/// within [`READ_TIMEOUT`] (design invariant 11: every outside call has a timeout).
macro_rules! bounded {
    ($pool:expr, |$connection:ident| $run:expr) => {{
        let mut pooled = $pool.acquire().await?;
        let $connection = &mut *pooled;
        match tokio::time::timeout(READ_TIMEOUT, $run).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => {
                pooled.close_on_drop();
                Err(StoreError::Timeout)
            }
        }
    }};
}

pub mod chain;
pub mod read_ahead;
pub mod snapshots;
pub mod transfer;

/// One command's append: events for one stream, checked against the version it expects.
#[derive(Debug, Clone)]
pub struct Append {
    pub stream_type: StreamType,
    pub stream_id: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Copied onto every event. Its `command_id`, when set, makes the append idempotent.
    pub metadata: EventMetadata,
}

/// What an append did. A repeated command id gets the first execution's outcome back, with
/// `duplicate` set and nothing appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub stream_type: StreamType,
    pub stream_id: StreamId,
    pub first_version: u64,
    pub last_version: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub duplicate: bool,
}

/// A moment of the log, for reading a stream as it stood then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Right after the event at this global position was appended.
    Position(u64),
    /// At this time: the events recorded at or before it.
    Time(time::OffsetDateTime),
}

/// Cheap to clone: a pool and a channel to the committer.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    committer: mpsc::Sender<committer::Pending>,
    notify_channel: Arc<str>,
    stats: Arc<CommitterStats>,
}

impl EventStore {
    /// Starts the committer task. It runs until every clone of the store is dropped, then
    /// commits what is still queued and ends; await the handle to know it has.
    pub fn start(
        pool: PgPool,
        namespace: &str,
        config: CommitterConfig,
    ) -> (EventStore, JoinHandle<()>) {
        let notify_channel: Arc<str> = notify_channel(namespace).into();
        let stats = Arc::new(CommitterStats::default());
        let (sender, handle) =
            committer::spawn(pool.clone(), notify_channel.clone(), config, stats.clone());
        (EventStore { pool, committer: sender, notify_channel, stats }, handle)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How many transactions the committer ran, for how many commands.
    pub fn committer_stats(&self) -> &CommitterStats {
        &self.stats
    }

    /// The `LISTEN` channel on which every commit announces its last position.
    pub fn notify_channel(&self) -> &str {
        &self.notify_channel
    }

    /// Appends one command's events. Resolves once they are durably committed (or refused).
    pub async fn append(&self, append: Append) -> Result<Appended, AppendError> {
        let encoded = validate::encode(&append)?;
        let bytes = encoded.bytes;
        let mut appended = self.commit(vec![append], vec![encoded], bytes).await?;
        Ok(appended.pop().expect("one outcome per append"))
    }

    /// Appends many commands' events (to one stream each, any number of streams) in one
    /// transaction: all of them or none. Each append is checked against the version it
    /// expects, after those before it in the list; a conflict on any refuses the whole group
    /// with that conflict. An append whose command id was stored before is answered with its
    /// first outcome (`duplicate` set) and appends nothing, so a group can be re-sent safely.
    /// The group still shares its transaction, and its fsync, with other commands.
    ///
    /// Outcomes come back in the order of `appends`. At most [`GROUP_APPENDS_MAX`] appends and
    /// [`BATCH_PAYLOAD_BYTES_MAX`] payload bytes; an empty group appends nothing.
    pub async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<Appended>, AppendError> {
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = validate::encode_group(&appends)?;
        let bytes = encoded.iter().map(|append| append.bytes).sum();
        self.commit(appends, encoded, bytes).await
    }

    async fn commit(
        &self,
        group: Vec<Append>,
        encoded: Vec<validate::Encoded>,
        bytes: usize,
    ) -> Result<Vec<Appended>, AppendError> {
        let (reply, answer) = oneshot::channel();
        let pending = committer::Pending { group, encoded, bytes, reply };
        self.committer.send(pending).await.map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// The outcome of a command id's first execution, if it had one (with `duplicate` set).
    pub async fn command_outcome(&self, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        command_outcome(&mut connection, command_id).await
    }

    /// A stream's events in version order, up to `version_max` when given.
    pub async fn load_stream(
        &self,
        stream_type: &StreamType,
        stream_id: &StreamId,
        version_max: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        snapshots::stream_up_to(&self.pool, stream_type, stream_id, version_max).await
    }

    /// A stream's events as the log held them at `as_of`, in version order: those at or before
    /// a global position, or recorded at or before a time.
    pub async fn load_stream_as_of(
        &self,
        stream_type: &StreamType,
        stream_id: &StreamId,
        as_of: AsOf,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let condition = match as_of {
            AsOf::Position(_) => "global_position <= $3",
            AsOf::Time(_) => "recorded_at <= $3",
        };
        let sql = format!(
            "SELECT * FROM events WHERE stream_type = $1 AND stream_id = $2 AND {condition}
             ORDER BY version"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream_type.as_str())
            .bind(stream_id.as_str());
        let query = match as_of {
            AsOf::Position(position) => query.bind(to_i64(position)),
            AsOf::Time(at) => query.bind(at),
        };
        let rows = bounded!(self.pool, |c| query.fetch_all(c))?;
        rows.iter().map(recorded_event).collect()
    }

    /// Many streams of one type in one query, each in version order; a stream without events
    /// is absent from the answer.
    pub async fn load_streams(
        &self,
        stream_type: &StreamType,
        stream_ids: &[StreamId],
    ) -> Result<HashMap<StreamId, Vec<RecordedEvent>>, StoreError> {
        let ids: Vec<&str> = stream_ids.iter().map(StreamId::as_str).collect();
        // One index lookup per stream, by equality: with `stream_id = ANY(..)` a plan cached
        // while the table was small can scan every stream of the type, and that scan grows
        // with the log.
        let rows = sqlx::query(
            "SELECT e.* FROM unnest($2::text[]) AS wanted(stream_id)
             CROSS JOIN LATERAL (
                 SELECT * FROM events
                 WHERE stream_type = $1 AND stream_id = wanted.stream_id
                 ORDER BY version
             ) e",
        )
        .bind(stream_type.as_str())
        .bind(&ids);
        let rows = bounded!(self.pool, |c| rows.fetch_all(c))?;
        let mut streams: HashMap<StreamId, Vec<RecordedEvent>> = HashMap::new();
        for row in &rows {
            let event = recorded_event(row)?;
            streams.entry(event.stream_id.clone()).or_default().push(event);
        }
        Ok(streams)
    }

    /// Up to `limit` events with a position greater than `after`, in position order.
    pub async fn read_all(&self, after: u64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all(&self.pool, after, limit).await
    }

    /// The last position handed out, which is also the last committed one.
    pub async fn head(&self) -> Result<u64, StoreError> {
        head(&self.pool).await
    }
}

/// Up to `limit` events of streams of `stream_type` with a position greater than `after`, in
/// position order: how a per-process cache of one small aggregate (API keys, agent kinds)
/// loads and heals itself without following the whole log. The `(stream_type, stream_id,
/// version)` index narrows it to that type.
pub async fn read_stream_type(
    pool: &PgPool,
    stream_type: &StreamType,
    after: u64,
    limit: u32,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM events WHERE stream_type = $1 AND global_position > $2
         ORDER BY global_position LIMIT $3",
    )
    .bind(stream_type.as_str())
    .bind(to_i64(after))
    .bind(i64::from(limit));
    let rows = bounded!(pool, |c| rows.fetch_all(c))?;
    rows.iter().map(recorded_event).collect()
}

/// The `NOTIFY` channel of a namespace.
pub fn notify_channel(namespace: &str) -> String {
    format!("{namespace}_events")
}

pub async fn head(pool: &PgPool) -> Result<u64, StoreError> {
    let position: i64 =
        bounded!(pool, |c| sqlx::query_scalar("SELECT position FROM head").fetch_one(c))?;
    Ok(position as u64)
}

pub async fn read_all(
    pool: &PgPool,
    after: u64,
    limit: u32,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_range(pool, after, u64::MAX, limit).await
}

/// Like [`read_all`], but only events in `after < position <= up_to`. At most `limit`
/// events and about [`PAGE_BYTES_MAX`] bytes: every page read is bounded in both.
pub async fn read_range(
    pool: &PgPool,
    after: u64,
    up_to: u64,
    limit: u32,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM events WHERE global_position > $1 AND global_position <= $2
         ORDER BY global_position LIMIT $3",
    )
    .bind(to_i64(after))
    .bind(to_i64(up_to))
    .bind(i64::from(limit));
    let rows = bounded!(pool, |c| take_page(rows.fetch(c), row_size))?;
    rows.iter().map(recorded_event).collect()
}

/// A page of the events a projector reads ([`read_wanted`]): every one of them in
/// `after < position <= through`, in position order. `through` is the range's end when the
/// page holds all of it, or the last event's position when the page was full.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<RecordedEvent>,
    pub through: u64,
}

/// The rows of `$1 < position <= $2`, read in position order along the primary key. The
/// `OFFSET 0` keeps a condition on the stream type outside: otherwise the planner may read
/// that type's entries in the `(stream_type, stream_id, version)` index over the whole log,
/// a cost that grows with the log, not with the range.
pub(crate) const RANGE_BY_POSITION: &str = "(SELECT * FROM events
     WHERE global_position > $1 AND global_position <= $2
     ORDER BY global_position OFFSET 0) AS events";

/// The condition that keeps only the events a projector reads, over parameters `$4`
/// (stream types read), `$5` and `$6` (stream type and event type pairs of the stream types
/// read only in part). Applied to [`RANGE_BY_POSITION`]: no index on the stream type, which
/// every append would pay for; a read scans each row of its range once.
pub(crate) const WANTED_CONDITION: &str = "(stream_type = ANY($4::text[])
     AND (stream_type <> ALL($5::text[])
          OR (stream_type, event_type) IN (SELECT * FROM unnest($5::text[], $6::text[]))))";

/// Most positions one read of [`read_wanted`] scans: the rows of other stream types it
/// passes cost it as much as those it returns.
pub const WANTED_SCAN_POSITIONS_MAX: u64 = 20_000;

/// The parameters of [`WANTED_CONDITION`] for `reads`; `None` when it reads everything.
pub(crate) fn wanted_parameters(
    reads: &projections::Reads,
) -> Option<(Vec<String>, Vec<String>, Vec<String>)> {
    let projections::Reads::Streams(streams) = reads else { return None };
    let (mut types, mut pair_types, mut pair_events) = (Vec::new(), Vec::new(), Vec::new());
    for wanted in *streams {
        types.push(wanted.stream_type.to_owned());
        for event_type in wanted.event_types.into_iter().flatten() {
            pair_types.push(wanted.stream_type.to_owned());
            pair_events.push((*event_type).to_owned());
        }
    }
    Some((types, pair_types, pair_events))
}

/// Like [`read_range`], only the events `reads` wants; bounded the same way, and to
/// [`WANTED_SCAN_POSITIONS_MAX`] positions. Returns how far the page covers the range, so
/// that a reader moves its checkpoint past the events it does not read without reading them.
pub async fn read_wanted(
    pool: &PgPool,
    reads: &projections::Reads,
    after: u64,
    up_to: u64,
    limit: u32,
) -> Result<Page, StoreError> {
    let sql = match wanted_parameters(reads) {
        None => "SELECT * FROM events WHERE global_position > $1 AND global_position <= $2
                 ORDER BY global_position LIMIT $3"
            .to_owned(),
        Some(_) => format!(
            "SELECT * FROM {RANGE_BY_POSITION} WHERE {WANTED_CONDITION}
             ORDER BY global_position LIMIT $3"
        ),
    };
    let up_to = up_to.min(after.saturating_add(WANTED_SCAN_POSITIONS_MAX));
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to_i64(after))
        .bind(to_i64(up_to))
        .bind(i64::from(limit));
    if let Some((types, pair_types, pair_events)) = wanted_parameters(reads) {
        rows = rows.bind(types).bind(pair_types).bind(pair_events);
    }
    let (rows, cut) = bounded!(pool, |c| take_page_cut(rows.fetch(c), row_size))?;
    let events = rows.iter().map(recorded_event).collect::<Result<Vec<_>, _>>()?;
    let through = match events.last() {
        Some(last) if cut || events.len() >= limit as usize => last.global_position,
        _ => up_to,
    };
    Ok(Page { events, through })
}

fn row_size(row: &PgRow) -> usize {
    let raw = |column| {
        row.try_get_raw(column).ok().and_then(|v| v.as_bytes().ok()).map_or(0, <[u8]>::len)
    };
    raw("payload") + raw("metadata")
}

/// How long a command's outcome is kept by default, for idempotent repeats: a command id
/// (an `idempotency_key`) repeated within this window answers with its first outcome.
pub const COMMAND_OUTCOMES_KEEP_H_DEFAULT: u64 = 7 * 24;
/// Outcomes deleted per statement when pruning.
pub const PRUNE_BATCH_ROWS: i64 = 10_000;

/// Deletes stored command outcomes older than `keep`, in batches of [`PRUNE_BATCH_ROWS`];
/// returns how many. Past the window a repeated command id is a new command again (a repeated
/// enqueue then finds its mission existing: 409, never a second mission). A claim of a
/// transaction still running is never touched (`SKIP LOCKED`).
pub async fn prune_command_outcomes(
    pool: &PgPool,
    keep: std::time::Duration,
) -> Result<u64, StoreError> {
    let keep_s = keep.as_secs_f64();
    let mut deleted = 0;
    loop {
        // Old rows sit first in the heap (appended in time order), so this scan stops early
        // without an index on `recorded_at`, which every append would pay for.
        let done = sqlx::query(
            "DELETE FROM commands WHERE command_id IN (
                SELECT command_id FROM commands
                WHERE recorded_at < now() - make_interval(secs => $1) AND last_position IS NOT NULL
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(keep_s)
        .bind(PRUNE_BATCH_ROWS)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += done;
        if done < PRUNE_BATCH_ROWS as u64 {
            return Ok(deleted);
        }
    }
}

/// Most bytes of payload and metadata one page of the log holds in memory: 1,000 events of
/// up to 256 KiB each would otherwise be 256 MiB at once. A page holds at least one event,
/// so a reader always moves on.
pub const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Collects rows from `rows` until [`PAGE_BYTES_MAX`] is passed (`size` measures one). The
/// rest of the result is dropped unread: a caller pages on from the last row it got.
async fn take_page<T>(
    rows: impl futures::Stream<Item = Result<T, sqlx::Error>> + Unpin,
    size: impl Fn(&T) -> usize,
) -> Result<Vec<T>, sqlx::Error> {
    take_page_cut(rows, size).await.map(|(page, _)| page)
}

/// [`take_page`], and whether it stopped at [`PAGE_BYTES_MAX`] (rows may be left).
async fn take_page_cut<T>(
    mut rows: impl futures::Stream<Item = Result<T, sqlx::Error>> + Unpin,
    size: impl Fn(&T) -> usize,
) -> Result<(Vec<T>, bool), sqlx::Error> {
    use futures::TryStreamExt;
    let (mut page, mut bytes) = (Vec::new(), 0);
    while let Some(row) = rows.try_next().await? {
        bytes += size(&row);
        page.push(row);
        if bytes >= PAGE_BYTES_MAX {
            return Ok((page, true));
        }
    }
    Ok((page, false))
}

fn stored_size(event: &StoredEvent) -> usize {
    event.payload_json.len() + event.metadata_json.len()
}

/// An event as stored, with payload and metadata left as JSON text: for copying events
/// elsewhere without parsing and re-serialising them (the relay's hot path).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload_json: String,
    pub metadata_json: String,
    pub recorded_at: time::OffsetDateTime,
}

/// The query of [`StoredEvent`]s in `$1 < position <= $2`, at most `$3`, with an optional
/// extra condition (a literal, so that each variant is one prepared statement with its own plan).
macro_rules! select_stored {
    ($condition:literal) => {
        concat!(
            "SELECT global_position, stream_type, stream_id, version, event_id, event_type,
                    schema_version, payload::text AS payload_json,
                    metadata::text AS metadata_json, recorded_at
             FROM events WHERE global_position > $1 AND global_position <= $2 ",
            $condition,
            " ORDER BY global_position LIMIT $3"
        )
    };
}

/// Like [`read_range`], as [`StoredEvent`]s.
pub async fn read_range_stored(
    pool: &PgPool,
    after: u64,
    up_to: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let events = sqlx::query_as(select_stored!(""))
        .bind(to_i64(after))
        .bind(to_i64(up_to))
        .bind(i64::from(limit));
    bounded!(pool, |c| take_page(events.fetch(c), stored_size))
}

/// Which streams a reader wants: any of `stream_types` (all when empty), and only the stream
/// `stream_id` when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub stream_types: Vec<StreamType>,
    pub stream_id: Option<StreamId>,
}

impl Selection {
    pub fn matches(&self, stream_type: &str, stream_id: &str) -> bool {
        (self.stream_types.is_empty()
            || self.stream_types.iter().any(|t| t.as_str() == stream_type))
            && self.stream_id.as_ref().is_none_or(|id| id.as_str() == stream_id)
    }
}

/// Like [`read_range_stored`], only events of the selected streams. `limit` bounds the rows
/// returned, not the rows scanned; a stream id alone is refused by the callers at the edge
/// (no index leads to it without its type).
pub async fn read_range_stored_selected(
    pool: &PgPool,
    selection: &Selection,
    after: u64,
    up_to: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let types: Vec<String> = selection.stream_types.iter().map(|t| t.as_str().to_owned()).collect();
    // With types given, a stream id leads to the (stream_type, stream_id, version) index.
    let sql = match (types.is_empty(), selection.stream_id.is_some()) {
        (true, false) => select_stored!(""),
        (false, false) => select_stored!("AND stream_type = ANY($4)"),
        (true, true) => select_stored!("AND stream_id = $4"),
        (false, true) => select_stored!("AND stream_type = ANY($4) AND stream_id = $5"),
    };
    let mut query =
        sqlx::query_as(sql).bind(to_i64(after)).bind(to_i64(up_to)).bind(i64::from(limit));
    if !types.is_empty() {
        query = query.bind(types);
    }
    if let Some(id) = &selection.stream_id {
        query = query.bind(id.as_str().to_owned());
    }
    bounded!(pool, |c| take_page(query.fetch(c), stored_size))
}

/// A command id's stored outcome, on a given connection (the committer's transaction, or
/// any other). `None` for an id never seen, or claimed by a transaction still running.
pub(crate) async fn command_outcome(
    connection: &mut sqlx::PgConnection,
    command_id: Uuid,
) -> Result<Option<Appended>, StoreError> {
    let outcomes = command_outcomes(connection, &[command_id]).await?;
    Ok(outcomes.into_iter().next().map(|(_, appended)| appended))
}

/// The stored outcomes of many command ids in one query; ids never seen (or claimed by a
/// transaction still running) are absent.
pub(crate) async fn command_outcomes(
    connection: &mut sqlx::PgConnection,
    command_ids: &[Uuid],
) -> Result<Vec<(Uuid, Appended)>, StoreError> {
    type Row = (Uuid, String, String, i64, i64, i64, i64);
    // `= ANY` on the primary key: an index lookup per id, whatever the table's size.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT command_id, stream_type, stream_id, first_version, last_version,
                first_position, last_position
         FROM commands WHERE command_id = ANY($1::uuid[]) AND last_position IS NOT NULL",
    )
    .bind(command_ids)
    .fetch_all(connection)
    .await?;
    rows.into_iter()
        .map(|(id, stream_type, stream_id, first_version, last_version, first, last)| {
            let corrupt = |e: domain::NameError| StoreError::Corrupt(format!("command {id}: {e}"));
            let appended = Appended {
                stream_type: StreamType::parse(stream_type).map_err(corrupt)?,
                stream_id: StreamId::parse(stream_id).map_err(corrupt)?,
                first_version: first_version as u64,
                last_version: last_version as u64,
                first_position: first as u64,
                last_position: last as u64,
                duplicate: true,
            };
            Ok((id, appended))
        })
        .collect()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    let position: i64 = row.try_get("global_position")?;
    let stream_type = StreamType::parse(row.try_get::<String, _>("stream_type")?)
        .map_err(|e| corrupt(format!("event {position}: {e}")))?;
    let stream_id = StreamId::parse(row.try_get::<String, _>("stream_id")?)
        .map_err(|e| corrupt(format!("event {position}: {e}")))?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    let metadata = serde_json::from_value(metadata)
        .map_err(|e| corrupt(format!("event {position}: metadata: {e}")))?;
    Ok(RecordedEvent {
        global_position: position as u64,
        stream_type,
        stream_id,
        version: row.try_get::<i64, _>("version")? as u64,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get::<i32, _>("schema_version")? as u32,
        payload: row.try_get("payload")?,
        metadata,
        recorded_at: row.try_get("recorded_at")?,
    })
}
