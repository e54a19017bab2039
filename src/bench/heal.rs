//! `brain bench heal`: how long the Redis queue takes to heal after its keys are lost, and
//! how much memory the refill takes. Fills a store with missions (enqueued, started,
//! renewed, completed: four events each, and a tenth left queued), builds the queue, wipes
//! it, then times the refill that the projector runner does when it finds the queue's
//! checkpoint gone: the same page-by-page catch-up, from position 0. Peak memory is this
//! process's resident set during the refill alone (the kernel's high-water mark is reset
//! just before it).

use std::time::Instant;

use anyhow::Context;
use domain::mission::{MissionEvent, MissionSpec, Priority};
use domain::{EventMetadata, ExpectedVersion, StreamId};
use projections::mission_queue::{MissionQueue, Scoring};
use sqlx::migrate::MigrateDatabase;
use time::OffsetDateTime;
use uuid::Uuid;

use super::with_database;
use crate::config::DATABASE_URL_DEFAULT;
use crate::config::Namespace;
use crate::eventlog::db;
use crate::eventlog::projector::Feeder;
use crate::eventlog::store::{Append, CommitterConfig, EventStore};
use crate::missions::queue::Queue;

#[derive(Debug, clap::Args)]
pub struct HealBench {
    #[command(flatten)]
    store: FilledStore,
}

/// The filled store a bench of the log's readers works on (`heal`, `rebuild`), and where.
#[derive(Debug, clap::Args)]
pub(super) struct FilledStore {
    /// PostgreSQL server to use; the bench creates its own database on it.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT)]
    pub(super) database_url: String,
    #[arg(long, env = "REDIS_URL", default_value = crate::config::REDIS_URL_DEFAULT)]
    pub(super) redis_url: String,
    /// Events in the store (four per mission, a tenth of the missions only enqueued).
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) events: u64,
    /// Keep the filled database (`brain_bench_heal`) for another run instead of dropping it.
    #[arg(long)]
    pub(super) keep: bool,
}

/// A filled store, open: what [`FilledStore::open`] gives a bench.
pub(super) struct Opened {
    pub(super) pool: sqlx::PgPool,
    pub(super) database_url: String,
    pub(super) redis_url: String,
    pub(super) head: u64,
    keep: bool,
}

impl FilledStore {
    /// Connects to the bench database (created and migrated if needed) and fills it in
    /// `namespace` up to `events` events, if it holds fewer (a database kept by `--keep`).
    pub(super) async fn open(self, namespace: &Namespace) -> anyhow::Result<Opened> {
        let FilledStore { database_url, redis_url, events, keep } = self;
        let database_url = with_database(&database_url, HEAL_DATABASE)?;
        let pool = db::connect(&database_url, 8).await?;
        db::migrate(&pool).await?;
        let head = crate::eventlog::store::head(&pool).await?;
        if head < events {
            let started = Instant::now();
            fill(&pool, namespace, events - head).await?;
            // The statistics autovacuum would gather within its next round: without them the
            // planner reads each page of a filtered read by a sort of its whole range.
            sqlx::query("ANALYZE events").execute(&pool).await?;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("bench: filled {} events in {seconds:.1} s", events - head);
        }
        let head = crate::eventlog::store::head(&pool).await?;
        Ok(Opened { pool, database_url, redis_url, head, keep })
    }
}

impl Opened {
    /// Closes the pool and drops the database, unless `--keep` asked to keep it.
    pub(super) async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if self.keep {
            eprintln!("bench: kept database {HEAL_DATABASE}");
        } else {
            sqlx::Postgres::force_drop_database(&self.database_url)
                .await
                .context("drop bench database")?;
        }
        Ok(())
    }
}

/// The database the store is filled in, kept with `--keep` for the next run (of this bench or
/// of `brain bench rebuild`).
pub(super) const HEAL_DATABASE: &str = "brain_bench_heal";

/// Events read per page, as the projector runner reads them.
const PAGE_EVENTS: u32 = 1_000;
/// Missions appended per atomic group while filling.
const GROUP_MISSIONS: usize = 250;

