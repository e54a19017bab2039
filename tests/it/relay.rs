//! The relay against real PostgreSQL and JetStream: every committed event lands on the
//! stream exactly once at sequence = position, through crashes, network cuts, a stream that
//! lost its tail, and a second relay standing by.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use brain::eventlog::bus;
use brain::eventlog::relay::{Relay, RelayConfig, RelayError};
use brain::eventlog::store::EventStore;
use sqlx::migrate::MigrateDatabase;
use tokio_util::sync::CancellationToken;

use crate::support::{Proxy, TestEnv, append_streams, nats_url, wait_until};

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
    let upstream: SocketAddr =
        nats_url().trim_start_matches("nats://").parse().expect("NATS address");
    let proxy = Proxy::start(upstream).await;
    let client = bus::connect(&format!("nats://{}", proxy.addr)).await.unwrap();
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
async fn a_relay_refuses_to_extend_a_stream_that_belongs_to_another_store() {
    // Given a stream mirroring one store...
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let (shutdown, relay) = start(&env, env.nats.clone(), quick());
    append_streams(&store, 20, 1).await;
    wait_mirrored(&env).await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();

    // ...when a relay runs against another store (a restored backup, a wrong DATABASE_URL)
    // whose log is longer but different, it refuses rather than extending the stream.
    let other_url = format!("{}_other", env.database_url);
    sqlx::Postgres::create_database(&other_url).await.unwrap();
    let other_pool = sqlx::PgPool::connect(&other_url).await.unwrap();
    brain::eventlog::db::migrate(&other_pool).await.unwrap();
    let other = EventStore::start(other_pool.clone(), env.namespace.as_str(), Default::default()).0;
    append_streams(&other, 25, 1).await;
    let relay = Relay::new(other_pool.clone(), env.nats.clone(), env.namespace.clone(), quick());
    let outcome = relay.stream_last_sequence().await;
    assert!(matches!(outcome, Err(RelayError::StreamDiverged { position: 20, .. })), "{outcome:?}");
    assert_eq!(env.stream_last_sequence().await, 20);

    drop(other);
    other_pool.close().await;
    sqlx::Postgres::force_drop_database(&other_url).await.unwrap();
}
