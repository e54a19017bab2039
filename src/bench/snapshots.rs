//! `brain bench snapshots`: how long loading one long stream takes with and without its
//! snapshot (decision 0049), in a database of its own (created for the run, dropped after
//! unless `--keep`). It appends an agent with `--events` events and a conversation at its
//! bound (1,000 messages), each with its snapshot taken `every - 1` events before its end
//! (the most a load folds past one), then times `--loads` loads of each folding the whole
//! stream (`command::load_whole`: what every load cost before) and `--loads` through the
//! snapshot (`command::load`, what the command handler does), and reports p50, p99 and max.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use anyhow::{Context, bail};
use domain::agent::{Agent, AgentEvent, Registration};
use domain::aggregate::Aggregate;
use domain::conversation::{Conversation, ConversationEvent, MESSAGES_MAX, Speaker, Turn};
use domain::{EventMetadata, ExpectedVersion, StreamId};
use hdrhistogram::Histogram;
use sqlx::migrate::MigrateDatabase;
use uuid::Uuid;

use super::{histogram, ms_at, ms_max, with_database};
use crate::config::DATABASE_URL_DEFAULT;
use crate::eventlog::command::{self, load, load_whole};
use crate::eventlog::store::{APPEND_EVENTS_MAX, Append, EventStore};
use crate::eventlog::{db, snapshot};

#[derive(Debug, clap::Args)]
pub struct SnapshotsBench {
    /// PostgreSQL server to use; the bench creates its own database on it.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT)]
    database_url: String,
    /// Events in the agent's stream.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Loads timed of each stream, each way.
    #[arg(long, default_value_t = 100)]
    loads: u64,
    /// Characters in each of the conversation's messages.
    #[arg(long, default_value_t = 500)]
    message_chars: usize,
    /// Keep the bench database afterwards.
    #[arg(long)]
    keep: bool,
}

impl SnapshotsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.events < 2 || self.loads == 0 {
            bail!("--events must be at least 2 and --loads at least 1");
        }
        let suffix = &Uuid::new_v4().simple().to_string()[..12];
        let database_url =
            with_database(&self.database_url, &format!("brain_bench_snapshots_{suffix}"))?;
        let pool = db::connect(&database_url, 8).await?;
        db::migrate(&pool).await?;
        let (store, committer) = EventStore::start(pool.clone(), "bench", Default::default());
        let result = self.measure(&store).await;
        drop(store);
        committer.await?;
        if self.keep {
            eprintln!("bench: kept database {}", crate::config::redacted_url(&database_url));
        } else {
            pool.close().await;
            sqlx::Postgres::force_drop_database(&database_url)
                .await
                .context("drop bench database")?;
        }
        result
    }

    async fn measure(&self, store: &EventStore) -> anyhow::Result<()> {
        let agent = StreamId::from(Uuid::now_v7());
        let events: Vec<AgentEvent> = (1..=self.events).map(agent_event).collect();
        self.compare::<Agent>(store, &agent, &events, "agent").await?;

        let conversation = StreamId::from(Uuid::now_v7());
        let text = "x".repeat(self.message_chars);
        let mut events = vec![ConversationEvent::ConversationStarted {
            agent: "coder".into(),
            by: "user:bench".into(),
            at_ms: 0,
        }];
        events.extend((0..MESSAGES_MAX).map(|n| ConversationEvent::ConversationMessageAdded {
            turn: Turn {
                speaker: if n.is_multiple_of(2) { Speaker::User } else { Speaker::Agent },
                text: text.clone(),
                provider: None,
                model: None,
                input_tokens: 0,
                output_tokens: 0,
                at_ms: n as i64,
            },
        }));
        self.compare::<Conversation>(store, &conversation, &events, "conversation").await
    }

    /// Appends `events` to the stream, its snapshot taken `every - 1` before the end, then
    /// times loads without and with it.
    async fn compare<A: Aggregate + PartialEq + std::fmt::Debug>(
        &self,
        store: &EventStore,
        stream_id: &StreamId,
        events: &[A::Event],
        what: &str,
    ) -> anyhow::Result<()> {
        let every = A::SNAPSHOTS.map_or(1, |snapshots| snapshots.every) as usize;
        let at = events.len().saturating_sub(every - 1).max(1);
        let started = Instant::now();
        append::<A>(store, stream_id, &events[..at], 0).await?;
        let taken = snapshot::take::<A>(store, stream_id)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        append::<A>(store, stream_id, &events[at..], at as u64).await?;
        println!(
            "{what}: {} events appended in {:.1} s, snapshot at version {}",
            events.len(),
            started.elapsed().as_secs_f64(),
            taken.map_or("none".to_owned(), |version| version.to_string()),
        );
        let (whole, _) =
            load_whole::<A>(store, stream_id).await.map_err(|error| anyhow::anyhow!("{error}"))?;
        let (through, _) =
            load::<A>(store, stream_id).await.map_err(|error| anyhow::anyhow!("{error}"))?;
        anyhow::ensure!(whole == through, "{what}: the load through the snapshot differs");
        let without = self.time(|| load_whole::<A>(store, stream_id)).await?;
        report("  load without snapshot", &without);
        let with = self.time(|| load::<A>(store, stream_id)).await?;
        report("  load with snapshot", &with);
        Ok(())
    }

    async fn time<F, Fut, T, E>(&self, mut load: F) -> anyhow::Result<Histogram<u64>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut latencies = histogram();
        for _ in 0..self.loads {
            let started = Instant::now();
            load().await.map_err(|error| anyhow::anyhow!("{error}"))?;
            let _ = latencies.record(started.elapsed().as_micros() as u64);
        }
        Ok(latencies)
    }
}

fn report(what: &str, latencies: &Histogram<u64>) {
    println!(
        "{what:<24} p50 {:>9.2} ms  p99 {:>9.2} ms  max {:>9.2} ms  ({} loads)",
        ms_at(latencies, 0.5),
        ms_at(latencies, 0.99),
        ms_max(latencies),
        latencies.len()
    );
}

/// Appends `events` after `version`, in appends of at most [`APPEND_EVENTS_MAX`].
async fn append<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    events: &[A::Event],
    mut version: u64,
) -> anyhow::Result<()> {
    let metadata = EventMetadata::new("bench", time::OffsetDateTime::now_utc());
    for chunk in events.chunks(APPEND_EVENTS_MAX) {
        store
            .append(Append {
                stream_type: A::stream_type(),
                stream_id: stream_id.clone(),
                expected: ExpectedVersion::Exact(version),
                events: chunk.iter().map(command::new_event).collect(),
                metadata: metadata.clone(),
            })
            .await?;
        version += chunk.len() as u64;
    }
    Ok(())
}

/// The agent's `n`th event (from 1): registered, then unresponsive, recovered and restarted
/// in turn, as a long-lived agent's life goes.
fn agent_event(n: u64) -> AgentEvent {
    let at_ms = 1_700_000_000_000 + n as i64;
    match n % 3 {
        _ if n == 1 => AgentEvent::AgentRegistered {
            registration: Registration {
                name: "long-lived".into(),
                kind: "coder".into(),
                capabilities: vec!["rust".into()],
                version: "1.0.0".into(),
                owner: "bench".into(),
                labels: BTreeMap::from([("zone".into(), "eu".into())]),
                key_id: None,
            },
            at_ms,
        },
        2 => AgentEvent::AgentUnresponsive { last_seen_ms: at_ms - 10_000, at_ms },
        0 => AgentEvent::AgentRecovered { at_ms },
        _ => AgentEvent::AgentRestarted { reason: format!("restart {n}"), at_ms },
    }
}
