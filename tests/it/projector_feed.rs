//! Projectors follow their process's live feed: however many there are, the bus has one
//! consumer for them; one that reads one stream type passes long runs of other events and
//! still reaches the head; a wanted event the bus lost, or events a projector missed by
//! falling behind the feed, are read from the store; the consumers projectors once followed
//! are removed; a batch it does not read moves its stored checkpoint only with its next
//! change or a flush; and a rebuild equals the model fed live.

use std::time::Duration;

use brain::eventlog::bus;
use brain::eventlog::feed::{FeedConfig, FeedHandle};
use brain::eventlog::projector::{Feeder, Runner, RunnerConfig};
use brain::eventlog::projectors::event_type_stats::EventTypeStatsWriter;
use brain::eventlog::projectors::{PgProjection, PgWriter, rebuild};
use brain::eventlog::store::{EventStore, read_all};
use domain::{ExpectedVersion, RecordedEvent};
use projections::{Projector, Reads, StreamEvents, Unreadable};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::support::{TestEnv, append, new_stream_id, stream_type, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const NAME: &str = "probe_count";

/// Counts the events of each `probe` stream; reads no other stream type.
struct ProbeCount;

impl Projector for ProbeCount {
    type Change = (String, u64);

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads = Reads::Streams(&[StreamEvents::all("probe")]);
        READS
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        changes: &mut Vec<(String, u64)>,
    ) -> Result<(), Unreadable> {
        assert_eq!(event.stream_type.as_str(), "probe", "the runtime feeds only what it reads");
        changes.push((event.stream_id.to_string(), event.global_position));
        Ok(())
    }
}

struct ProbeCountWriter;

impl PgWriter<(String, u64)> for ProbeCountWriter {
    fn tables(&self) -> &'static [&'static str] {
        &["probe_counts"]
    }

    async fn write(
        &self,
        connection: &mut PgConnection,
        suffix: &str,
        changes: Vec<(String, u64)>,
    ) -> Result<(), sqlx::Error> {
        for (stream_id, position) in changes {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO probe_counts{suffix} AS t VALUES ($1, 1, $2)
                 ON CONFLICT (stream_id) DO UPDATE
                 SET events = t.events + 1, last_position = excluded.last_position"
            )))
            .bind(stream_id)
            .bind(position as i64)
            .execute(&mut *connection)
            .await?;
        }
        Ok(())
    }
}

type Row = (String, i64, i64);

