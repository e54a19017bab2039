//! Round trips to each service over a bench run, for `brain bench missions --round-trips`: the
//! counters each service keeps, read before and after, and their difference per completed
//! mission.
//!
//! - PostgreSQL: transactions (`xact_commit + xact_rollback` of `pg_stat_database`) of one
//!   database, read over a connection to another database (`postgres`) so that reading does
//!   not count. Backends publish their counts late (an idle backend up to about ten seconds
//!   after its last transaction, a backend that exits at once), so a reading waits until the
//!   counter stops moving ([`settled`]), and a bench that owns its serve stops it first.
//! - Redis: the calls of `INFO commandstats`, without `INFO` itself. Redis keeps them for the
//!   whole server, so they count every client of it, and a command a script runs counts as
//!   well as the script (`EVALSHA` and its `ZADD` are two); script calls are also counted
//!   apart.
//! - NATS: messages published to the namespace's JetStream stream (its last sequence) and
//!   deliveries of each of its consumers (their consumer sequence, which counts redeliveries).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use crate::config::Namespace;
use crate::eventlog::{bus, db};

/// How long a PostgreSQL counter must stay unchanged to count as published.
const PG_QUIET: Duration = Duration::from_millis(1_500);
/// Longest wait for the counter to settle: past PostgreSQL's ten seconds for an idle backend.
const PG_SETTLE_MAX: Duration = Duration::from_secs(12);
/// Between two readings of the counter.
const PG_POLL: Duration = Duration::from_millis(100);

/// The counters, read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub pg_transactions: u64,
    pub redis_commands: u64,
    pub redis_script_calls: u64,
    pub nats_published: u64,
    /// Deliveries by consumer name.
    pub nats_delivered: BTreeMap<String, u64>,
}

/// What a run cost, per completed mission.
#[derive(Debug, Clone, PartialEq)]
pub struct PerMission {
    pub pg_transactions: f64,
    pub redis_commands: f64,
    pub redis_script_calls: f64,
    pub nats_published: f64,
    pub nats_delivered: f64,
    pub nats_delivered_by_consumer: BTreeMap<String, f64>,
}

impl PerMission {
    /// `after - before`, divided by `missions` (a counter that went back, as after a reset,
    /// counts as zero).
    pub fn between(before: &Counters, after: &Counters, missions: u64) -> PerMission {
        let per = |b: u64, a: u64| a.saturating_sub(b) as f64 / missions.max(1) as f64;
        let by_consumer: BTreeMap<String, f64> = after
            .nats_delivered
            .iter()
            .map(|(name, a)| {
                (name.clone(), per(before.nats_delivered.get(name).copied().unwrap_or(0), *a))
            })
            .collect();
        PerMission {
            pg_transactions: per(before.pg_transactions, after.pg_transactions),
            redis_commands: per(before.redis_commands, after.redis_commands),
            redis_script_calls: per(before.redis_script_calls, after.redis_script_calls),
            nats_published: per(before.nats_published, after.nats_published),
            nats_delivered: by_consumer.values().sum(),
            nats_delivered_by_consumer: by_consumer,
        }
    }
}

/// Reads the counters of one database, one Redis server and one namespace's stream.
pub struct Meter {
    /// A connection to the server's `postgres` database, not the measured one.
    stats: sqlx::PgPool,
    database: String,
    redis: redis::aio::ConnectionManager,
    jetstream: async_nats::jetstream::Context,
    stream: String,
}

impl Meter {
    pub async fn connect(
        database_url: &str,
        redis_url: &str,
        nats_url: &str,
        namespace: &Namespace,
    ) -> anyhow::Result<Meter> {
        let database = database_name(database_url);
        let stats_url = super::with_database(database_url, "postgres")?;
        let stats = db::connect(&stats_url, 1).await.context("PostgreSQL for the statistics")?;
        let redis = redis::Client::open(redis_url)?.get_connection_manager().await?;
        let jetstream = bus::jetstream(bus::connect(nats_url).await?, 1);
        Ok(Meter { stats, database, redis, jetstream, stream: bus::stream_name(namespace) })
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Redis and NATS now, PostgreSQL once its counter has settled.
    pub async fn read(&mut self) -> anyhow::Result<Counters> {
        let mut counters = self.read_bus_and_redis().await?;
        counters.pg_transactions = self.pg_transactions_settled().await?;
        Ok(counters)
    }

    /// The Redis and NATS counters now; the PostgreSQL one is left at zero.
    pub async fn read_bus_and_redis(&mut self) -> anyhow::Result<Counters> {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut self.redis).await?;
        let (redis_commands, redis_script_calls) = command_calls(&info);
        let mut stream = self.jetstream.get_stream(&self.stream).await?;
        let nats_published = stream.info().await?.state.last_sequence;
        let mut nats_delivered = BTreeMap::new();
        let mut consumers = stream.consumers();
        while let Some(consumer) = consumers.next().await {
            let consumer = consumer?;
            nats_delivered.insert(consumer.name, consumer.delivered.consumer_sequence);
        }
        Ok(Counters {
            pg_transactions: 0,
            redis_commands,
            redis_script_calls,
            nats_published,
            nats_delivered,
        })
    }

