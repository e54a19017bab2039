//! A projector that reads one stream type: its consumer is filtered on it, it passes long
//! runs of other events without reading them and still reaches the head, a wanted event the
//! bus lost is read from the store, a consumer left with another filter is replaced, and a
//! rebuild equals the model fed live.

use std::time::Duration;

use brain::eventlog::bus;
use brain::eventlog::projector::{Runner, RunnerConfig};
use brain::eventlog::projectors::{PgProjection, PgWriter, rebuild};
use brain::eventlog::relay::{Relay, RelayConfig};
use brain::eventlog::store::EventStore;
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

fn start_relay(env: &TestEnv) -> CancellationToken {
    let config = RelayConfig { idle_check: Duration::from_millis(100), ..RelayConfig::default() };
    let relay = Relay::new(env.pool.clone(), env.nats.clone(), env.namespace.clone(), config);
    let shutdown = CancellationToken::new();
    tokio::spawn(relay.run(shutdown.clone()));
    shutdown
}

async fn start_runner(env: &TestEnv, config: RunnerConfig) -> CancellationToken {
    let store = PgProjection::live(env.pool.clone(), ProbeCountWriter, NAME);
    let runner = Runner::new(
        ProbeCount,
        store,
        env.pool.clone(),
        env.nats.clone(),
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

async fn consumer_info(env: &TestEnv) -> Option<async_nats::jetstream::consumer::Info> {
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    stream.consumer_info(format!("projector_{NAME}")).await.ok()
}

#[tokio::test]
async fn a_filtered_projector_passes_a_long_run_of_other_events_unread_and_reaches_the_head() {
    // Given a projector of `probe` streams following the bus.
    let env = setup().await;
    let (store, _committer) = env.store();
    let _relay = start_relay(&env);
    let _runner = start_runner(&env, quick()).await;
    wait_until("the consumer", WAIT, || async { consumer_info(&env).await.is_some() }).await;
    let info = consumer_info(&env).await.unwrap();
    assert_eq!(info.config.filter_subject, format!("{}.events.probe.>", env.namespace));

    // When a long run of other events is appended, then a few probes among more of them.
    append_of(&store, "sample", 20, 100).await;
    wait_at_head(&env).await;
    append_of(&store, "probe", 3, 2).await;
    append_of(&store, "sample", 10, 100).await;
    append_of(&store, "probe", 2, 1).await;
    append_of(&store, "sample", 5, 100).await;

    // Then its checkpoint reaches the head, its consumer was sent only the probes, and the
    // model is the one the log gives, live and rebuilt.
    wait_at_head(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    let delivered = consumer_info(&env).await.unwrap().delivered.consumer_sequence;
    assert!(delivered <= 8, "the consumer was sent {delivered} messages, not only the 8 probes");
    let live = model(&env).await;
    let position = rebuild(&env.pool, ProbeCount, ProbeCountWriter).await.unwrap();
    assert_eq!(position, env.head().await);
    assert_eq!(model(&env).await, live);
}

#[tokio::test]
async fn a_wanted_event_the_bus_lost_is_read_from_the_store() {
    // Given a projector that reads the bus and does not look at the store while it is quiet,
    // held in its commit of one probe, so that what follows waits on the stream.
    let env = setup().await;
    let (store, _committer) = env.store();
    let _relay = start_relay(&env);
    let slow = RunnerConfig {
        idle_check: Duration::from_secs(60),
        quiet_advance: Duration::from_secs(60),
        ..quick()
    };
    let _runner = start_runner(&env, slow).await;
    wait_until("the consumer", WAIT, || async { consumer_info(&env).await.is_some() }).await;
    append_of(&store, "probe", 1, 1).await;
    wait_at_head(&env).await;
    let mut hold = env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM projector_checkpoints WHERE projector = $1 FOR UPDATE")
        .bind(NAME)
        .execute(&mut *hold)
        .await
        .unwrap();
    append_of(&store, "probe", 1, 1).await;
    // More probes than the consumer fetches ahead (two pulls of 200), then the one to lose
    // between long runs of other events.
    append_of(&store, "probe", 10, 100).await;
    append_of(&store, "sample", 5, 100).await;
    append_of(&store, "probe", 1, 1).await;
    let lost = env.head().await;
    append_of(&store, "sample", 5, 100).await;
    append_of(&store, "probe", 1, 1).await;
    let head = env.head().await;
    wait_until("the relay to publish everything", WAIT, || async {
        env.stream_last_sequence().await == head
    })
    .await;

    // When the bus loses one of its events before the projector reads it.
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    assert!(stream.delete_message(lost).await.unwrap());
    hold.rollback().await.unwrap();

    // Then the projector reads it from the store and reaches the head with every probe.
    wait_at_head(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    let lost_stream: (String,) =
        sqlx::query_as("SELECT stream_id FROM events WHERE global_position = $1")
            .bind(lost as i64)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(model(&env).await.iter().any(|(id, ..)| *id == lost_stream.0));
}

#[tokio::test]
async fn a_consumer_left_with_another_filter_is_replaced() {
    // Given the projector's durable consumer as an earlier release left it: another filter,
    // from the start.
    let env = setup().await;
    let (store, _committer) = env.store();
    let _relay = start_relay(&env);
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    let old = async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(format!("projector_{NAME}")),
        filter_subject: format!("{}.events.sample.>", env.namespace),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::All,
        ..Default::default()
    };
    stream.create_consumer(old).await.unwrap();
    append_of(&store, "probe", 2, 3).await;
    append_of(&store, "sample", 2, 3).await;

    // When the runner starts.
    let _runner = start_runner(&env, quick()).await;

    // Then its consumer filters on its own stream type, and it follows the bus with it.
    let wanted = format!("{}.events.probe.>", env.namespace);
    wait_until("the consumer to be replaced", WAIT, || async {
        consumer_info(&env).await.is_some_and(|info| info.config.filter_subject == wanted)
    })
    .await;
    append_of(&store, "probe", 3, 1).await;
    wait_at_head(&env).await;
    assert_eq!(model(&env).await, expected(&env).await);
    wait_until("the new probes to come by the bus", WAIT, || async {
        consumer_info(&env).await.is_some_and(|info| info.delivered.consumer_sequence >= 1)
    })
    .await;
}
