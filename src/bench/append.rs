//! `brain bench append`: many concurrent writers appending through the group committer while
//! the relay publishes to JetStream, in a database and namespace of its own, created for the
//! run and dropped after (unless `--keep`). It reports append and publish rates, append
//! latency and the time from an append's start to its event on the bus.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use domain::{EventMetadata, ExpectedVersion, NewEvent, StreamId, StreamType};
use futures::StreamExt;
use hdrhistogram::Histogram;
use sqlx::PgPool;
use sqlx::migrate::MigrateDatabase;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{cores, histogram, ms_at, ms_max, timed_loops, with_database};
use crate::config::{DATABASE_URL_DEFAULT, NATS_URL_DEFAULT, Namespace};
use crate::eventlog::relay::{Relay, RelayConfig};
use crate::eventlog::store::{Append, CommitterConfig, EventStore};
use crate::eventlog::{bus, db};

#[derive(Debug, clap::Args)]
pub struct AppendBench {
    /// PostgreSQL server to use; the bench creates its own database on it.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT)]
    database_url: String,
    #[arg(long, env = "NATS_URL", default_value = NATS_URL_DEFAULT)]
    nats_url: String,
    /// Concurrent writer tasks, each appending one command at a time.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Commands in the timed phase.
    #[arg(long, default_value_t = 100_000)]
    commands: u64,
    /// Events per command (each command appends to a new stream).
    #[arg(long, default_value_t = 1)]
    events_per_command: usize,
    /// Commands each writer sends at once as one atomic group (`append_all`), as the batch
    /// enqueue does; 1 sends them one by one.
    #[arg(long, default_value_t = 1)]
    group_size: usize,
    /// Approximate size of each event's JSON payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Events written straight into the store before the run, to measure on a full store.
    #[arg(long, default_value_t = 0)]
    preload_events: u64,
    /// Most commands per group-commit transaction.
    #[arg(long, default_value_t = CommitterConfig::default().batch_commands_max)]
    batch_commands_max: usize,
    /// Group-commit transactions in flight at once.
    #[arg(long, default_value_t = CommitterConfig::default().transactions_in_flight_max)]
    transactions_in_flight: usize,
    /// Longest a group-commit batch waits to grow, in microseconds.
    #[arg(long, default_value_t = CommitterConfig::default().linger.as_micros() as u64)]
    linger_us: u64,
    /// Measure the event store alone: no relay, nothing published.
    #[arg(long)]
    no_relay: bool,
    /// Keep the bench database and stream afterwards.
    #[arg(long)]
    keep: bool,
}

struct Report {
    appended_events_per_s: f64,
    commands_per_s: f64,
    published_events_per_s: f64,
    append_ms: [f64; 3],
    to_bus_ms: [f64; 3],
    commands_per_transaction: f64,
}

/// What the timed phase measured on the writers' side.
struct Timed {
    /// Append latencies in microseconds.
    latencies: Histogram<u64>,
    started: Instant,
    elapsed: Duration,
    commands_per_transaction: f64,
}

/// What the bus watcher saw: how many events, when the last came, their append-to-bus
/// latencies in microseconds.
type Seen = (u64, Instant, Histogram<u64>);

impl AppendBench {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.writers == 0 || self.commands == 0 || self.events_per_command == 0 {
            bail!("--writers, --commands and --events-per-command must be at least 1");
        }
        if !(1..=crate::eventlog::store::GROUP_APPENDS_MAX).contains(&self.group_size) {
            bail!("--group-size must be 1 to {}", crate::eventlog::store::GROUP_APPENDS_MAX);
        }
        let suffix = &Uuid::new_v4().simple().to_string()[..12];
        let namespace = Namespace::parse(&format!("bench_{suffix}")).map_err(anyhow::Error::msg)?;
        let database_url = with_database(&self.database_url, &format!("brain_bench_{suffix}"))?;
        let pool = db::connect(&database_url, 8).await?;
        db::migrate(&pool).await?;
        let nats = bus::connect(&self.nats_url).await?;
        let jetstream = bus::jetstream(nats.clone(), 1);
        let stream = bus::ensure_stream(&jetstream, &namespace).await?;
        eprintln!(
            "bench: database {}, stream {}",
            crate::config::redacted_url(&database_url),
            bus::stream_name(&namespace)
        );

