//! Keeps a process's memory index current with the log, like the in-memory models of
//! [`crate::eventlog::follow`]: every process that answers searches follows the `memory`
//! events into its own index, read from PostgreSQL after the index's checkpoint whenever the
//! live feed carries one, after the feed lagged, and every [`RECONCILE_EVERY`].
//!
//! The checkpoint is a file beside the shards, written (atomically, by rename) only after
//! they are flushed, so the index on disk is never behind what its checkpoint says; applying
//! an event twice puts or takes away the same point again. The shards and their checkpoint
//! live in a generation directory (`g<id>/`) under the namespace's directory: a missing
//! checkpoint once the index holds anything means the directory was deleted, and the index is
//! rebuilt from position 0 into a new generation while the old one, still open, answers; the
//! new one replaces it once it has caught up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::memory::MemoryEvent;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Memories;
use super::edge::EdgeIndex;
use super::index::{IndexError, MemoryIndex, Payload, Point};
use crate::eventlog::feed::FeedEvent;
use crate::eventlog::store;

/// Events read per query while catching up: a page of 384-dim vectors is a few megabytes.
pub const PAGE_EVENTS_MAX: u32 = 500;
/// How often the index reads the log (and checks its directory) when the feed said nothing.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How often expired memories are taken out of the index (searches skip them before).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The checkpoint's file name, in a generation directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// A new generation directory under `dir`.
pub fn new_generation(dir: &Path) -> PathBuf {
    dir.join(format!("g{}", Uuid::now_v7().simple()))
}

/// The generation to open under `dir`: the newest with a checkpoint, or a new one. Others
/// (an interrupted rebuild) are removed.
pub fn current_generation(dir: &Path) -> (PathBuf, u64) {
    let mut found: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('g'))
        })
        .filter_map(|path| Some((path.clone(), read_checkpoint(&path)?)))
        .collect();
    found.sort();
    let current = found.pop();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_generation =
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('g'));
        if is_generation && current.as_ref().is_none_or(|(kept, _)| *kept != path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    current.unwrap_or_else(|| (new_generation(dir), 0))
}

pub fn read_checkpoint(generation: &Path) -> Option<u64> {
    std::fs::read_to_string(generation.join(CHECKPOINT_FILE)).ok()?.trim().parse().ok()
}

fn write_checkpoint(generation: &Path, position: u64) -> std::io::Result<()> {
    let temporary = generation.join(format!("{CHECKPOINT_FILE}.tmp"));
    std::fs::create_dir_all(generation)?;
    std::fs::write(&temporary, position.to_string())?;
    std::fs::rename(temporary, generation.join(CHECKPOINT_FILE))
}

/// What a page of events does to the index: points to put, then ids to take away (a
/// memory is recorded once, before it is superseded or forgotten, so the order is safe).
fn changes(page: &[RecordedEvent]) -> Result<(Vec<Point>, Vec<Uuid>), IndexError> {
    let mut points: Vec<Point> = Vec::new();
    let mut gone = Vec::new();
    for event in page {
        let Ok(id) = Uuid::parse_str(event.stream_id.as_str()) else { continue };
        let decoded =
            MemoryEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| {
                    IndexError::Engine(format!("an unreadable memory event: {error}"))
                })?;
        match decoded {
            MemoryEvent::MemoryRecorded {
                scope,
                text,
                metadata,
                expires_at_ms,
                embedding,
                by,
                mission,
                supersedes,
                at_ms,
            } => {
                gone.extend(supersedes);
                points.push(Point {
                    id,
                    vector: embedding.vector,
                    payload: Payload {
                        scope_path: scope.ancestry(),
                        scope: scope.to_string(),
                        model: embedding.model,
                        expires_at_ms,
                        text,
                        m: metadata,
                        by,
                        mission,
                        recorded_at_ms: at_ms,
                    },
                });
            }
            MemoryEvent::MemorySuperseded { .. } | MemoryEvent::MemoryForgotten { .. } => {
                gone.push(id)
            }
        }
    }
    points.retain(|point| !gone.contains(&point.id));
    Ok((points, gone))
}

/// Applies the events after `position` to `index` in `generation`, page by page, each page
/// flushed then checkpointed; answers the new position.
pub async fn catch_up(
    pool: &PgPool,
    index: &Arc<EdgeIndex>,
    generation: &Path,
    mut position: u64,
) -> anyhow::Result<u64> {
    let stream_type = domain::memory::stream_type();
    loop {
        let page = store::read_stream_type(pool, &stream_type, position, PAGE_EVENTS_MAX).await?;
        let Some(last) = page.last().map(|event| event.global_position) else {
            return Ok(position);
        };
        let (points, gone) = changes(&page)?;
        let (index, generation) = (index.clone(), generation.to_owned());
        tokio::task::spawn_blocking(move || -> Result<(), IndexError> {
            if !points.is_empty() {
                index.upsert(points)?;
            }
            if !gone.is_empty() {
                index.delete(&gone)?;
            }
            index.flush()?;
            write_checkpoint(&generation, last)?;
            Ok(())
        })
        .await??;
        position = last;
        if page.len() < PAGE_EVENTS_MAX as usize {
            return Ok(position);
        }
    }
}

/// Keeps `memories` current until `stop`.
pub async fn follow(
    memories: Memories,
    pool: PgPool,
    mut feed: broadcast::Receiver<Arc<FeedEvent>>,
    stop: CancellationToken,
) {
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed_open = true;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            _ = reconcile.tick() => true,
            _ = sweep.tick() => {
                if let Err(error) = memories.sweep(crate::clock::now_ms()).await {
                    tracing::warn!(%error, "expired memories could not be swept from the index");
                }
                false
            }
            received = feed.recv(), if feed_open => match received {
                Ok(event) => *event.stream_type == *"memory",
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => {
                    feed_open = false;
                    true
                }
            },
        };
        if !read {
            continue;
        }
        if let Err(error) = memories.step(&pool).await {
            tracing::error!(%error, "the memory index cannot follow the log; it keeps what it has");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_read_back_and_a_generation_without_one_is_dropped() {
        let dir = std::env::temp_dir().join(format!("brain-memory-test-{}", Uuid::now_v7()));
        let (first, position) = current_generation(&dir);
        assert_eq!(position, 0);
        write_checkpoint(&first, 42).unwrap();
        let stray = new_generation(&dir);
        std::fs::create_dir_all(&stray).unwrap();
        assert_eq!(current_generation(&dir), (first, 42));
        assert!(!stray.exists(), "a generation without a checkpoint is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
