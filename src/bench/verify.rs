//! `brain bench verify`: how fast `brain events verify` checks a long log, and how much memory
//! each check takes. Fills a store with missions (the filler of `brain bench heal`, whose
//! database it shares), builds the read models from it (`brain projections rebuild`), then
//! runs each check alone, timing it and taking this process's peak resident set (the kernel's
//! high-water mark is reset before each). The JetStream check is left out: the bench
//! publishes nothing to NATS.

use std::time::Instant;

use anyhow::Context;
use projections::mission_queue::Scoring;

use super::heal::{FilledStore, reset_peak_rss, rss_kib};
use crate::config::Namespace;
use crate::eventlog::audit::{Options, Status};
use crate::serve::read_models::{Models, READ_MODELS};

#[derive(Debug, clap::Args)]
pub struct VerifyBench {
    #[command(flatten)]
    store: FilledStore,
}

impl VerifyBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let namespace = Namespace::parse("bench_verify").map_err(anyhow::Error::msg)?;
        let opened = self.store.open(&namespace).await?;
        let (pool, head, redis_url) = (opened.pool.clone(), opened.head, opened.redis_url.clone());
        println!("store: {head} events");

        let redis = redis::Client::open(redis_url.as_str()).context("REDIS_URL")?;
        let connection = redis.get_connection_manager().await.context("Redis")?;
        let models = Models::new(pool.clone(), connection.clone(), namespace.clone());
        for model in READ_MODELS.iter().filter(|model| model.rebuilds) {
            super::rebuild::stand_live_at(&pool, model.name, head).await?;
            models.rebuild(model, Scoring::default()).await?;
        }
        let jetstream = Err("the bench publishes nothing to NATS".to_owned());
        let verifier = crate::serve::verify::verifier(
            pool.clone(),
            connection,
            namespace,
            jetstream,
            Scoring::default(),
        );
        for name in verifier.names().into_iter().filter(|name| *name != "jetstream") {
            reset_peak_rss();
            let options = Options { only: Some(vec![name.to_owned()]), sample: None };
            let started = Instant::now();
            let report = verifier.run(&options, &|_| {}).await?;
            let seconds = started.elapsed().as_secs_f64();
            let check = &report.checks[0];
            anyhow::ensure!(
                matches!(check.status, Status::Ok | Status::Skipped),
                "{name}: {:?} {}",
                check.status,
                check.detail
            );
            let status = serde_json::to_value(check.status)?;
            let rate = if check.status == Status::Skipped {
                "-".to_owned()
            } else {
                format!("{:.0}", head as f64 / seconds.max(f64::EPSILON))
            };
            println!(
                "verify {name:<20} {:<7} {seconds:>7.1} s  {rate:>9} events/s  peak memory {} MiB",
                status.as_str().unwrap_or("?"),
                rss_kib("VmHWM") / 1024
            );
        }
        models.drop_redis().await?;
        opened.close().await
    }
}
