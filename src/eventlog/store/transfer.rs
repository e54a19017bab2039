//! The log taken out and put back: the store's side of `brain events export | import`.
//!
//! An exported event is one JSON line, the envelope the API and the bus use
//! ([`domain::RecordedEvent`]'s fields) plus its `chain_hash` in hex; payload and metadata
//! are the store's own JSON text, passed through unparsed. [`read_page`] reads them in
//! position order, filtered.
//!
//! [`import`] writes such lines into a store, keeping every position, event id, version,
//! metadata, timestamp and chain hash, in one transaction: a file that is broken anywhere (a
//! line that does not parse, a position out of order, a stream version out of order, an
//! event whose content and predecessor do not give its chain hash, a trailer that disagrees)
//! is refused with the line and position at fault and changes nothing. The store must be
//! empty, or the file must continue its head exactly (its first position the head's next,
//! chained onto the head's hash). It is the only writer of `events` besides the committer:
//! it holds the head row's lock for its whole transaction, so no append interleaves.
//! Command outcomes (`commands`) are not part of the file: a command retried after an import
//! is not recognised as a repeat.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::chain::{Content, link};
use super::{READ_TIMEOUT, StoreError, canonical, to_i64};
use crate::eventlog::chain::{hex, parse_hash};

/// Events one page of an export reads, and one statement of an import writes.
pub const TRANSFER_PAGE_EVENTS: usize = 1_000;
/// Longest line an import reads: an event's payload is bounded far below it.
pub const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One event as exported.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    pub global_position: u64,
    pub stream_type: String,
    pub stream_id: String,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// Hex of the event chain's hash at this event.
    pub chain_hash: String,
}

/// The last line of an export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Events in the file.
    pub count: u64,
    /// The last event's position and chain hash (none in an empty export).
    pub last_position: Option<u64>,
    pub last_hash: Option<String>,
}

/// The trailer line: `{"trailer": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerLine {
    trailer: Trailer,
}

/// Which events an export takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Positions after this one…
    pub after: u64,
    /// …up to this one.
    pub up_to: u64,
    /// Only these stream types (all when empty).
    pub stream_types: Vec<String>,
    /// Recorded at or after this moment.
    pub since: Option<OffsetDateTime>,
    /// Recorded before this moment.
    pub until: Option<OffsetDateTime>,
}