impl HealBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let namespace = Namespace::parse("bench_heal").map_err(anyhow::Error::msg)?;
        let opened = self.store.open(&namespace).await?;
        let (pool, head, redis_url) = (opened.pool.clone(), opened.head, opened.redis_url.clone());
        let redis = redis::Client::open(redis_url.as_str()).context("REDIS_URL")?;
        let queue = Queue::connect(&redis, &namespace).await?;
        let projector = MissionQueue { scoring: Scoring::default() };

        queue.drop_all().await?;
        let started = Instant::now();
        let mut feeder =
            Feeder::new(projector, queue.store(None), pool.clone(), PAGE_EVENTS).await?;
        feeder.catch_up().await?;
        let built_s = started.elapsed().as_secs_f64();
        let depths = queue.depths().await?;
        let ready: u64 = depths.values().map(|depth| depth.ready).sum();

        // The loss: every key of the namespace's queue gone, as after a flush or a restart
        // without persistence.
        queue.drop_all().await?;
        reset_peak_rss();
        let rss_before = rss_kib("VmRSS");
        let started = Instant::now();
        let mut feeder =
            Feeder::new(projector, queue.store(None), pool.clone(), PAGE_EVENTS).await?;
        let reached = feeder.catch_up().await?;
        let healed_s = started.elapsed().as_secs_f64();
        let peak = rss_kib("VmHWM");
        anyhow::ensure!(reached == head, "refill reached {reached}, the store's head is {head}");
        let again: u64 = queue.depths().await?.values().map(|depth| depth.ready).sum();
        anyhow::ensure!(again == ready, "refilled {again} ready missions, built {ready}");

        println!("store: {head} events; queue: {ready} ready missions");
        println!("initial build: {built_s:.1} s ({:.0} events/s)", head as f64 / built_s);
        println!(
            "refill after the keys were lost: {healed_s:.1} s ({:.0} events/s)",
            head as f64 / healed_s
        );
        println!(
            "resident memory during the refill: {} MiB before, peak {} MiB",
            rss_before / 1024,
            peak / 1024
        );
        queue.drop_all().await?;
        opened.close().await
    }
}

/// Appends `events` events: missions of four events each, every tenth left queued.
pub(super) async fn fill(
    pool: &sqlx::PgPool,
    namespace: &Namespace,
    events: u64,
) -> anyhow::Result<()> {
    let (store, committer) =
        EventStore::start(pool.clone(), namespace.as_str(), CommitterConfig::default());
    let (mut made, mut appended) = (0u64, 0u64);
    while appended < events {
        let mut group = Vec::with_capacity(GROUP_MISSIONS);
        while group.len() < GROUP_MISSIONS && appended < events {
            let next = mission(made);
            made += 1;
            appended += next.events.len() as u64;
            group.push(next);
        }
        store.append_all(group).await?;
    }
    drop(store);
    committer.await?;
    Ok(())
}

fn mission(n: u64) -> Append {
    let at_ms = 1_700_000_000_000 + n as i64;
    let spec = MissionSpec {
        name: format!("mission {n}"),
        description: String::new(),
        priority: Priority::Normal,
        payload: serde_json::json!({ "n": n }),
        agent: if n.is_multiple_of(2) { "coder".into() } else { "ops".into() },
        attempt_max: 3,
        timeout_ms: 60_000,
        not_before_ms: None,
        budget: None,
        parent: None,
        forked_from: None,
        copied_from: None,
    };
    let mut events = vec![MissionEvent::MissionEnqueued { spec, due_at_ms: at_ms, at_ms }];
    if !n.is_multiple_of(10) {
        let lease_expires_at_ms = at_ms + 30_000;
        events.push(MissionEvent::MissionStarted {
            worker_id: "w".into(),
            attempt: 1,
            lease_ms: 30_000,
            lease_expires_at_ms,
            at_ms,
        });
        events.push(MissionEvent::MissionProgressed {
            attempt: 1,
            lease_expires_at_ms,
            note: None,
            at_ms,
        });
        events.push(MissionEvent::MissionCompleted {
            attempt: 1,
            result: serde_json::json!({}),
            at_ms,
        });
    }
    Append {
        stream_type: domain::StreamType::parse("mission").expect("valid"),
        stream_id: StreamId::from(Uuid::now_v7()),
        expected: ExpectedVersion::Exact(0),
        events: events.iter().map(crate::eventlog::command::new_event).collect(),
        metadata: EventMetadata::new("bench", OffsetDateTime::now_utc()),
    }
}

/// Resets the kernel's high-water mark of this process's resident set (`VmHWM`).
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `/proc/self/status` figure in KiB (0 where there is none).
pub(super) fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()))
        })
        .unwrap_or(0)
}
