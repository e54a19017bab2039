//! `brain bench rebuild`: how fast each read model is rebuilt from the log, beside the live
//! one, as `brain projections rebuild` does it. Fills a store with missions (the filler of
//! `brain bench heal`, whose database it shares), times a read of the whole log as a rebuild
//! reads it (pages read ahead), then each rebuild in turn, and the peak memory of each (this
//! process's resident set: the kernel's high-water mark is reset before each).

use std::time::{Duration, Instant};

use anyhow::Context;

use super::heal::{FilledStore, reset_peak_rss, rss_kib};
use crate::config::Namespace;
use crate::eventlog::{projectors, store};
use crate::serve::read_models::{Models, READ_MODELS};

#[derive(Debug, clap::Args)]
pub struct RebuildBench {
    #[command(flatten)]
    store: FilledStore,
}

/// Events read per page, as a rebuild reads them.
const PAGE_EVENTS: u32 = 1_000;

impl RebuildBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let namespace = Namespace::parse("bench_rebuild").map_err(anyhow::Error::msg)?;
        let opened = self.store.open(&namespace).await?;
        let (pool, head, redis_url) = (opened.pool.clone(), opened.head, opened.redis_url.clone());
        println!("store: {head} events");

        // One page at a time, then as a rebuild reads, alternating: the ratio holds on a
        // machine too busy for the figures themselves to.
        for _round in 0..2 {
            for depth in [0, store::read_ahead::READ_AHEAD_PAGES] {
                reset_peak_rss();
                let started = Instant::now();
                read_log(&pool, head, depth).await?;
                report(&format!("read the log, {depth} ahead"), head, started.elapsed());
            }
        }

        let redis = redis::Client::open(redis_url.as_str()).context("REDIS_URL")?;
        let connection = redis.get_connection_manager().await.context("Redis")?;
        let models = Models::new(pool.clone(), connection, namespace);
        for model in READ_MODELS.iter().filter(|model| model.rebuilds) {
            stand_live_at(&pool, model.name, head).await?;
            reset_peak_rss();
            let started = Instant::now();
            let reached = models.rebuild(model, Default::default()).await?;
            anyhow::ensure!(reached == head, "{} reached {reached} of {head}", model.name);
            report(&format!("rebuild {}", model.name), head, started.elapsed());
        }
        models.drop_redis().await?;
        opened.close().await
    }
}

/// Before a bench rebuilds `model`: the mission tree is rebuilt up to its live projector's
/// position, never past it, and no live projector runs in a bench, so one is taken to stand
/// at `head` (other models are rebuilt to the head whatever their live position).
pub(super) async fn stand_live_at(
    pool: &sqlx::PgPool,
    model: &str,
    head: u64,
) -> anyhow::Result<()> {
    if model == projections::mission_tree::NAME {
        let mut tx = pool.begin().await?;
        projectors::lock_checkpoint(&mut tx, model).await?;
        projectors::move_checkpoint(&mut tx, model, head).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Reads the whole log in pages of [`PAGE_EVENTS`], `depth` of them read ahead.
async fn read_log(pool: &sqlx::PgPool, head: u64, depth: usize) -> anyhow::Result<()> {
    let pool = pool.clone();
    let read: store::read_ahead::ReadRange = std::sync::Arc::new(move |after, to| {
        let pool = pool.clone();
        Box::pin(async move {
            store::read_wanted(&pool, &projections::Reads::All, after, to, PAGE_EVENTS).await
        })
    });
    let span = u64::from(PAGE_EVENTS);
    let mut pages = store::read_ahead::ReadAhead::new(read, 0, head, span, depth);
    let mut read_events = 0;
    while let Some(page) = pages.next().await {
        read_events += page?.events.len() as u64;
    }
    anyhow::ensure!(read_events == head, "read {read_events} of {head} events");
    Ok(())
}

fn report(what: &str, events: u64, took: Duration) {
    let seconds = took.as_secs_f64();
    println!(
        "{what:<28} {seconds:>7.1} s  {:>9.0} events/s  peak memory {} MiB",
        events as f64 / seconds.max(f64::EPSILON),
        rss_kib("VmHWM") / 1024
    );
}