        let result = self.measure(&pool, &nats, &namespace).await;

        if self.keep {
            eprintln!("bench: kept database and stream");
        } else {
            pool.close().await;
            let _ = jetstream.delete_stream(&stream.cached_info().config.name).await;
            sqlx::Postgres::force_drop_database(&database_url)
                .await
                .context("drop bench database")?;
        }
        let report = result?;
        self.print(&report);
        Ok(())
    }

    async fn measure(
        &self,
        pool: &PgPool,
        nats: &async_nats::Client,
        namespace: &Namespace,
    ) -> anyhow::Result<Report> {
        if self.preload_events > 0 {
            preload(pool, self.preload_events).await?;
        }
        let config = CommitterConfig {
            batch_commands_max: self.batch_commands_max,
            transactions_in_flight_max: self.transactions_in_flight,
            linger: Duration::from_micros(self.linger_us),
            ..Default::default()
        };
        let (store, committer) = EventStore::start(pool.clone(), namespace.as_str(), config);
        let shutdown = CancellationToken::new();
        let relay = (!self.no_relay).then(|| {
            let relay =
                Relay::new(pool.clone(), nats.clone(), namespace.clone(), RelayConfig::default());
            tokio::spawn(relay.run(shutdown.clone()))
        });
        let jetstream = bus::jetstream(nats.clone(), 1);
        if self.preload_events > 0 && relay.is_some() {
            self.wait_for_preload(&jetstream, namespace).await?;
        }

        let warmup_commands = (self.writers as u64 * 20).min(self.commands);
        let expected_on_bus = if self.no_relay {
            0
        } else {
            (self.commands + warmup_commands) * self.events_per_command as u64
        };
        let watcher = self.watch_bus(&jetstream, namespace, expected_on_bus).await?;
        let timed = self.timed_phase(&store, warmup_commands).await?;
        let (seen, last_seen, bus_latencies) =
            tokio::time::timeout(Duration::from_secs(300), watcher)
                .await
                .context("the relay did not publish every event within 300 s")??;
        if seen < expected_on_bus {
            bail!("saw {seen} of {expected_on_bus} events on the bus");
        }
        shutdown.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        drop(store);
        let _ = committer.await;
        Ok(self.report(&timed, &bus_latencies, last_seen))
    }

    /// Waits until the relay has published the preload (a backlog), and reports its rate:
    /// the relay's catch-up rate.
    async fn wait_for_preload(
        &self,
        jetstream: &async_nats::jetstream::Context,
        namespace: &Namespace,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let stream = jetstream.get_stream(bus::stream_name(namespace)).await?;
            if stream.cached_info().state.last_sequence >= self.preload_events {
                break;
            }
            if started.elapsed() > Duration::from_secs(1_800) {
                bail!("the relay did not publish the preload within 30 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rate = self.preload_events as f64 / started.elapsed().as_secs_f64();
        eprintln!("bench: relay published the preload at {rate:.0} events/s");
        Ok(())
    }

    /// Follows the stream after the preload until `expected` events came. It watches the
    /// stream itself, not the subjects: a publish that JetStream refuses still reaches plain
    /// subscribers. Every event carries its append's start time.
    async fn watch_bus(
        &self,
        jetstream: &async_nats::jetstream::Context,
        namespace: &Namespace,
        expected: u64,
    ) -> anyhow::Result<JoinHandle<Seen>> {
        let stream = jetstream.get_stream(bus::stream_name(namespace)).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.preload_events + 1,
                },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        Ok(tokio::spawn(async move {
            let mut latencies = histogram();
            let mut seen = 0u64;
            let mut last_seen = Instant::now();
            while seen < expected {
                let Some(Ok(message)) = messages.next().await else { break };
                let now_ns = OffsetDateTime::now_utc().unix_timestamp_nanos();
                seen += 1;
                last_seen = Instant::now();
                let Ok(envelope) = bus::Envelope::decode(&message.payload) else { continue };
                if let Some(sent) = sent_ns(&envelope.payload_json)
                    && sent > 0
                {
                    let _ = latencies.record(((now_ns - sent).max(0) / 1_000) as u64);
                }
            }
            (seen, last_seen, latencies)
        }))
    }

    /// The warm-up, then the timed commands, with how many commands each group-commit
    /// transaction carried in the timed part.
    async fn timed_phase(&self, store: &EventStore, warmup_commands: u64) -> anyhow::Result<Timed> {
        eprintln!("bench: warm-up, {warmup_commands} commands");
        self.drive(store, warmup_commands, true).await?;
        let stats = store.committer_stats();
        let transactions_before = stats.transactions.load(Ordering::Relaxed);
        let commands_before = stats.commands.load(Ordering::Relaxed);
        eprintln!("bench: {} commands from {} writers", self.commands, self.writers);
        let started = Instant::now();
        let latencies = self.drive(store, self.commands, false).await?;
        let elapsed = started.elapsed();
        let transactions = stats.transactions.load(Ordering::Relaxed) - transactions_before;
        let commands = stats.commands.load(Ordering::Relaxed) - commands_before;
        let commands_per_transaction = commands as f64 / transactions.max(1) as f64;
        Ok(Timed { latencies, started, elapsed, commands_per_transaction })
    }

    fn report(&self, timed: &Timed, to_bus: &Histogram<u64>, last_seen: Instant) -> Report {
        let total_events = self.commands * self.events_per_command as u64;
        let append_s = timed.elapsed.as_secs_f64();
        let publish_elapsed = last_seen.saturating_duration_since(timed.started);
        let append = &timed.latencies;
        Report {
            appended_events_per_s: total_events as f64 / append_s,
            commands_per_s: self.commands as f64 / append_s,
            published_events_per_s: if self.no_relay {
                0.0
            } else {
                total_events as f64 / publish_elapsed.as_secs_f64()
            },
            append_ms: [ms_at(append, 0.5), ms_at(append, 0.99), ms_max(append)],
            to_bus_ms: [ms_at(to_bus, 0.5), ms_at(to_bus, 0.99), ms_max(to_bus)],
            commands_per_transaction: timed.commands_per_transaction,
        }
    }

    /// Runs `commands` appends from the writers; returns their latencies in microseconds.
    async fn drive(
        &self,
        store: &EventStore,
        commands: u64,
        warmup: bool,
    ) -> anyhow::Result<Histogram<u64>> {
        let stream_type = StreamType::parse("bench").expect("valid stream type");
        let padding: Arc<str> = "x".repeat(self.payload_bytes.saturating_sub(40)).into();
        let (store, events, group_size) = (store.clone(), self.events_per_command, self.group_size);
        let append = move |count: u64| {
            let (store, stream_type, padding) =
                (store.clone(), stream_type.clone(), padding.clone());
            let now = OffsetDateTime::now_utc();
            let sent_ns = if warmup { 0 } else { now.unix_timestamp_nanos() };
            async move {
                let command = || command(&stream_type, &padding, events, now, sent_ns);
                if group_size == 1 {
                    store.append(command()).await?;
                } else {
                    store.append_all((0..count).map(|_| command()).collect()).await?;
                }
                Ok(())
            }
        };
        timed_loops(self.writers, commands, group_size as u64, append).await
    }

    fn print(&self, r: &Report) {
        let cores = cores();
        println!(
            "brain bench append: {} writers, {} commands x {} events in groups of {}, {} B payloads, {} preloaded, {cores} cores",
            self.writers,
            self.commands,
            self.events_per_command,
            self.group_size,
            self.payload_bytes,
            self.preload_events
        );
        println!(
            "  appended        {:>10.0} events/s  ({:.0} commands/s, {:.1} commands per transaction)",
            r.appended_events_per_s, r.commands_per_s, r.commands_per_transaction
        );
        if !self.no_relay {
            println!("  relay published {:>10.0} events/s", r.published_events_per_s);
        }
        println!(
            "  append latency  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            r.append_ms[0], r.append_ms[1], r.append_ms[2]
        );
        if !self.no_relay {
            println!(
                "  append->bus     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                r.to_bus_ms[0], r.to_bus_ms[1], r.to_bus_ms[2]
            );
        }
        let json = serde_json::json!({
            "bench": "append",
            "params": { "writers": self.writers, "commands": self.commands, "events_per_command": self.events_per_command, "group_size": self.group_size, "payload_bytes": self.payload_bytes, "preload_events": self.preload_events, "no_relay": self.no_relay, "batch_commands_max": self.batch_commands_max, "transactions_in_flight": self.transactions_in_flight, "linger_us": self.linger_us, "cores": cores },
            "results": { "appended_events_per_s": r.appended_events_per_s, "commands_per_s": r.commands_per_s, "published_events_per_s": r.published_events_per_s, "append_p50_ms": r.append_ms[0], "append_p99_ms": r.append_ms[1], "append_to_bus_p50_ms": r.to_bus_ms[0], "append_to_bus_p99_ms": r.to_bus_ms[1], "commands_per_transaction": r.commands_per_transaction },
        });
        println!("{json}");
    }
}