    /// Waits (at most `PG_SETTLE_MAX`) until no backend is connected to the database; a
    /// backend publishes its counts as it exits.
    pub async fn wait_for_no_backends(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PG_SETTLE_MAX;
        loop {
            let (backends,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(&self.database)
                    .fetch_one(&self.stats)
                    .await?;
            if backends == 0 || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(PG_POLL).await;
        }
    }

    /// The database's transactions, once the counter has not moved for `PG_QUIET` (or after
    /// `PG_SETTLE_MAX`, when something keeps it moving).
    pub async fn pg_transactions_settled(&self) -> anyhow::Result<u64> {
        let mut readings = Vec::new();
        let started = Instant::now();
        loop {
            readings.push((Instant::now(), self.pg_transactions().await?));
            if let Some(value) = settled(&readings, PG_QUIET) {
                return Ok(value);
            }
            if started.elapsed() >= PG_SETTLE_MAX {
                return Ok(readings.last().map_or(0, |(_, value)| *value));
            }
            tokio::time::sleep(PG_POLL).await;
        }
    }

    async fn pg_transactions(&self) -> anyhow::Result<u64> {
        let mut connection = self.stats.acquire().await?;
        // Statistics read in a transaction are a snapshot; start from a fresh one.
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *connection).await?;
        let (count,): (Option<i64>,) = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&self.database)
        .fetch_one(&mut *connection)
        .await
        .with_context(|| format!("no statistics for database {}", self.database))?;
        Ok(count.unwrap_or(0) as u64)
    }

    pub async fn close(self) {
        self.stats.close().await;
    }
}

/// The value of the latest reading, if the readings (in time order) show it unchanged for at
/// least `quiet`.
pub fn settled(readings: &[(Instant, u64)], quiet: Duration) -> Option<u64> {
    let (last_at, last) = *readings.last()?;
    let since = readings.iter().rev().take_while(|(_, value)| *value == last).last()?.0;
    (last_at.duration_since(since) >= quiet).then_some(last)
}

/// The calls in an `INFO commandstats` answer, without `INFO` itself: all commands, and the
/// script calls among them.
pub fn command_calls(info: &str) -> (u64, u64) {
    let mut all = 0;
    let mut scripts = 0;
    for line in info.lines() {
        let Some((command, stats)) =
            line.trim().strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if command == "info" {
            continue;
        }
        all += calls;
        if ["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"].contains(&command) {
            scripts += calls;
        }
    }
    (all, scripts)
}

/// The database name of a PostgreSQL URL (`postgres` when it names none).
pub fn database_name(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    let after_scheme = without_query.split_once("://").map_or(without_query, |(_, rest)| rest);
    match after_scheme.split_once('/') {
        Some((_, name)) if !name.is_empty() => name.to_owned(),
        _ => "postgres".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_settled_once_unchanged_for_the_quiet_time() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let quiet = Duration::from_millis(1_000);
        assert_eq!(settled(&[], quiet), None);
        assert_eq!(settled(&[(at(0), 5)], quiet), None);
        let moving = [(at(0), 5), (at(600), 5), (at(1_200), 7), (at(1_800), 7)];
        assert_eq!(settled(&moving, quiet), None, "7 held only 600 ms");
        let quiet_after = [(at(0), 5), (at(600), 7), (at(1_200), 7), (at(1_700), 7)];
        assert_eq!(settled(&quiet_after, quiet), Some(7));
    }

    #[test]
    fn commandstats_calls_leave_out_info_and_count_scripts_apart() {
        let info = "# Commandstats\r\n\
            cmdstat_zadd:calls=10,usec=13,usec_per_call=1.30,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_evalsha:calls=4,usec=160,usec_per_call=40.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_info:calls=99,usec=1,usec_per_call=0.01,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_fcall:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(command_calls(info), (15, 5));
    }

    #[test]
    fn per_mission_figures_are_differences_over_the_completed_missions() {
        let before = Counters {
            pg_transactions: 100,
            redis_commands: 1_000,
            redis_script_calls: 10,
            nats_published: 7,
            nats_delivered: [("queue".to_owned(), 7)].into(),
        };
        let after = Counters {
            pg_transactions: 300,
            redis_commands: 1_400,
            redis_script_calls: 50,
            nats_published: 407,
            nats_delivered: [("queue".to_owned(), 407), ("list".to_owned(), 100)].into(),
        };
        let per = PerMission::between(&before, &after, 100);
        assert_eq!(per.pg_transactions, 2.0);
        assert_eq!(per.redis_commands, 4.0);
        assert_eq!(per.redis_script_calls, 0.4);
        assert_eq!(per.nats_published, 4.0);
        assert_eq!(per.nats_delivered_by_consumer["queue"], 4.0);
        assert_eq!(per.nats_delivered_by_consumer["list"], 1.0, "a consumer made during the run");
        assert_eq!(per.nats_delivered, 5.0);
    }

    #[test]
    fn the_measured_database_is_the_last_segment_of_the_url() {
        assert_eq!(database_name("postgres://u:p@h:5432/brain?sslmode=disable"), "brain");
        assert_eq!(database_name("postgres://h:5432"), "postgres");
        assert_eq!(database_name("postgres://h/"), "postgres");
    }
}
