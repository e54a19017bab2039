//! Snapshots of long streams as the command handler uses them (decision 0049): a load of an
//! aggregate that opted in ([`domain::aggregate::Aggregate::SNAPSHOTS`]) reads its stored
//! snapshot and the events after it in one query ([`load`]), and a new snapshot is written
//! off the command's path, when an append crosses a multiple of the aggregate's `every`
//! ([`crossed`]) or a load had to fold at least that many events ([`save_later`]).
//!
//! A snapshot is never more than a shortcut: one that does not decode, is of another
//! snapshot version or names an event the log no longer holds is ignored and the stream
//! folded whole; a write that fails is logged and changes nothing for the command; `brain
//! events verify` compares stored snapshots with a fold of the log ([`compare`]).

use std::time::Duration;

use domain::agent::Agent;
use domain::aggregate::{Aggregate, DomainEvent, Snapshots, UpcastError};
use domain::conversation::Conversation;
use domain::{RecordedEvent, StreamId};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::eventlog::command::CommandError;
use crate::eventlog::store::snapshots::{self, Snapshot};
use crate::eventlog::store::{EventStore, StoreError};

/// Snapshot writes running at once in this process. Past it a snapshot is skipped, not
/// queued: the next crossing, or the next long load, takes one.
pub const WRITES_IN_FLIGHT_MAX: usize = 4;
/// Longest one snapshot write may take before it is given up (and logged).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

static WRITES: Semaphore = Semaphore::const_new(WRITES_IN_FLIGHT_MAX);

/// Loads a stream through its snapshot: the stored state (when usable) and the events after
/// it, upcast and folded. A load that folded `every` events or more leaves a snapshot of
/// what it found behind it, off its own path.
pub(crate) async fn load<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    snapshots: &Snapshots<A>,
) -> Result<(A, u64), CommandError<A::Error>> {
    let stream_type = A::stream_type();
    let loaded =
        store.load_stream_from_snapshot(&stream_type, stream_id, snapshots.version).await?;
    if loaded.mismatched {
        tracing::warn!(
            stream = %format_args!("{stream_type}/{stream_id}"),
            "a snapshot names an event the log does not hold there; folded the whole stream"
        );
    }
    let mut unreadable = false;
    let (state, version, events) = match loaded.snapshot {
        None => (A::default(), 0, loaded.events),
        Some((at, state)) => match (snapshots.decode)(state) {
            Ok(state) => (state, at, loaded.events),
            Err(error) => {
                tracing::warn!(
                    stream = %format_args!("{stream_type}/{stream_id}"),
                    %error,
                    "a snapshot does not decode; folded the whole stream"
                );
                unreadable = true;
                (A::default(), 0, store.load_stream(&stream_type, stream_id, None).await?)
            }
        },
    };
    let (state, version) = fold_onto(state, version, &events)?;
    if events.len() as u64 >= snapshots.every
        && let Some(last) = events.last()
    {
        save_later(store, stream_id, snapshots, &state, version, last.event_id, unreadable);
    }
    Ok((state, version))
}

/// `state` at `version`, with `recorded` (the events after it) upcast and applied.
pub(crate) fn fold_onto<A: Aggregate>(
    mut state: A,
    mut version: u64,
    recorded: &[RecordedEvent],
) -> Result<(A, u64), UpcastError> {
    for event in recorded {
        let upcast =
            A::Event::upcast(&event.event_type, event.schema_version, event.payload.clone())?;
        state.apply(&upcast);
        version = event.version;
    }
    Ok((state, version))
}

/// Whether a stream that went from version `before` to `after` crossed a multiple of
/// `every`: when a command's append should leave a snapshot behind it.
pub fn crossed(before: u64, after: u64, every: u64) -> bool {
    every > 0 && before / every < after / every
}

/// Writes `state`, the stream's state after event `event_id` at `version`, as its snapshot,
/// in a task of its own: the caller does not wait, and a failed write is only logged. At
/// most [`WRITES_IN_FLIGHT_MAX`] at once; past it this one is skipped. With `replace`, it
/// overwrites whatever is stored (found unreadable), not only an older snapshot.
pub(crate) fn save_later<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    snapshots: &Snapshots<A>,
    state: &A,
    version: u64,
    event_id: Uuid,
    replace: bool,
) {
    let Ok(permit) = WRITES.try_acquire() else {
        tracing::debug!(stream = %stream_id, "snapshot writes all busy; this one skipped");
        return;
    };
    let snapshot = match snapshot_of(stream_id, snapshots, state, version, event_id) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::warn!(stream = %stream_id, %error, "a state does not encode as a snapshot");
            return;
        }
    };
    let pool = store.pool().clone();
    tokio::spawn(async move {
        let _permit = permit;
        let name = format!("{}/{}", snapshot.stream_type, snapshot.stream_id);
        match tokio::time::timeout(WRITE_TIMEOUT, snapshots::save(&pool, &snapshot, replace)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(stream = %name, %error, "snapshot not written"),
            Err(_) => tracing::warn!(stream = %name, "snapshot write timed out"),
        }
    });
}

fn snapshot_of<A: Aggregate>(
    stream_id: &StreamId,
    snapshots: &Snapshots<A>,
    state: &A,
    version: u64,
    event_id: Uuid,
) -> Result<Snapshot, serde_json::Error> {
    Ok(Snapshot {
        stream_type: A::stream_type(),
        stream_id: stream_id.clone(),
        version,
        event_id,
        snapshot_version: snapshots.version,
        state: (snapshots.encode)(state)?,
    })
}