/// One command: a new stream of `events` events, each carrying `sent_ns` and the padding.
fn command(
    stream_type: &StreamType,
    padding: &str,
    events: usize,
    now: OffsetDateTime,
    sent_ns: i128,
) -> Append {
    let events = (0..events)
        .map(|_| {
            NewEvent::new(
                "BenchEventRecorded",
                serde_json::json!({ "sent_ns": sent_ns, "pad": padding }),
            )
        })
        .collect();
    let mut metadata = EventMetadata::new("bench", now);
    metadata.command_id = Some(Uuid::now_v7());
    Append {
        stream_type: stream_type.clone(),
        stream_id: StreamId::from(Uuid::now_v7()),
        expected: ExpectedVersion::Exact(0),
        events,
        metadata,
    }
}

/// Reads `"sent_ns":<int>` from the start of a bench payload without a full parse.
fn sent_ns(payload_json: &str) -> Option<i128> {
    // PostgreSQL's jsonb text puts a space after the colon; serde_json does not.
    let rest = payload_json.split_once("\"sent_ns\":")?.1.trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit() && c != '-').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Fills the store with `count` events in bulk (one per stream), so that the timed phase
/// runs against a store of that size. The relay then publishes them like any backlog.
async fn preload(pool: &PgPool, count: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let chunk = 200_000u64;
    let mut done = 0u64;
    while done < count {
        let n = chunk.min(count - done);
        let mut tx = pool.begin().await?;
        sqlx::query(
            "WITH h AS (UPDATE head SET position = position + $1 RETURNING position - $1 AS base),
             ev AS (
                INSERT INTO events (global_position, stream_type, stream_id, version, event_id,
                                    event_type, schema_version, payload, metadata)
                SELECT h.base + g, 'preload', 'p' || (h.base + g), 1, gen_random_uuid(),
                       'PreloadEventRecorded', 1,
                       jsonb_build_object('sent_ns', 0, 'pad', repeat('x', 160)),
                       jsonb_build_object('actor', 'bench', 'correlation_id', gen_random_uuid(),
                                          'timestamp', '2026-01-01T00:00:00Z')
                FROM h, generate_series(1, $1) AS g)
             INSERT INTO streams (stream_type, stream_id, version)
             SELECT 'preload', 'p' || (h.base + g), 1 FROM h, generate_series(1, $1) AS g",
        )
        .bind(n as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done += n;
        eprintln!("bench: preloaded {done} of {count} events");
    }
    // Rows written here carry no chain hash: chain them now, as `brain migrate` would, so
    // the timed phase's first append does not.
    let chained = crate::eventlog::store::chain::fill(pool).await?;
    eprintln!("bench: chained {chained} preloaded events");
    sqlx::query("VACUUM ANALYZE events").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE streams").execute(pool).await?;
    eprintln!("bench: preload took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_from_a_bench_payload() {
        assert_eq!(sent_ns(r#"{"pad":"xx","sent_ns":1700000000123}"#), Some(1_700_000_000_123));
        assert_eq!(sent_ns(r#"{"pad": "xx", "sent_ns": 42}"#), Some(42));
        assert_eq!(sent_ns(r#"{"pad":"xx"}"#), None);
    }
}
