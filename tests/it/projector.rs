//! The projector runtime against real services, with the `event_type_stats` projector:
//! restarts, redeliveries and holes never change the result, and a rebuild from the log
//! equals the model fed live from the bus.

use std::time::Duration;

use brain::eventlog::projector::{Feeder, Runner, RunnerConfig};
use brain::eventlog::projectors::event_type_stats::EventTypeStatsWriter;
use brain::eventlog::projectors::{PgProjection, rebuild};
use brain::eventlog::store::read_all;
use projections::event_type_stats::{EventTypeStats, NAME};
use tokio_util::sync::CancellationToken;

use crate::support::{TestEnv, append_streams, wait_until};

const WAIT: Duration = Duration::from_secs(30);

type Row = (String, String, i64, i64);

/// The read model as stored.
async fn model(env: &TestEnv) -> Vec<Row> {
    sqlx::query_as(
        "SELECT stream_type, event_type, events, last_position FROM event_type_stats ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

/// What the model must hold, computed straight from the log.
async fn expected(env: &TestEnv) -> Vec<Row> {
    sqlx::query_as(
        "SELECT stream_type, event_type, count(*), max(global_position) FROM events
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn checkpoint(env: &TestEnv) -> u64 {
    brain::eventlog::projectors::checkpoint(&env.pool, NAME).await.unwrap()
}

fn quick() -> RunnerConfig {
    RunnerConfig {
        idle_check: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

fn stats_store(env: &TestEnv) -> PgProjection<EventTypeStatsWriter> {
    PgProjection::live(env.pool.clone(), EventTypeStatsWriter, NAME)
}

async fn start_runner(env: &TestEnv) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let (feed, feed_stop) = env.running_feed().await;
    let runner = Runner::new(
        EventTypeStats,
        stats_store(env),
        env.pool.clone(),
        feed,
        env.namespace.clone(),
        quick(),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let run = runner.run(shutdown.clone());
    let task = tokio::spawn(async move {
        run.await;
        feed_stop.cancel();
    });
    (shutdown, task)
}

async fn wait_caught_up(env: &TestEnv) {
    let head = env.head().await;
    wait_until("the projector to reach the head", WAIT, || async { checkpoint(env).await >= head })
        .await;
}

#[tokio::test]
async fn a_model_fed_live_from_the_bus_equals_one_rebuilt_from_the_store() {
    // Given a projector that starts on an empty store, so everything reaches it live.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let _relay = env.start_relay();
    let (stop, runner) = start_runner(&env).await;
    wait_until("the feed's consumer to exist", WAIT, || async {
        env.consumer_names().await.len() == 1
    })
    .await;
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { append_streams(&store, 60, 2).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    wait_caught_up(&env).await;
    let live = model(&env).await;
    assert_eq!(live, expected(&env).await);

    // When it is rebuilt from the store while the live runner keeps going.
    let position = rebuild(&env.pool, EventTypeStats, EventTypeStatsWriter).await.unwrap();

    // Then the rebuilt model is the same, and the live runner carries on from it.
    assert_eq!(position, env.head().await);
    assert_eq!(model(&env).await, live);
    append_streams(&store, 30, 1).await;
    wait_caught_up(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    stop.cancel();
    runner.await.unwrap();
}

#[tokio::test]
async fn a_projector_stopped_mid_stream_and_restarted_ends_as_if_fed_once() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let _relay = env.start_relay();
    let (stop, runner) = start_runner(&env).await;
    let writer = tokio::spawn({
        let store = store.clone();
        async move { append_streams(&store, 600, 1).await }
    });

    // Stopped somewhere in the middle of the stream...
    wait_until("the projector to get going", WAIT, || async { checkpoint(&env).await >= 100 })
        .await;
    stop.cancel();
    runner.await.unwrap();
    writer.await.unwrap();
    let stopped_at = checkpoint(&env).await;
    assert!(stopped_at < env.head().await, "stopped before the end ({stopped_at})");

    // ...then restarted, while more arrives.
    let (stop, runner) = start_runner(&env).await;
    append_streams(&store, 100, 2).await;
    wait_caught_up(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    stop.cancel();
    runner.await.unwrap();
}

#[tokio::test]
async fn events_fed_twice_or_after_a_hole_are_applied_exactly_once() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 90, 1).await;
    let events = read_all(&env.pool, 0, 1_000).await.unwrap();
    let mut feeder =
        Feeder::new(EventTypeStats, stats_store(&env), env.pool.clone(), 7).await.unwrap();

    // Redelivery: the same events again, and an overlapping run.
    feeder.feed_events(&events[..40]).await.unwrap();
    feeder.feed_events(&events[..40]).await.unwrap();
    feeder.feed_events(&events[20..50]).await.unwrap();
    assert_eq!(feeder.checkpoint(), 50);

    // A hole: events 51 to 70 never arrive by the bus; they are fetched from the store.
    feeder.feed_events(&events[70..]).await.unwrap();
    assert_eq!(feeder.checkpoint(), 90);
    assert_eq!(model(&env).await, expected(&env).await);

    // A fresh feeder over the same store resumes at its checkpoint and skips everything.
    let mut resumed =
        Feeder::new(EventTypeStats, stats_store(&env), env.pool.clone(), 7).await.unwrap();
    assert_eq!(resumed.checkpoint(), 90);
    resumed.feed_events(&events).await.unwrap();
    assert_eq!(model(&env).await, expected(&env).await);
}

/// A pooled connection its last user left inside a transaction of the server's (begun by a
/// statement sqlx does not count) does not fail the next snapshot read: the snapshot ends
/// that transaction and begins again.
#[tokio::test]
async fn a_snapshot_on_a_connection_left_inside_a_transaction_still_reads() {
    let env = TestEnv::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&env.database_url)
        .await
        .unwrap();
    let mut leaked = pool.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT 1").execute(&mut *leaked).await.unwrap();
    drop(leaked);

    let snapshot = brain::eventlog::projectors::Snapshot::begin(&pool).await.unwrap();
    assert_eq!(snapshot.position(NAME).await.unwrap(), 0);
    // A savepoint is refused (25P01) only outside a transaction block.
    let outside = sqlx::raw_sql("SAVEPOINT probe").execute(&pool).await.unwrap_err();
    let code = outside.as_database_error().and_then(|error| error.code()).unwrap_or_default();
    assert_eq!(code, "25P01", "the connection went back to the pool outside any transaction");
}
