//! Agent memory: memories are events in the log (`memory/<id>`: recorded, superseded,
//! forgotten; see [`domain::memory`]), and the vector index that finds them is a read model
//! each serving process keeps for itself ([`follower`]), droppable and rebuilt from the log.
//!
//! [`commands`] records, supersedes and forgets (a memory's text embedded through the LLM
//! gateway, [`crate::llm::embed`]); [`index`] is what an index backend does, [`edge`] the
//! embedded one (Qdrant's engine in-process, `qdrant-edge`); [`Memories`] is a process's
//! handle on its index.

pub mod commands;
pub mod edge;
pub mod follower;
pub mod index;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use self::edge::EdgeIndex;
use self::index::{Hit, IndexError, MemoryIndex, Query};

pub use crate::config::serve::MEMORY_DIR_DEFAULT;

/// Opens the index in `dir` (`<memory dir>/<namespace>`), brings it up to the log, and keeps
/// it following until `stop`. An index that cannot be opened is a read model lost: its
/// directory is cleared and it is rebuilt from the log.
pub async fn start(
    dir: &Path,
    pool: &PgPool,
    feed: &crate::eventlog::feed::FeedHandle,
    stop: CancellationToken,
) -> anyhow::Result<Memories> {
    let owned = dir.to_owned();
    let memories = tokio::task::spawn_blocking(move || match Memories::open(&owned) {
        Ok(memories) => Ok(memories),
        Err(error) => {
            tracing::warn!(%error, dir = %owned.display(), "the memory index cannot be opened: rebuilding it from the log");
            let _ = std::fs::remove_dir_all(&owned);
            Memories::open(&owned)
        }
    })
    .await?
    .with_context(|| format!("opening the memory index in {}", dir.display()))?;
    let changes = feed.subscribe();
    if let Err(error) = memories.step(pool).await {
        tracing::error!(%error, "the memory index could not catch up at start; it keeps trying");
    }
    tokio::spawn(follower::follow(memories.clone(), pool.clone(), changes, stop));
    Ok(memories)
}

/// The index in use and the generation directory it lives in.
struct Current {
    index: Arc<EdgeIndex>,
    generation: PathBuf,
}

struct Inner {
    /// The namespace's directory.
    dir: PathBuf,
    current: RwLock<Arc<Current>>,
    /// The last `memory` event the index holds (0 before any).
    position: AtomicU64,
    /// One writer at a time (the follower, a change's own catch-up, the sweep): the engine's
    /// flush refuses to run beside a write.
    stepping: tokio::sync::Mutex<()>,
}

/// A process's memory index, shared by its tasks (cheap to clone).
#[derive(Clone)]
pub struct Memories {
    inner: Arc<Inner>,
}

impl Memories {
    /// Opens (or starts) the index of one namespace in `dir` (`<memory dir>/<namespace>`).
    pub fn open(dir: &Path) -> Result<Memories, IndexError> {
        std::fs::create_dir_all(dir)?;
        let (generation, position) = follower::current_generation(dir);
        let index = Arc::new(EdgeIndex::open(&generation)?);
        Ok(Memories {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                current: RwLock::new(Arc::new(Current { index, generation })),
                position: AtomicU64::new(position),
                stepping: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn current(&self) -> Arc<Current> {
        self.inner.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn index(&self) -> Arc<dyn MemoryIndex> {
        self.current().index.clone()
    }

    /// The last `memory` event position the index holds.
    pub fn position(&self) -> u64 {
        self.inner.position.load(Ordering::SeqCst)
    }

    /// The directory of the generation in use (tests delete it to see the index rebuilt).
    pub fn generation(&self) -> PathBuf {
        self.current().generation.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Brings the index up to the log: rebuilt into a new generation when its directory is
    /// gone, or caught up from its position.
    pub async fn step(&self, pool: &PgPool) -> anyhow::Result<()> {
        let _one = self.inner.stepping.lock().await;
        let current = self.current();
        let position = self.position();
        let lost = position > 0 && follower::read_checkpoint(&current.generation).is_none();
        if !lost {
            let reached =
                follower::catch_up(pool, &current.index, &current.generation, position).await?;
            self.inner.position.store(reached, Ordering::SeqCst);
            return Ok(());
        }
        tracing::warn!(dir = %current.generation.display(), "the memory index's directory is gone: rebuilding it from the log");
        metrics::counter!("brain_memory_index_rebuilds_total").increment(1);
        let generation = follower::new_generation(&self.inner.dir);
        let opened = {
            let generation = generation.clone();
            tokio::task::spawn_blocking(move || EdgeIndex::open(&generation)).await??
        };
        let index = Arc::new(opened);
        let reached = follower::catch_up(pool, &index, &generation, 0).await?;
        if reached == 0 {
            // The log holds no memory now: nothing to checkpoint, so the new generation
            // must say so itself, or it would look lost too.
            std::fs::create_dir_all(&generation)?;
        }
        let replaced = std::mem::replace(
            &mut *self.inner.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(Current { index, generation }),
        );
        self.inner.position.store(reached, Ordering::SeqCst);
        // The engine flushes a shard when it is dropped and panics when its directory is
        // gone, as this one's is: dropped apart, so that nothing else goes with it.
        tokio::task::spawn_blocking(move || {
            let dropped =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(replaced)));
            if dropped.is_err() {
                tracing::debug!("the lost memory index could not be flushed as it closed");
            }
        });
        Ok(())
    }

    /// Takes expired memories out of the index (under the same lock as a catch-up: the
    /// engine flushes only while nothing else writes).
    pub async fn sweep(&self, now_ms: i64) -> Result<(), IndexError> {
        let _one = self.inner.stepping.lock().await;
        let index = self.index();
        tokio::task::spawn_blocking(move || index.sweep_expired(now_ms))
            .await
            .map_err(|error| IndexError::Engine(error.to_string()))?
    }

    /// The best hits for `query`.
    pub async fn search(&self, query: Query) -> Result<Vec<Hit>, IndexError> {
        let index = self.index();
        tokio::task::spawn_blocking(move || index.search(&query))
            .await
            .map_err(|error| IndexError::Engine(error.to_string()))?
    }
}