/// Up to [`TRANSFER_PAGE_EVENTS`] selected events after `selection.after`, and the position
/// the page has read the log through (past events the filters left out): the next page
/// starts after it, and the export is done when it reaches `selection.up_to`.
pub async fn read_page(
    pool: &PgPool,
    selection: &Selection,
) -> Result<(Vec<ExportedEvent>, u64), StoreError> {
    if selection.after >= selection.up_to {
        return Ok((Vec::new(), selection.up_to));
    }
    // The filters apply within a window of positions, so a selective filter over a long log
    // still reads it in bounded steps rather than one long scan.
    let window_end = selection.up_to.min(selection.after + (TRANSFER_PAGE_EVENTS as u64) * 50);
    let types: Option<&[String]> =
        (!selection.stream_types.is_empty()).then_some(&selection.stream_types[..]);
    let query = sqlx::query(
        "SELECT global_position, stream_type, stream_id, version, event_id, event_type,
                schema_version, payload::text AS payload, metadata::text AS metadata,
                recorded_at, chain_hash
         FROM events WHERE global_position > $1 AND global_position <= $2
           AND ($3::text[] IS NULL OR stream_type = ANY($3))
           AND ($4::timestamptz IS NULL OR recorded_at >= $4)
           AND ($5::timestamptz IS NULL OR recorded_at < $5)
         ORDER BY global_position LIMIT $6",
    )
    .bind(to_i64(selection.after))
    .bind(to_i64(window_end))
    .bind(types)
    .bind(selection.since)
    .bind(selection.until)
    .bind(TRANSFER_PAGE_EVENTS as i64);
    let rows = bounded!(pool, |c| query.fetch_all(c))?;
    let full = rows.len() == TRANSFER_PAGE_EVENTS;
    let events = rows
        .iter()
        .map(|row| {
            let raw = |column: &str| -> Result<Box<RawValue>, StoreError> {
                let text: String = row.try_get(column)?;
                RawValue::from_string(text)
                    .map_err(|error| StoreError::Corrupt(format!("{column}: {error}")))
            };
            let hash: Option<Vec<u8>> = row.try_get("chain_hash")?;
            Ok(ExportedEvent {
                global_position: row.try_get::<i64, _>("global_position")? as u64,
                stream_type: row.try_get("stream_type")?,
                stream_id: row.try_get("stream_id")?,
                version: row.try_get::<i64, _>("version")? as u64,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                schema_version: row.try_get::<i32, _>("schema_version")? as u32,
                payload: raw("payload")?,
                metadata: raw("metadata")?,
                recorded_at: row.try_get("recorded_at")?,
                chain_hash: hash.map(|hash| hex(&hash)).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let reached = match events.last() {
        Some(last) if full => last.global_position,
        _ => window_end,
    };
    Ok((events, reached))
}

/// Why an import refused its file or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {what}")]
    Line { line: u64, what: String },
    #[error("line {line}, position {position}: {what}")]
    Event { line: u64, position: u64, what: String },
    #[error("the file ends without its trailer (cut off?) after {events} events")]
    NoTrailer { events: u64 },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store: {0}")]
    Database(#[from] sqlx::Error),
}

/// What an import wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub events: u64,
    pub first_position: Option<u64>,
    pub last_position: u64,
    pub last_hash: String,
}

/// Imports an export read from `input` (see the module's documentation); `progress` is told
/// the events written so far after each page.
pub async fn import(
    pool: &PgPool,
    input: impl BufRead,
    mut progress: impl FnMut(u64),
) -> Result<Imported, ImportError> {
    let mut tx = pool.begin().await?;
    let head = sqlx::query("SELECT position, chain_position, chain_hash FROM head FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let head_position = head.try_get::<i64, _>("position")? as u64;
    let chain_position = head.try_get::<i64, _>("chain_position")? as u64;
    let head_hash: Vec<u8> = head.try_get("chain_hash")?;
    if chain_position != head_position {
        let what = format!("the store's chain stops at {chain_position} of {head_position}");
        return Err(StoreError::Corrupt(what).into());
    }
    let mut previous = <[u8; 32]>::try_from(head_hash.as_slice())
        .map_err(|_| StoreError::Corrupt("head: chain hash is not 32 bytes".into()))?;
    let mut next = head_position + 1;
    let (mut page, mut written, mut trailer) = (Vec::new(), 0u64, None);
    let mut first_position = None;
    let mut scratch = Vec::new();
    for (index, line) in bounded_lines(input) {
        let line_no = index as u64 + 1;
        let text = line?;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |what: String| ImportError::Line { line: line_no, what };
        if trailer.is_some() {
            return Err(bad("a line after the trailer".into()));
        }
        // An event, or else the trailer; a line that is neither is refused with why it is
        // not an event. (The payload is kept as the file's text, which an untagged enum
        // cannot do.)
        let event = match serde_json::from_str::<ExportedEvent>(&text) {
            Ok(event) => event,
            Err(not_event) => match serde_json::from_str::<TrailerLine>(&text) {
                Ok(line) => {
                    trailer = Some(line.trailer);
                    continue;
                }
                Err(_) => return Err(bad(not_event.to_string())),
            },
        };
        let position = event.global_position;
        let fault = |what: String| ImportError::Event { line: line_no, position, what };
        if position != next {
            let what = if first_position.is_none() {
                format!("the store's head is {head_position}, so the file must start at {next}")
            } else {
                format!("expected position {next}: the file is not contiguous")
            };
            return Err(fault(what));
        }
        let stored = parse_hash(&event.chain_hash).ok_or_else(|| {
            fault(format!("chain_hash {:?} is not 32 bytes of hex", event.chain_hash))
        })?;
        let payload: serde_json::Value = serde_json::from_str(event.payload.get())
            .map_err(|e| fault(format!("payload: {e}")))?;
        let metadata: serde_json::Value = serde_json::from_str(event.metadata.get())
            .map_err(|e| fault(format!("metadata: {e}")))?;
        let content = Content {
            stream_type: &event.stream_type,
            stream_id: &event.stream_id,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &payload,
        };
        let digest = content.digest(&canonical::to_vec(&metadata), &mut scratch);
        let computed = link(&previous, position, event.version, &digest);
        if computed != stored {
            let what = format!(
                "its content and the previous hash give {}, not its chain_hash {}",
                hex(&computed),
                event.chain_hash
            );
            return Err(fault(what));
        }
        previous = stored;
        next += 1;
        first_position.get_or_insert(position);
        page.push((line_no, event));
        if page.len() == TRANSFER_PAGE_EVENTS {
            written += write_page(&mut tx, &mut page).await?;
            progress(written);
        }
    }
    written += write_page(&mut tx, &mut page).await?;
    let Some(trailer) = trailer else {
        return Err(ImportError::NoTrailer { events: written });
    };
    let last_hash = first_position.map(|_| hex(&previous));
    let expected = Trailer {
        count: written,
        last_position: first_position.map(|_| next - 1),
        last_hash: last_hash.clone(),
    };
    if trailer != expected {
        let what = format!("the trailer says {trailer:?}, the file holds {expected:?}");
        return Err(ImportError::Line { line: 0, what });
    }
    if written > 0 {
        sqlx::query("UPDATE head SET position = $1, chain_position = $1, chain_hash = $2")
            .bind(to_i64(next - 1))
            .bind(&previous[..])
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    progress(written);
    Ok(Imported {
        events: written,
        first_position,
        last_position: next - 1,
        last_hash: hex(&previous),
    })
}

/// The lines of `input`, each refused past [`LINE_BYTES_MAX`] rather than read whole.
fn bounded_lines(
    mut input: impl BufRead,
) -> impl Iterator<Item = (usize, Result<String, std::io::Error>)> {
    let mut index = 0usize;
    std::iter::from_fn(move || {
        let mut buffer = Vec::new();
        let read = std::io::Read::take(&mut input, LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buffer);
        let line = match read {
            Ok(0) => return None,
            Ok(_) if buffer.len() > LINE_BYTES_MAX => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {} is longer than {LINE_BYTES_MAX} bytes", index + 1),
            )),
            Ok(_) => String::from_utf8(buffer)
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error)),
            Err(error) => Err(error),
        };
        index += 1;
        Some((index - 1, line))
    })
}

/// Writes a page of checked events (each with its line number) and moves their streams'
/// versions, checking that each stream goes on from its stored version without a gap.
async fn write_page(
    tx: &mut sqlx::PgConnection,
    page: &mut Vec<(u64, ExportedEvent)>,
) -> Result<u64, ImportError> {
    if page.is_empty() {
        return Ok(0);
    }
    // Each stream's first and last version in the page, contiguous within it.
    let mut streams: HashMap<(&str, &str), (u64, u64, u64)> = HashMap::new();
    for (line, event) in page.iter() {
        let key = (event.stream_type.as_str(), event.stream_id.as_str());
        match streams.get_mut(&key) {
            Some((_, last, _)) if event.version == *last + 1 => *last = event.version,
            Some((_, last, _)) => {
                let what = format!("stream version {}, expected {}", event.version, *last + 1);
                return Err(ImportError::Event {
                    line: *line,
                    position: event.global_position,
                    what,
                });
            }
            None => {
                streams.insert(key, (event.version, event.version, *line));
            }
        }
    }
    let mut keys: Vec<_> = streams.keys().copied().collect();
    keys.sort_unstable();
    let stored = super::committer::sql::lock_streams(&mut *tx, &keys).await?;
    for key in &keys {
        let (first, _, line) = streams[key];
        let stored = stored.get(key).copied().unwrap_or(0);
        if first != stored + 1 {
            let what = format!(
                "stream {}/{} is at version {stored} in the store; the file goes on at {first}",
                key.0, key.1
            );
            return Err(ImportError::Line { line, what });
        }
    }
    let (types, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let lasts: Vec<i64> = keys.iter().map(|key| to_i64(streams[key].1)).collect();
    sqlx::query(
        "UPDATE streams s SET version = v.last
         FROM unnest($1::text[], $2::text[], $3::int8[]) AS v(t, i, last)
         WHERE s.stream_type = v.t AND s.stream_id = v.i",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&lasts)
    .execute(&mut *tx)
    .await?;
    let column =
        |f: fn(&ExportedEvent) -> String| page.iter().map(|(_, e)| f(e)).collect::<Vec<_>>();
    let positions: Vec<i64> = page.iter().map(|(_, e)| to_i64(e.global_position)).collect();
    let versions: Vec<i64> = page.iter().map(|(_, e)| to_i64(e.version)).collect();
    let event_ids: Vec<Uuid> = page.iter().map(|(_, e)| e.event_id).collect();
    let schemas: Vec<i32> = page.iter().map(|(_, e)| e.schema_version as i32).collect();
    let recorded: Vec<OffsetDateTime> = page.iter().map(|(_, e)| e.recorded_at).collect();
    let hashes: Vec<Vec<u8>> = page
        .iter()
        .map(|(_, e)| parse_hash(&e.chain_hash).map(|hash| hash.to_vec()).unwrap_or_default())
        .collect();
    sqlx::query(
        "INSERT INTO events (global_position, stream_type, stream_id, version, event_id,
                             event_type, schema_version, payload, metadata, recorded_at,
                             chain_hash)
         SELECT p, st, si, v, id, et, sv, pl::jsonb, md::jsonb, ra, ch
         FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::uuid[], $6::text[],
                     $7::int4[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[])
              AS e(p, st, si, v, id, et, sv, pl, md, ra, ch)",
    )
    .bind(&positions)
    .bind(column(|e| e.stream_type.clone()))
    .bind(column(|e| e.stream_id.clone()))
    .bind(&versions)
    .bind(&event_ids)
    .bind(column(|e| e.event_type.clone()))
    .bind(&schemas)
    .bind(column(|e| e.payload.get().to_owned()))
    .bind(column(|e| e.metadata.get().to_owned()))
    .bind(&recorded)
    .bind(&hashes)
    .execute(&mut *tx)
    .await
    .map_err(|error| match error.as_database_error().and_then(|e| e.constraint()) {
        Some(constraint) => ImportError::Line {
            line: page[0].0,
            what: format!("the store already holds one of the page's events ({constraint})"),
        },
        None => ImportError::Database(error),
    })?;
    let written = page.len() as u64;
    page.clear();
    Ok(written)
}