async fn model(env: &TestEnv) -> Vec<Row> {
    sqlx::query_as("SELECT stream_id, events, last_position FROM probe_counts ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn expected(env: &TestEnv) -> Vec<Row> {
    sqlx::query_as(
        "SELECT stream_id, count(*), max(global_position) FROM events
         WHERE stream_type = 'probe' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn checkpoint(env: &TestEnv) -> u64 {
    brain::eventlog::projectors::checkpoint(&env.pool, NAME).await.unwrap()
}

async fn wait_at_head(env: &TestEnv) {
    let head = env.head().await;
    wait_until("the projector to reach the head", WAIT, || async { checkpoint(env).await >= head })
        .await;
}

async fn setup() -> TestEnv {
    let env = TestEnv::new().await;
    sqlx::query(
        "CREATE TABLE probe_counts (stream_id text PRIMARY KEY, events bigint NOT NULL,
                                    last_position bigint NOT NULL)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    env
}

async fn start_runner(env: &TestEnv, feed: &FeedHandle, config: RunnerConfig) -> CancellationToken {
    let store = PgProjection::live(env.pool.clone(), ProbeCountWriter, NAME);
    let runner = Runner::new(
        ProbeCount,
        store,
        env.pool.clone(),
        feed.clone(),
        env.namespace.clone(),
        config,
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(runner.run(shutdown.clone()));
    shutdown
}

fn quick() -> RunnerConfig {
    RunnerConfig {
        idle_check: Duration::from_millis(100),
        quiet_advance: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

/// `streams` streams of `per_stream` events of one stream type.
async fn append_of(store: &EventStore, kind: &str, streams: usize, per_stream: usize) {
    let event_type = if kind == "probe" { "ProbeRecorded" } else { "SampleTaken" };
    for _ in 0..streams {
        let append = append(
            &stream_type(kind),
            &new_stream_id(),
            ExpectedVersion::Exact(0),
            event_type,
            per_stream,
        );
        store.append(append).await.unwrap();
    }
}

#[tokio::test]
async fn projectors_share_one_bus_consumer_and_one_of_probes_passes_other_events_unread() {
    // Given two projectors of one process, one of every event and one of `probe` streams,
    // following the process's feed.
    let env = setup().await;
    let (store, _committer) = env.store();
    let _relay = env.start_relay();
    let (feed, _feed_stop) = env.running_feed().await;
    let _runner = start_runner(&env, &feed, quick()).await;
    let stats = Runner::new(
        projections::event_type_stats::EventTypeStats,
        PgProjection::live(env.pool.clone(), EventTypeStatsWriter, "event_type_stats"),
        env.pool.clone(),
        feed.clone(),
        env.namespace.clone(),
        quick(),
    )
    .await
    .unwrap();
    let stats_stop = CancellationToken::new();
    tokio::spawn(stats.run(stats_stop.clone()));

    // When a long run of other events is appended, then a few probes among more of them.
    append_of(&store, "sample", 20, 100).await;
    wait_at_head(&env).await;
    append_of(&store, "probe", 3, 2).await;
    append_of(&store, "sample", 10, 100).await;
    append_of(&store, "probe", 2, 1).await;
    append_of(&store, "sample", 5, 100).await;

    // Then both reach the head with the models the log gives (the probe projector was given
    // only probes: its `apply` asserts it), and the bus had one consumer for them all.
    wait_at_head(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    let head = env.head().await;
    wait_until("the stats to reach the head", WAIT, || async {
        let at = brain::eventlog::projectors::checkpoint(&env.pool, "event_type_stats").await;
        at.unwrap() >= head
    })
    .await;
    let (counted,): (i64,) = sqlx::query_as("SELECT sum(events)::bigint FROM event_type_stats")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(counted as u64, head);
    assert_eq!(env.consumer_names().await.len(), 1, "one consumer: the feed's");
    let live = model(&env).await;
    let position = rebuild(&env.pool, ProbeCount, ProbeCountWriter).await.unwrap();
    assert_eq!(position, env.head().await);
    assert_eq!(model(&env).await, live);
    stats_stop.cancel();
}

/// A runner that does not look at the store while the feed is quiet: what it gets, it gets
/// from the feed.
fn feed_only() -> RunnerConfig {
    RunnerConfig {
        idle_check: Duration::from_secs(60),
        quiet_advance: Duration::from_secs(60),
        ..quick()
    }
}

#[tokio::test]
async fn a_wanted_event_the_bus_lost_is_read_from_the_store() {
    // Given a projector at the head, on a feed made but not yet following the bus.
    let env = setup().await;
    let (store, _committer) = env.store();
    append_of(&store, "probe", 2, 1).await;
    let config = FeedConfig { idle_check: Duration::from_secs(60), ..FeedConfig::default() };
    let (feed, feed_stop) = env.feed(config).await;
    let _runner = start_runner(&env, &feed.handle(), feed_only()).await;
    wait_at_head(&env).await;

    // When probes among other events are published, and the bus loses one probe before the
    // feed reads it.
    let _relay = env.start_relay();
    append_of(&store, "probe", 3, 1).await;
    append_of(&store, "sample", 2, 10).await;
    append_of(&store, "probe", 1, 1).await;
    let lost = env.head().await;
    append_of(&store, "sample", 2, 10).await;
    append_of(&store, "probe", 1, 1).await;
    let head = env.head().await;
    wait_until("the relay to publish everything", WAIT, || async {
        env.stream_last_sequence().await == head
    })
    .await;
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    assert!(stream.delete_message(lost).await.unwrap());
    tokio::spawn(feed.run(feed_stop.clone()));

    // Then the projector has it, from the store, and reaches the head with every probe.
    wait_at_head(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    let lost_stream: (String,) =
        sqlx::query_as("SELECT stream_id FROM events WHERE global_position = $1")
            .bind(lost as i64)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(model(&env).await.iter().any(|(id, ..)| *id == lost_stream.0));
    feed_stop.cancel();
}

#[tokio::test]
async fn a_projector_that_falls_behind_the_feed_reads_what_it_missed_from_the_store() {
    // Given a feed that keeps only 4 events for readers behind it, and a projector held in
    // its commit, so that it falls far behind.
    let env = setup().await;
    let (store, _committer) = env.store();
    let _relay = env.start_relay();
    let config = FeedConfig {
        buffer_events: 4,
        idle_check: Duration::from_millis(100),
        ..FeedConfig::default()
    };
    let (feed, feed_stop) = env.feed(config).await;
    let handle = feed.handle();
    tokio::spawn(feed.run(feed_stop.clone()));
    let _runner = start_runner(&env, &handle, feed_only()).await;
    append_of(&store, "probe", 1, 1).await;
    wait_at_head(&env).await;
    let mut hold = env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM projector_checkpoints WHERE projector = $1 FOR UPDATE")
        .bind(NAME)
        .execute(&mut *hold)
        .await
        .unwrap();
    append_of(&store, "probe", 1, 1).await;
    append_of(&store, "probe", 20, 5).await;
    let head = env.head().await;
    wait_until("the feed to pass the head", WAIT, || async { handle.position() == head }).await;

    // When it is let go, and one more probe comes live.
    hold.rollback().await.unwrap();
    append_of(&store, "probe", 1, 1).await;

    // Then it read what the feed no longer held from the store: its model is the log's.
    wait_at_head(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    feed_stop.cancel();
}

#[tokio::test]
async fn the_consumers_projectors_once_followed_are_removed_and_no_other() {
    // Given the durable consumers an earlier release's projectors followed, and another's.
    let env = setup().await;
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    let durable = |name: &str| async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::All,
        ..Default::default()
    };
    for name in ["projector_mission_list", "projector_mission_queue", "analytics"] {
        stream.create_consumer(durable(name)).await.unwrap();
    }

    // When they are cleared.
    let deleted =
        brain::eventlog::projector::remove_old_consumers(env.nats.clone(), &env.namespace)
            .await
            .unwrap();

    // Then the projectors' are gone and the other stays.
    assert_eq!(deleted, 2);
    assert_eq!(env.consumer_names().await, vec!["analytics".to_owned()]);
}

/// The events after `after`, as the log holds them.
async fn events_after(env: &TestEnv, after: u64) -> Vec<RecordedEvent> {
    read_all(&env.pool, after, 1_000).await.unwrap()
}

#[tokio::test]
async fn a_batch_a_projector_does_not_read_moves_its_stored_checkpoint_only_with_its_next_change_or_a_flush()
 {
    // Given a probe projector fed by hand, its empty commits put off for longer than the test.
    let env = setup().await;
    let (store, _committer) = env.store();
    let live = || PgProjection::live(env.pool.clone(), ProbeCountWriter, NAME);
    let mut feeder = Feeder::new(ProbeCount, live(), env.pool.clone(), 100).await.unwrap();
    feeder.defer_empty_commits(Duration::from_secs(3_600));
    append_of(&store, "probe", 1, 1).await;
    feeder.feed_events(&events_after(&env, 0).await).await.unwrap();
    assert_eq!(checkpoint(&env).await, 1, "a change commits at once");

    // When batches of other events come, then a probe event.
    append_of(&store, "other", 3, 1).await;
    feeder.feed_events(&events_after(&env, 1).await).await.unwrap();
    assert_eq!((feeder.checkpoint(), checkpoint(&env).await), (4, 1), "nothing changed: no commit");
    append_of(&store, "probe", 1, 1).await;
    feeder.feed_events(&events_after(&env, 4).await).await.unwrap();

    // Then the probe's commit moves the stored checkpoint over both, and the model is whole.
    assert_eq!(checkpoint(&env).await, 5);
    assert_eq!(model(&env).await, expected(&env).await);

    // And a feeder restarted before a flush reads the rest again to the same model; a flush
    // stores what was put off.
    append_of(&store, "other", 2, 1).await;
    feeder.feed_events(&events_after(&env, 5).await).await.unwrap();
    assert_eq!(checkpoint(&env).await, 5);
    let mut restarted = Feeder::new(ProbeCount, live(), env.pool.clone(), 100).await.unwrap();
    assert_eq!(restarted.catch_up().await.unwrap(), 7);
    assert_eq!(model(&env).await, expected(&env).await);
    restarted.defer_empty_commits(Duration::from_secs(3_600));
    append_of(&store, "other", 1, 1).await;
    restarted.feed_events(&events_after(&env, 7).await).await.unwrap();
    assert_eq!((restarted.checkpoint(), checkpoint(&env).await), (8, 7));
    restarted.flush().await.unwrap();
    assert_eq!(checkpoint(&env).await, 8);

    // And without a deferral, the default, every batch commits.
    let mut eager = Feeder::new(ProbeCount, live(), env.pool.clone(), 100).await.unwrap();
    append_of(&store, "other", 1, 1).await;
    eager.feed_events(&events_after(&env, 8).await).await.unwrap();
    assert_eq!(checkpoint(&env).await, 9);
}
