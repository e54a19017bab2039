//! The bus is not trusted, anywhere: a message someone else puts on BRAiN's event stream
//! (here a forged `MissionCompleted` at the next position, as a local process could publish
//! on an anonymous NATS) never reaches a WebSocket client or a read model, and the relay
//! rebuilds the stream from the store on its own, saying so in `/ready` while it does; and
//! a client without BRAiN's credentials cannot publish on BRAiN's subjects at all.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use brain::eventlog::bus::{self, Envelope};
use brain::eventlog::relay::RelayConfig;
use brain::serve::{self, ServeOptions};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::serve::{get, redis_url, services};
use crate::support::{ADMIN_TOKEN, KEY_EVENTS, TestEnv, nats_address, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The reader user's password on the local NATS of `scripts/services.sh`.
const LOCAL_READER_PASSWORD: &str = "reader-local";

/// An envelope for `position` that is no event of the store: a `MissionCompleted` of
/// `mission_id`, well formed, with an event id of its own.
pub fn forged_completion(position: u64, mission_id: &str, version: u64) -> Envelope {
    let now = time::OffsetDateTime::now_utc();
    Envelope {
        layout_version: bus::ENVELOPE_VERSION,
        global_position: position,
        stream_type: "mission".to_owned(),
        stream_id: mission_id.to_owned(),
        version,
        event_id: Uuid::now_v7().into_bytes(),
        event_type: "MissionCompleted".to_owned(),
        schema_version: 1,
        payload_json: json!({ "attempt": 1, "result": { "forged": true }, "at_ms": 0 }).to_string(),
        metadata_json: json!({ "actor": "key:a0000000000000a1", "at": now.unix_timestamp() })
            .to_string(),
        recorded_at_unix_ns: now.unix_timestamp_nanos(),
    }
}

/// Publishes `envelope` on the namespace's stream as any client with access could: no
/// expected sequence. Answers the sequence it got.
pub async fn publish_raw(env: &TestEnv, envelope: &Envelope) -> u64 {
    let publish = PublishMessage::build().payload(envelope.encode()).headers(envelope.headers());
    let subject = envelope.subject(&env.namespace);
    env.jetstream.send_publish(subject, publish).await.unwrap().await.unwrap().sequence
}

type Client = WebSocketStream<TcpStream>;

async fn connect(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    let url = format!("ws://{addr}/ws/events");
    let (client, _) = tokio_tungstenite::client_async(crate::support::ws_request(&url), stream)
        .await
        .expect("handshake");
    client
}

async fn next_event(client: &mut Client) -> Value {
    loop {
        let next = tokio::time::timeout(WAIT, client.next()).await.expect("a message in time");
        match next.expect("connection open").expect("no WebSocket error") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

async fn enqueue(addr: SocketAddr, name: &str) -> String {
    let response = crate::support::client()
        .post(format!("http://{addr}/api/missions/enqueue"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    let mission: Value = response.json().await.expect("JSON");
    mission["mission_id"].as_str().expect("a mission id").to_owned()
}

async fn ready(addr: SocketAddr) -> Value {
    let (status, body) = get(addr, "/ready").await;
    assert_eq!(status, 200, "everything answers: {body}");
    body
}

#[tokio::test]
async fn a_forged_event_on_the_bus_never_reaches_a_client_and_the_relay_rebuilds_the_stream() {
    // Given a serve whose relay holds its rebuild until the test lets it go (as rebuilding a
    // long log takes a while), a connected WebSocket client, and a mission on the stream.
    let env = TestEnv::new().await;
    let hold = CancellationToken::new();
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.relay = RelayConfig {
        idle_check: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(50),
        hold_rebuild: Some(hold.clone()),
        ..RelayConfig::default()
    };
    options.access.admin_key = Some(ADMIN_TOKEN.to_owned());
    let shutdown = CancellationToken::new();
    let server = serve::start(options, shutdown.clone()).await.expect("server starts");
    let (addr, feed) = (server.local_addr, server.feed.clone());
    wait_until("the admin key's event to be broadcast", WAIT, || async {
        feed.position() == KEY_EVENTS
    })
    .await;
    let mut client = connect(addr).await;
    wait_until("the client to connect", WAIT, || async { feed.clients() == 1 }).await;
    let first = enqueue(addr, "first").await;
    let event = next_event(&mut client).await;
    assert_eq!(
        (event["global_position"].as_u64(), event["stream_id"].as_str()),
        (Some(2), Some(first.as_str()))
    );
    wait_until("the relay to publish it", WAIT, || async { env.stream_last_sequence().await == 2 })
        .await;
    assert_eq!(ready(addr).await["status"], "ready");

    // When a process with access to NATS publishes a MissionCompleted of that mission at the
    // next position, and the next real event is committed after it.
    let forged = forged_completion(3, &first, 2);
    assert_eq!(publish_raw(&env, &forged).await, 3, "the forgery took position 3 on the bus");
    let second = enqueue(addr, "second").await;

    // Then the client gets the store's event at position 3, never the forgery.
    let event = next_event(&mut client).await;
    assert_eq!(event["global_position"], 3);
    assert_eq!(
        (event["event_type"].as_str(), event["stream_id"].as_str()),
        (Some("MissionEnqueued"), Some(second.as_str()))
    );

    // And the relay, having found where the stream and the store part, is rebuilding the
    // stream: /ready says so (still 200: events reach clients from the store), with the true
    // lag, which grows with what is committed meanwhile.
    wait_until("/ready to say degraded", WAIT, || async {
        ready(addr).await["status"] == "degraded"
    })
    .await;
    let third = enqueue(addr, "third").await;
    let event = next_event(&mut client).await;
    assert_eq!(
        (event["global_position"].as_u64(), event["stream_id"].as_str()),
        (Some(4), Some(third.as_str()))
    );
    wait_until("/ready to tell the lag of 2", WAIT, || async {
        let relay = ready(addr).await["checks"]["relay"].as_str().unwrap_or_default().to_owned();
        relay.ends_with("2 events not yet on the stream")
    })
    .await;
    let body = ready(addr).await;
    let relay = body["checks"]["relay"].as_str().unwrap();
    assert!(relay.starts_with("repairing: "), "{body}");
    assert!(relay.contains("message 3") || relay.contains("at 3"), "names where they part: {body}");
    for check in ["postgres", "nats", "redis", "committer"] {
        assert_eq!(body["checks"][check], "ok", "{body}");
    }

    // When the rebuild goes ahead, the stream mirrors the store again, /ready says ready, and
    // the relay goes on publishing: the next event reaches the client as ever.
    hold.cancel();
    wait_until("/ready to say ready", WAIT, || async { ready(addr).await["status"] == "ready" })
        .await;
    assert_eq!(ready(addr).await["checks"]["relay"], "ok");
    env.assert_bus_mirrors_store().await;
    let fourth = enqueue(addr, "fourth").await;
    let event = next_event(&mut client).await;
    assert_eq!(
        (event["global_position"].as_u64(), event["stream_id"].as_str()),
        (Some(5), Some(fourth.as_str()))
    );
    wait_until("the relay to publish it", WAIT, || async { env.stream_last_sequence().await == 5 })
        .await;
    env.assert_bus_mirrors_store().await;

    // And the read models saw the store's events, not the forgery: the first mission is
    // listed and queued, not completed.
    wait_until("the mission list to hold all four", WAIT, || async {
        get(addr, "/api/missions").await.1["missions"].as_array().is_some_and(|m| m.len() == 4)
    })
    .await;
    let (_, page) = get(addr, "/api/missions").await;
    let listed = page["missions"].as_array().unwrap();
    let listed_first = listed.iter().find(|m| m["mission_id"] == first.as_str()).unwrap();
    assert_eq!(listed_first["status"], "queued", "{listed_first}");
    wait_until("the queue to reflect every event", WAIT, || async {
        get(addr, "/api/missions/queue?agent=coder").await.1["position"].as_u64() >= Some(5)
    })
    .await;
    let (_, queue) = get(addr, "/api/missions/queue?agent=coder").await;
    let queued: Vec<&str> = queue["missions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mission_id"].as_str().unwrap())
        .collect();
    assert!(queued.contains(&first.as_str()), "the first mission waits in the queue: {queue}");

    shutdown.cancel();
    tokio::time::timeout(WAIT, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_client_without_brains_credentials_cannot_publish_on_its_subjects() {
    // The local NATS (after scripts/services.sh) refuses anonymous clients outright...
    let env = TestEnv::new().await;
    let address = format!("nats://{}", nats_address());
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(address.as_str())
        .await;
    let error = anonymous.expect_err(
        "NATS accepts anonymous clients: run scripts/services.sh to start it with accounts",
    );
    assert_eq!(error.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{error}");
    let wrong = async_nats::ConnectOptions::with_user_and_password("brain".into(), "guess".into())
        .connection_timeout(Duration::from_secs(5))
        .connect(address.as_str())
        .await;
    assert_eq!(
        wrong.err().map(|e| e.kind()),
        Some(async_nats::ConnectErrorKind::AuthorizationViolation)
    );

    // ...and the read-only user may not put anything on BRAiN's event subjects.
    let reader = async_nats::ConnectOptions::with_user_and_password(
        "reader".into(),
        LOCAL_READER_PASSWORD.into(),
    )
    .connection_timeout(Duration::from_secs(5))
    .connect(address)
    .await
    .expect("the reader logs in");
    let jetstream =
        async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(1)).build(reader);
    let forged = forged_completion(1, &Uuid::now_v7().to_string(), 2);
    let publish = PublishMessage::build().payload(forged.encode()).headers(forged.headers());
    let outcome = match jetstream.send_publish(forged.subject(&env.namespace), publish).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    assert!(outcome.is_err(), "the reader's publish was acknowledged");
    assert_eq!(env.stream_last_sequence().await, 0, "nothing reached the stream");
}
