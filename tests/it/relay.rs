//! The relay against real PostgreSQL and JetStream: every committed event lands on the
//! stream exactly once at sequence = position, through crashes, network cuts, a stream that
//! lost its tail, a second relay standing by, and messages it did not publish (a forgery, a
//! stream from another store, a deleted message), which it finds and rebuilds the stream over.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use brain::eventlog::bus;
use brain::eventlog::relay::{Relay, RelayConfig, RelayError, RelayStatus};
use brain::eventlog::store::EventStore;
use sqlx::migrate::MigrateDatabase;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use crate::bus_forgery::{forged_completion, publish_raw};
use crate::support::{Proxy, TestEnv, append_streams, nats_address, nats_url_at, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn quick() -> RelayConfig {
    RelayConfig {
        idle_check: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

fn start(
    env: &TestEnv,
    client: async_nats::Client,
    config: RelayConfig,
) -> (CancellationToken, tokio::task::JoinHandle<Result<(), RelayError>>) {
    let shutdown = CancellationToken::new();
    let relay = Relay::new(env.pool.clone(), client, env.namespace.clone(), config);
    (shutdown.clone(), tokio::spawn(relay.run(shutdown)))
}

async fn wait_mirrored(env: &TestEnv) {
    let head = env.head().await;
    wait_until("the stream to reach the head", WAIT, || async {
        env.stream_last_sequence().await >= head
    })
    .await;
    env.assert_bus_mirrors_store().await;
}

#[tokio::test]
async fn every_committed_event_is_on_jetstream_once_at_its_position() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let (shutdown, relay) = start(&env, env.nats.clone(), quick());
    // Events committed before and while the relay runs, from concurrent writers.
    append_streams(&store, 50, 3).await;
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { append_streams(&store, 40, 2).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(env.head().await, 50 * 3 + 8 * 40 * 2);
    wait_mirrored(&env).await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_relay_that_dies_mid_batch_is_followed_by_one_that_publishes_the_rest_exactly_once() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 300, 2).await;

    // Given a relay that stops dead after sending 250 publishes, most not yet acknowledged.
    let crashing = RelayConfig { crash_after_publishes: Some(250), ..quick() };
    let (_, first) = start(&env, env.nats.clone(), crashing);
    let outcome = tokio::time::timeout(WAIT, first).await.expect("relay stops").unwrap();
    assert!(matches!(outcome, Err(RelayError::InjectedCrash(250))), "{outcome:?}");
    let after_crash = env.stream_last_sequence().await;
    assert!(after_crash <= 250, "no more than it sent reached the stream: {after_crash}");

    // When another relay starts (and more is committed meanwhile).
    append_streams(&store, 20, 1).await;
    let (shutdown, second) = start(&env, env.nats.clone(), quick());

    // Then the stream holds every event once, at its position.
    wait_mirrored(&env).await;
    shutdown.cancel();
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_relay_cut_off_from_nats_catches_up_once_the_network_returns() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let proxy = Proxy::start(nats_address()).await;
    let client = bus::connect(&nats_url_at(proxy.addr)).await.unwrap();
    let (shutdown, relay) = start(&env, client.clone(), quick());
    append_streams(&store, 100, 1).await;
    wait_mirrored(&env).await;

    // When the network between relay and NATS fails while events keep being committed.
    proxy.cut().await;
    wait_until("the relay's client to notice", WAIT, || async {
        client.connection_state() != async_nats::connection::State::Connected
    })
    .await;
    append_streams(&store, 150, 1).await;
    assert_eq!(env.stream_last_sequence().await, 100, "nothing reached the stream while cut off");

    // Then, once it returns, the relay publishes the rest, each event once.
    proxy.restore();
    wait_mirrored(&env).await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stream_that_lost_its_tail_is_refilled_from_the_store() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let name = bus::stream_name(&env.namespace);
    let (shutdown, relay) = start(&env, env.nats.clone(), quick());
    append_streams(&store, 100, 1).await;
    wait_mirrored(&env).await;

    // When the stream loses everything under a running relay, the relay notices and
    // publishes the whole log again.
    env.jetstream.delete_stream(&name).await.unwrap();
    wait_mirrored(&env).await;

    // When the stream comes back with only its first 60 messages while no relay runs, as
    // after a NATS crash that lost unsynced writes, the next relay publishes 61 to 100.
    shutdown.cancel();
    relay.await.unwrap().unwrap();
    let stream = env.jetstream.get_stream(&name).await.unwrap();
    let mut kept = Vec::new();
    for sequence in 1..=60 {
        let message = stream.get_raw_message(sequence).await.unwrap();
        kept.push((message.subject.to_string(), message.payload.clone(), message.headers.clone()));
    }
    env.jetstream.delete_stream(&name).await.unwrap();
    bus::ensure_stream(&env.jetstream, &env.namespace).await.unwrap();
    for (sequence, (subject, payload, headers)) in kept.into_iter().enumerate() {
        let publish = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .expected_last_sequence(sequence as u64);
        env.jetstream.send_publish(subject, publish).await.unwrap().await.unwrap();
    }
    assert_eq!(env.stream_last_sequence().await, 60);
    let (shutdown, relay) = start(&env, env.nats.clone(), quick());
    wait_mirrored(&env).await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn of_two_relays_only_one_publishes_and_the_standby_takes_over_when_it_stops() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let first = Relay::new(env.pool.clone(), env.nats.clone(), env.namespace.clone(), quick());
    let second_pool = env.other_pool().await;
    let second = Relay::new(second_pool, env.nats.clone(), env.namespace.clone(), quick());
    let (first_count, second_count) = (first.published_counter(), second.published_counter());
    let (stop_first, stop_second) = (CancellationToken::new(), CancellationToken::new());
    let first = tokio::spawn(first.run(stop_first.clone()));
    let second = tokio::spawn(second.run(stop_second.clone()));

    append_streams(&store, 200, 1).await;
    wait_mirrored(&env).await;
    let counts = (first_count.load(Ordering::SeqCst), second_count.load(Ordering::SeqCst));
    assert!(counts == (200, 0) || counts == (0, 200), "exactly one relay published: {counts:?}");

    // When the active one stops, the standby takes the lock and publishes what follows.
    let (stop_active, active, standby_count) = if counts.0 == 200 {
        (stop_first, first, second_count)
    } else {
        (stop_second, second, first_count)
    };
    stop_active.cancel();
    active.await.unwrap().unwrap();
    append_streams(&store, 50, 1).await;
    wait_mirrored(&env).await;
    assert_eq!(standby_count.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn a_stream_that_belongs_to_another_store_is_rebuilt_from_this_one() {
    // Given a stream mirroring one store...
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let (shutdown, relay) = start(&env, env.nats.clone(), quick());
    append_streams(&store, 20, 1).await;
    wait_mirrored(&env).await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();

    // ...when a relay runs against another store (a restored backup, a wrong DATABASE_URL)
    // whose log is longer but different, the store it runs against is the truth: it rebuilds
    // the stream from that store rather than extend it, counts the repair, and says so
    // until it is done.
    let other_url = format!("{}_other", env.database_url);
    sqlx::Postgres::create_database(&other_url).await.unwrap();
    let other_pool = sqlx::PgPool::connect(&other_url).await.unwrap();
    brain::eventlog::db::migrate(&other_pool).await.unwrap();
    let other = EventStore::start(other_pool.clone(), env.namespace.as_str(), Default::default()).0;
    append_streams(&other, 25, 1).await;
    let hold = CancellationToken::new();
    let config = RelayConfig { hold_rebuild: Some(hold.clone()), ..quick() };
    let relay = Running::over(&env, &other_pool, config);
    let status = &relay.status;
    wait_until("the relay to report a repair", WAIT, || async { status.repairing().is_some() })
        .await;
    let why = status.repairing().unwrap();
    assert!(why.contains("message 1 is not the store's event"), "{why}");
    assert_eq!(status.lag(), 25, "nothing on the stream is the other store's");
    hold.cancel();
    wait_until("the repair to end", WAIT, || async { status.repairing().is_none() }).await;
    assert_stream_holds(&env, &other_pool).await;
    assert_eq!(status.lag(), 0);

    relay.stop().await;
    drop(other);
    other_pool.close().await;
    sqlx::Postgres::force_drop_database(&other_url).await.unwrap();
}

/// Asserts that the namespace's stream holds exactly `pool`'s log, each event at its
/// position, as the relay published it.
async fn assert_stream_holds(env: &TestEnv, pool: &sqlx::PgPool) {
    let head = brain::eventlog::store::head(pool).await.unwrap();
    let mut stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!((state.messages, state.first_sequence, state.last_sequence), (head, 1, head));
    let events = brain::eventlog::store::read_range_stored(pool, 0, head, u32::MAX).await.unwrap();
    for event in events {
        let position = event.global_position as u64;
        let message = stream.get_raw_message(position).await.unwrap();
        let envelope = bus::Envelope::from_stored(&event);
        assert_eq!(message.payload, envelope.encode(), "message {position} is the store's");
        assert_eq!(message.subject.as_str(), envelope.subject(&env.namespace));
    }
}

/// A relay running over `pool`'s log into the namespace's stream.
struct Running {
    status: RelayStatus,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RelayError>>,
}

impl Running {
    fn over(env: &TestEnv, pool: &sqlx::PgPool, config: RelayConfig) -> Running {
        let relay = Relay::new(pool.clone(), env.nats.clone(), env.namespace.clone(), config);
        let (status, shutdown) = (relay.status(), CancellationToken::new());
        Running { status, task: tokio::spawn(relay.run(shutdown.clone())), shutdown }
    }

    fn start(env: &TestEnv, config: RelayConfig) -> Running {
        Running::over(env, &env.pool, config)
    }

    /// Waits until the relay has made `repairs` rebuilds, ended the last, and the stream
    /// mirrors the store again.
    async fn repaired(&self, env: &TestEnv, repairs: u64) {
        let status = &self.status;
        wait_until("the relay to rebuild", WAIT, || async { status.repairs() == repairs }).await;
        wait_until("the repair to end", WAIT, || async { status.repairing().is_none() }).await;
        wait_mirrored(env).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Publishes the store's event at `position` as the relay would (expected last sequence).
async fn publish_stored(env: &TestEnv, position: u64) {
    let events =
        brain::eventlog::store::read_range_stored(&env.pool, position - 1, position, 1).await;
    let envelope = bus::Envelope::from_stored(&events.unwrap()[0]);
    let publish = PublishMessage::build()
        .payload(envelope.encode())
        .headers(envelope.headers())
        .expected_last_sequence(position - 1);
    let ack = env.jetstream.send_publish(envelope.subject(&env.namespace), publish).await;
    assert_eq!(ack.unwrap().await.unwrap().sequence, position);
}

/// Fills the stream with the store's events 1 to `head`, but for a forgery at `forged` (the
/// store's event there never reaches the stream), as a relay that crashed amid its
/// publishes may leave it.
async fn stream_with_forgery_at(env: &TestEnv, forged: u64, head: u64) {
    for position in 1..=head {
        if position == forged {
            let envelope = forged_completion(position, &Uuid::now_v7().to_string(), 2);
            assert_eq!(publish_raw(env, &envelope).await, position);
        } else {
            publish_stored(env, position).await;
        }
    }
}

#[tokio::test]
async fn a_message_put_on_the_stream_past_the_log_is_found_and_the_stream_rebuilt() {
    // Given a relay mirroring the store, holding its rebuilds until the test lets them go.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let hold = CancellationToken::new();
    let relay = Running::start(&env, RelayConfig { hold_rebuild: Some(hold.clone()), ..quick() });
    let status = &relay.status;
    append_streams(&store, 10, 1).await;
    wait_mirrored(&env).await;

    // When someone else publishes a message at the next position while the relay is idle.
    let forged = forged_completion(11, &Uuid::now_v7().to_string(), 2);
    assert_eq!(publish_raw(&env, &forged).await, 11);

    // Then the relay finds it, and reports itself repairing, with the true lag: nothing
    // committed is missing yet, then what is committed meanwhile is.
    wait_until("the relay to find it", WAIT, || async { status.repairing().is_some() }).await;
    let why = status.repairing().unwrap();
    assert!(why.contains("a message at 11, where the store has no event"), "{why}");
    assert_eq!((status.lag(), status.repairs()), (0, 1));
    append_streams(&store, 5, 1).await;
    wait_until("the lag to count what is committed", WAIT, || async { status.lag() == 5 }).await;

    // And once it rebuilds, the stream mirrors the store and the relay goes on publishing.
    hold.cancel();
    relay.repaired(&env, 1).await;
    append_streams(&store, 3, 1).await;
    wait_mirrored(&env).await;
    assert_eq!((status.lag(), status.repairs()), (0, 1));
    relay.stop().await;
}

#[tokio::test]
async fn a_forgery_among_what_a_crashed_relay_left_is_found_by_the_next_relay() {
    // Given a stream holding the store's events but for a forgery at 11, followed by the
    // store's 12 to 30 (a relay's publishes in flight go on landing after a foreign one).
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 30, 1).await;
    stream_with_forgery_at(&env, 11, 30).await;

    // When a relay starts, it checks the tail it did not publish, finds the forgery and
    // rebuilds the stream from the store.
    let relay = Running::start(&env, quick());
    relay.repaired(&env, 1).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_message_deleted_from_the_stream_is_published_again() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let (shutdown, relay) = start(&env, env.nats.clone(), quick());
    append_streams(&store, 20, 1).await;
    wait_mirrored(&env).await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();

    // When a message is deleted from the middle of the stream...
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    assert!(stream.delete_message(7).await.unwrap());

    // ...the next relay finds the hole and rebuilds the stream.
    let relay = Running::start(&env, quick());
    relay.repaired(&env, 1).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_reader_that_refused_a_message_makes_the_relay_check_it_and_rebuild() {
    // Given a forgery deep in the stream, further back than the relay checks on its own.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 30, 1).await;
    stream_with_forgery_at(&env, 3, 30).await;
    let relay = Running::start(&env, RelayConfig { verify_tail: 5, ..quick() });
    let status = &relay.status;
    append_streams(&store, 1, 1).await;
    wait_until("the relay to publish 31", WAIT, || async {
        env.stream_last_sequence().await == 31
    })
    .await;
    assert_eq!(status.repairs(), 0, "the tail it checks is right");

    // When a reader reports that it refused the message at 3...
    brain::eventlog::verify::report_refused(&env.pool, env.namespace.as_str(), 3).await;

    // ...the relay checks it and rebuilds the stream.
    relay.repaired(&env, 1).await;
    // A report of a message that is right changes nothing.
    brain::eventlog::verify::report_refused(&env.pool, env.namespace.as_str(), 3).await;
    append_streams(&store, 1, 1).await;
    wait_mirrored(&env).await;
    assert_eq!(status.repairs(), 1);
    relay.stop().await;
}