/// Folds a stream whole, without its snapshot, and stores the result as its snapshot now
/// (waiting for the write). Returns the version it was taken at, `None` for an empty stream
/// or an aggregate without snapshots. For tests, benches and an operator's repair.
pub async fn take<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
) -> Result<Option<u64>, CommandError<A::Error>> {
    let Some(snapshots) = A::SNAPSHOTS else { return Ok(None) };
    let recorded = store.load_stream(&A::stream_type(), stream_id, None).await?;
    let Some(last) = recorded.last() else { return Ok(None) };
    let (state, version) = fold_onto(A::default(), 0, &recorded)?;
    let snapshot = snapshot_of(stream_id, &snapshots, &state, version, last.event_id)
        .map_err(|error| StoreError::Corrupt(format!("state does not encode: {error}")))?;
    snapshots::save(store.pool(), &snapshot, true).await?;
    Ok(Some(version))
}

/// What [`compare`] made of one stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// Its state equals a fold of its stream up to its version.
    Agrees,
    /// Never loaded, so not compared: of another snapshot version, or of a stream type
    /// whose aggregate takes none. The next snapshot taken replaces it.
    Ignored(String),
    /// It disagrees with the log: what differs.
    Differs(String),
}

/// Compares a stored snapshot with a fold of its stream up to its version. Every aggregate
/// that takes snapshots is listed here, since only this knows which type a stream holds.
pub async fn compare(pool: &PgPool, snapshot: &Snapshot) -> Result<Compared, StoreError> {
    let stream_type = snapshot.stream_type.as_str();
    if stream_type == Agent::stream_type().as_str() {
        compare_as::<Agent>(pool, snapshot).await
    } else if stream_type == Conversation::stream_type().as_str() {
        compare_as::<Conversation>(pool, snapshot).await
    } else {
        Ok(Compared::Ignored(format!("no aggregate of stream type {stream_type} takes snapshots")))
    }
}

async fn compare_as<A: Aggregate>(
    pool: &PgPool,
    snapshot: &Snapshot,
) -> Result<Compared, StoreError> {
    let Some(snapshots) = A::SNAPSHOTS else {
        return Ok(Compared::Ignored("its aggregate takes no snapshots".to_owned()));
    };
    if snapshot.snapshot_version != snapshots.version {
        return Ok(Compared::Ignored(format!(
            "snapshot version {}, the code's is {}",
            snapshot.snapshot_version, snapshots.version
        )));
    }
    let recorded = snapshots::stream_up_to(
        pool,
        &snapshot.stream_type,
        &snapshot.stream_id,
        Some(snapshot.version),
    )
    .await?;
    match recorded.last() {
        Some(last) if last.version == snapshot.version && last.event_id == snapshot.event_id => {}
        _ => {
            return Ok(Compared::Differs(format!(
                "it folds up to event {} at version {}, which the log does not hold there",
                snapshot.event_id, snapshot.version
            )));
        }
    }
    let state = match fold_onto(A::default(), 0, &recorded) {
        Ok((state, _)) => state,
        Err(error) => return Ok(Compared::Differs(format!("the log does not fold: {error}"))),
    };
    let folded = (snapshots.encode)(&state)
        .map_err(|error| StoreError::Corrupt(format!("state does not encode: {error}")))?;
    Ok(match first_difference("", &snapshot.state, &folded) {
        None => Compared::Agrees,
        Some(difference) => Compared::Differs(difference),
    })
}

/// The first place two JSON values differ, as `path: snapshot …, log …`.
pub fn first_difference(
    path: &str,
    snapshot: &serde_json::Value,
    log: &serde_json::Value,
) -> Option<String> {
    use serde_json::Value;
    let at = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match (snapshot, log) {
        (Value::Object(left), Value::Object(right)) => {
            let keys: std::collections::BTreeSet<&String> =
                left.keys().chain(right.keys()).collect();
            keys.into_iter().find_map(|key| match (left.get(key), right.get(key)) {
                (Some(l), Some(r)) => first_difference(&at(key), l, r),
                (l, r) => {
                    let show = |v: Option<&Value>| v.map_or("absent".to_owned(), short);
                    Some(format!("{}: snapshot {}, log {}", at(key), show(l), show(r)))
                }
            })
        }
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => left
            .iter()
            .zip(right)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(&format!("{path}[{i}]"), l, r)),
        (left, right) if left == right => None,
        (left, right) => {
            let path = if path.is_empty() { "state" } else { path };
            Some(format!("{path}: snapshot {}, log {}", short(left), short(right)))
        }
    }
}

/// A value as a report shows it: its JSON, cut to 80 characters.
fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_snapshot_is_due_when_the_version_crosses_a_multiple() {
        assert!(crossed(99, 100, 100));
        assert!(crossed(98, 101, 100));
        assert!(crossed(0, 250, 100));
        assert!(!crossed(100, 199, 100));
        assert!(!crossed(101, 102, 100));
    }

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let log = json!({"state": "active", "registration": {"labels": {"a": "1"}}, "n": [1, 2]});
        assert_eq!(first_difference("", &log, &log), None);
        let edited =
            json!({"state": "failed", "registration": {"labels": {"a": "1"}}, "n": [1, 2]});
        assert_eq!(
            first_difference("", &edited, &log).unwrap(),
            r#"state: snapshot "failed", log "active""#
        );
        let nested = json!({"state": "active", "registration": {"labels": {}}, "n": [1, 3]});
        assert_eq!(first_difference("", &nested, &log).unwrap(), r#"n[1]: snapshot 3, log 2"#);
        let absent = json!({"state": "active", "registration": {"labels": {"a": "1"}}});
        assert_eq!(first_difference("", &absent, &log).unwrap(), "n: snapshot absent, log [1,2]");
        assert_eq!(
            first_difference("", &json!([1]), &json!([1, 2])).unwrap(),
            "state: snapshot [1], log [1,2]"
        );
    }
}
