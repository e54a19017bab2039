//! The live event feed, `GET /ws/events`, against a real server: live delivery, filters,
//! resuming with `from` without gap or duplicate, slow clients dropped with a reason, bad
//! queries refused before the upgrade, clients that answer no ping dropped, and shutdown closing
//! open clients.

use std::net::SocketAddr;
use std::time::Duration;

use brain::eventlog::feed::{Feed, FeedConfig, FeedHandle};
use brain::eventlog::store::Append;
use brain::serve::{self, ServeOptions};
use domain::{EventMetadata, ExpectedVersion, NewEvent};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::serve::{crypto_provider, get, redis_url, services};
use crate::support::KEY_EVENTS;
use crate::support::{TestEnv, append_streams, new_stream_id, stream_type, wait_until};

const WAIT: Duration = Duration::from_secs(30);

type Client = WebSocketStream<TcpStream>;

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    feed: FeedHandle,
}

impl Running {
    async fn start(env: &TestEnv, feed: FeedConfig) -> Running {
        let mut options =
            ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
        options.feed = feed;
        options.access.admin_key = Some(crate::support::ADMIN_TOKEN.to_owned());
        let shutdown = CancellationToken::new();
        let server = serve::start(options, shutdown.clone()).await.expect("server starts");
        // The admin key's event is broadcast before any client connects, so that what a
        // test's clients see starts after it.
        let feed = server.feed.clone();
        wait_until("the admin key's event to be broadcast", WAIT, || async {
            feed.position() == KEY_EVENTS
        })
        .await;
        Running { addr: server.local_addr, shutdown, task: server.task, feed: server.feed }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(WAIT, self.task).await.expect("server stops in time");
        outcome.unwrap().expect("server stops without error");
    }

    /// Waits until the server counts `n` connected clients: each has then subscribed.
    async fn wait_for_clients(&self, n: usize) {
        wait_until(&format!("{n} clients connected"), WAIT, || async { self.feed.clients() == n })
            .await;
    }
}

async fn connect(addr: SocketAddr, query: &str) -> Client {
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    let url = format!("ws://{addr}/ws/events{query}");
    let (client, _) = tokio_tungstenite::client_async(crate::support::ws_request(&url), stream)
        .await
        .expect("handshake");
    client
}

#[derive(Debug)]
enum Received {
    Event(String),
    Closed(u16, String),
}

async fn receive(client: &mut Client) -> Received {
    loop {
        let next = tokio::time::timeout(WAIT, client.next()).await.expect("a message in time");
        match next.expect("connection open").expect("no WebSocket error") {
            Message::Text(text) => return Received::Event(text.as_str().to_owned()),
            Message::Close(Some(frame)) => {
                return Received::Closed(frame.code.into(), frame.reason.to_string());
            }
            Message::Close(None) => return Received::Closed(1005, String::new()),
            _ => {}
        }
    }
}

/// Completes the closing handshake the server started: the client's answer goes out as it
/// reads on, and the server then ends the connection.
async fn finish_close(mut client: Client) {
    let rest = tokio::time::timeout(WAIT, async { while client.next().await.is_some() {} });
    rest.await.expect("the server ends the connection");
}

async fn next_event(client: &mut Client) -> Value {
    match receive(client).await {
        Received::Event(text) => serde_json::from_str(&text).expect("JSON"),
        Received::Closed(code, reason) => panic!("closed with {code}: {reason}"),
    }
}

/// The position of an event's JSON text, read from its start without parsing the rest
/// (a big event takes a debug build long to parse).
fn position_of(text: &str) -> u64 {
    let rest = text.strip_prefix("{\"global_position\":").expect("the position comes first");
    rest[..rest.find(',').unwrap()].parse().unwrap()
}

async fn next_events(client: &mut Client, n: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(client).await);
    }
    events
}

fn position(event: &Value) -> u64 {
    event["global_position"].as_u64().expect("a position")
}

/// The store's log as the API shows it.
async fn store_log(env: &TestEnv) -> Vec<Value> {
    let events = brain::eventlog::store::read_all(&env.pool, 0, u32::MAX).await.unwrap();
    events.iter().map(|event| serde_json::to_value(event).unwrap()).collect()
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Value {
    crypto_provider();
    let response = crate::support::client()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.expect("JSON body")
}

async fn enqueue(addr: SocketAddr, name: &str) -> String {
    let mission = post(addr, "/api/missions/enqueue", json!({ "name": name })).await;
    mission["mission_id"].as_str().expect("a mission id").to_owned()
}

#[tokio::test]
async fn live_events_reach_a_connected_client_in_order_as_the_api_shows_them() {
    let env = TestEnv::new().await;
    let server = Running::start(&env, FeedConfig::default()).await;
    let mut client = connect(server.addr, "").await;
    server.wait_for_clients(1).await;

    let mut missions = Vec::new();
    for n in 0..5 {
        missions.push(enqueue(server.addr, &format!("mission {n}")).await);
    }
    let events = next_events(&mut client, 5).await;

    let expected: Vec<u64> = (1..=5).map(|n| KEY_EVENTS + n).collect();
    assert_eq!(events.iter().map(position).collect::<Vec<_>>(), expected);
    let ids: Vec<&str> = events.iter().map(|e| e["stream_id"].as_str().unwrap()).collect();
    assert_eq!(ids, missions);
    assert!(events.iter().all(|e| e["event_type"] == "MissionEnqueued"));
    assert_eq!(events, store_log(&env).await[1..], "each message is the event as the API shows it");
    server.stop().await;
}

#[tokio::test]
async fn filters_deliver_only_the_selected_stream_types_or_mission() {
    let env = TestEnv::new().await;
    let server = Running::start(&env, FeedConfig::default()).await;
    let (store, _committer) = env.store();
    // Before the clients connect: a mission, then events of other streams, which the
    // clients that replay with `from` must leave out as well.
    let first = enqueue(server.addr, "first").await;
    append_streams(&store, 3, 1).await;
    wait_until("the feed to broadcast what is there", WAIT, || async {
        server.feed.position() == KEY_EVENTS + 4
    })
    .await;

    let mut samples = connect(server.addr, "?stream_type=sample").await;
    let mut probes_and_missions = connect(server.addr, "?stream_type=probe,mission").await;
    let mut one_mission = connect(server.addr, &format!("?mission_id={first}&from=0")).await;
    let mut all_samples = connect(server.addr, "?stream_type=sample&from=0").await;
    server.wait_for_clients(4).await;

    append_streams(&store, 6, 1).await;
    enqueue(server.addr, "second").await;
    append_streams(&store, 2, 1).await;
    post(server.addr, &format!("/api/missions/{first}/cancel"), json!({})).await;

    let log = store_log(&env).await;
    let selected = |keep: &dyn Fn(&Value) -> bool, after: u64| -> Vec<Value> {
        log.iter().filter(|e| position(e) > after && keep(e)).cloned().collect()
    };
    let of_type = |types: &'static [&'static str]| {
        move |e: &Value| types.iter().any(|t| e["stream_type"] == *t)
    };
    let expected_samples = selected(&of_type(&["sample"]), KEY_EVENTS + 4);
    let expected_probes_and_missions = selected(&of_type(&["probe", "mission"]), KEY_EVENTS + 4);
    let expected_mission = selected(&|e: &Value| e["stream_id"] == first.as_str(), 0);
    let expected_all_samples = selected(&of_type(&["sample"]), 0);
    assert_eq!((expected_samples.len(), expected_all_samples.len()), (3, 4));
    assert_eq!(expected_mission.len(), 2, "enqueued, then cancelled");

    assert_eq!(next_events(&mut samples, 3).await, expected_samples);
    let n = expected_probes_and_missions.len();
    assert_eq!(next_events(&mut probes_and_missions, n).await, expected_probes_and_missions);
    assert_eq!(next_events(&mut one_mission, 2).await, expected_mission);
    assert_eq!(next_events(&mut all_samples, 4).await, expected_all_samples);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_resumes_with_from_sees_every_event_once_in_order() {
    let env = TestEnv::new().await;
    // Small pages, so that the replay takes several reads while events keep coming.
    let config = FeedConfig { page_events_max: 7, ..FeedConfig::default() };
    let server = Running::start(&env, config).await;
    let (store, _committer) = env.store();
    append_streams(&store, 20, 1).await;

    // A client reads part of the log, then goes away.
    let mut client = connect(server.addr, "?from=0").await;
    let mut seen = next_events(&mut client, 12).await;
    client.close(None).await.expect("close");
    drop(client);

    // More is appended while it is away, and goes on being appended as it comes back.
    append_streams(&store, 30, 1).await;
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            for _ in 0..15 {
                append_streams(&store, 2, 1).await;
            }
        }
    });
    let last_seen = position(seen.last().unwrap());
    let mut client = connect(server.addr, &format!("?from={last_seen}")).await;
    while position(seen.last().unwrap()) < KEY_EVENTS + 80 {
        seen.push(next_event(&mut client).await);
    }
    writer.await.unwrap();

    assert_eq!(
        seen.iter().map(position).collect::<Vec<_>>(),
        (1..=KEY_EVENTS + 80).collect::<Vec<_>>()
    );
    assert_eq!(seen, store_log(&env).await);
    server.stop().await;
}

/// An append of one event whose payload is about `bytes` long.
fn big_event(bytes: usize) -> Append {
    Append {
        stream_type: stream_type("probe"),
        stream_id: new_stream_id(),
        expected: ExpectedVersion::Exact(0),
        events: vec![NewEvent::new("ProbeRecorded", json!({ "pad": "x".repeat(bytes) }))],
        metadata: EventMetadata::new("test", time::OffsetDateTime::now_utc()),
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_with_the_reason_and_others_keep_up() {
    let env = TestEnv::new().await;
    let config = FeedConfig {
        buffer_events: 32,
        send_timeout_ms: 1_000,
        // Long enough for the test to start reading once it sees the drop.
        close_timeout: WAIT,
        ..FeedConfig::default()
    };
    let server = Running::start(&env, config).await;
    let (store, _committer) = env.store();
    let mut slow = connect(server.addr, "?from=0").await;
    let mut fast = connect(server.addr, "?from=0").await;
    server.wait_for_clients(2).await;
    let reader = tokio::spawn(async move {
        let mut last = 0;
        loop {
            match receive(&mut fast).await {
                Received::Event(text) => last = position_of(&text),
                Received::Closed(code, reason) => {
                    finish_close(fast).await;
                    return (last, code, reason);
                }
            }
        }
    });

    // Big events fill the socket buffers of the client that does not read, until the server
    // gives up on it.
    let mut rounds = 0;
    while server.feed.slow_drops() == 0 {
        rounds += 1;
        assert!(rounds <= 200, "the slow client was never dropped");
        for _ in 0..5 {
            store.append(big_event(200_000)).await.unwrap();
        }
    }
    let head = env.head().await;
    assert_eq!(server.feed.slow_drops(), 1, "only the client that does not read is dropped");
    wait_until("the feed to broadcast everything", WAIT, || async {
        server.feed.position() == head
    })
    .await;

    // Reading now, the slow client gets what was written to it, then the reason.
    let mut last = 0;
    let (code, reason) = loop {
        match receive(&mut slow).await {
            Received::Event(text) => {
                assert_eq!(position_of(&text), last + 1, "in order, without a gap");
                last = position_of(&text);
            }
            Received::Closed(code, reason) => break (code, reason),
        }
    };
    finish_close(slow).await;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.starts_with("slow consumer: "), "{reason}");
    assert!(reason.ends_with(&format!("resume with ?from={last}")), "{reason}");
    assert!(last < head);

    // Resuming where it says gives the rest.
    let mut resumed = connect(server.addr, &format!("?from={last}")).await;
    for expected in last + 1..=head {
        match receive(&mut resumed).await {
            Received::Event(text) => assert_eq!(position_of(&text), expected),
            closed => panic!("{closed:?}"),
        }
    }
    resumed.close(None).await.unwrap();
    drop(resumed);

    server.shutdown.cancel();
    let (fast_last, code, reason) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!((fast_last, code), (head, 1001), "{reason}");
    assert_eq!(reason, format!("server shutting down; resume with ?from={head}"));
    tokio::time::timeout(WAIT, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn bad_queries_get_a_400_naming_the_field_before_any_upgrade() {
    let env = TestEnv::new().await;
    let server = Running::start(&env, FeedConfig::default()).await;
    for (query, code, field) in [
        ("from=abc", "invalid_field", Some("from")),
        ("from=-1", "invalid_field", Some("from")),
        ("from=5", "invalid_field", Some("from")),
        ("mission_id=not-a-uuid", "invalid_field", Some("mission_id")),
        ("stream_type=Mission", "invalid_field", Some("stream_type")),
        ("stream_type=probe,,sample", "invalid_field", Some("stream_type")),
        ("stream_id=a.b", "invalid_field", Some("stream_id")),
        ("colour=blue", "invalid_query", None),
    ] {
        let (status, body) = get(server.addr, &format!("/ws/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{query}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }

    // A WebSocket handshake with a bad query is answered by the same 400, not upgraded.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://{}/ws/events?mission_id=42", server.addr);
    match tokio_tungstenite::client_async(crate::support::ws_request(&url), stream).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["field"], "mission_id");
        }
        other => panic!("expected an HTTP 400, got {:?}", other.map(|_| ())),
    }

    // A good query without the upgrade is refused in the same shape.
    let (status, body) = get(server.addr, "/ws/events?stream_type=mission").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("not_websocket")), "{body}");
    assert_eq!(env.head().await, KEY_EVENTS);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_open_clients_and_the_server_still_stops_cleanly() {
    let env = TestEnv::new().await;
    let server = Running::start(&env, FeedConfig::default()).await;
    let from = format!("?from={KEY_EVENTS}");
    let clients = vec![connect(server.addr, "").await, connect(server.addr, &from).await];
    server.wait_for_clients(2).await;

    server.shutdown.cancel();
    for mut client in clients {
        match receive(&mut client).await {
            Received::Closed(code, reason) => {
                assert_eq!(code, 1001);
                assert_eq!(reason, format!("server shutting down; resume with ?from={KEY_EVENTS}"));
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        finish_close(client).await;
    }
    let outcome = tokio::time::timeout(WAIT, server.task).await.expect("server stops in time");
    outcome.unwrap().expect("server stops without error");
    assert_eq!(server.feed.clients(), 0);
}

#[tokio::test]
async fn the_feed_reads_the_store_when_nothing_arrives_on_the_bus() {
    // No relay runs here: nothing is ever published, so only the store can tell the feed.
    let env = TestEnv::new().await;
    let config = FeedConfig { idle_check: Duration::from_millis(100), ..FeedConfig::default() };
    let stop = CancellationToken::new();
    let feed =
        Feed::new(env.pool.clone(), env.nats.clone(), env.namespace.clone(), config, stop.clone())
            .await
            .unwrap();
    let handle = feed.handle();
    let mut live = handle.subscribe();
    let task = tokio::spawn(feed.run(stop.clone()));

    let (store, _committer) = env.store();
    append_streams(&store, 5, 1).await;
    let mut received = Vec::new();
    while received.len() < 5 {
        let event = tokio::time::timeout(WAIT, live.recv()).await.expect("in time").unwrap();
        received.push(serde_json::from_slice::<Value>(&event.json).unwrap());
    }
    assert_eq!(received, store_log(&env).await);
    assert_eq!(env.stream_last_sequence().await, 0, "nothing was on the bus");

    stop.cancel();
    tokio::time::timeout(WAIT, task).await.expect("the feed stops").unwrap();
}

/// A server's WebSocket frames (unmasked, each under 126 bytes of payload): opcode and
/// payload.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let [first, second, rest @ ..] = bytes {
        let length = usize::from(second & 0x7f);
        assert!(length < 126 && rest.len() >= length, "a short frame: {bytes:?}");
        frames.push((first & 0x0f, rest[..length].to_vec()));
        bytes = &rest[length..];
    }
    frames
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_dropped_in_time_and_one_that_answers_stays() {
    use brain::api::ws::{CLOSE_NO_PONG, PINGS_UNANSWERED_MAX};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    let env = TestEnv::new().await;
    let ping = Duration::from_millis(300);
    let close_timeout = Duration::from_millis(500);
    let config = FeedConfig { ping_interval: ping, close_timeout, ..FeedConfig::default() };
    let server = Running::start(&env, config).await;
    // Given a client that reads on (its library answers every ping as it reads it) ...
    let mut answering = connect(server.addr, "").await;
    server.wait_for_clients(1).await;
    let pings = Arc::new(AtomicUsize::new(0));
    let reader = {
        let pings = pings.clone();
        tokio::spawn(async move {
            loop {
                match answering.next().await {
                    Some(Ok(Message::Ping(_))) => pings.fetch_add(1, Ordering::SeqCst),
                    Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
                    other => panic!("the answering client got {other:?}"),
                };
            }
        })
    };
    // ... and one that never reads again, so answers none (a peer gone without a word).
    let mut silent = connect(server.addr, "").await;
    server.wait_for_clients(2).await;
    let connected = std::time::Instant::now();

    // When the pings go unanswered: the silent client is dropped once the ping after the
    // last it may leave unanswered is due, and its close frame given up on after the close
    // timeout.
    wait_until("the silent client to be dropped", WAIT, || async { server.feed.clients() == 1 })
        .await;
    let dropped_after = connected.elapsed();
    let earliest = ping * PINGS_UNANSWERED_MAX;
    let latest = ping * (PINGS_UNANSWERED_MAX + 1) + close_timeout + Duration::from_secs(2);
    assert!(
        (earliest..latest).contains(&dropped_after),
        "dropped after {dropped_after:?}, not within {earliest:?}..{latest:?}"
    );

    // Then the answering client stays through as many pings again, and still gets events.
    let seen = pings.load(Ordering::SeqCst);
    let more = seen + PINGS_UNANSWERED_MAX as usize + 2;
    wait_until("more pings to the answering client", WAIT, || async {
        pings.load(Ordering::SeqCst) >= more
    })
    .await;
    assert_eq!(server.feed.clients(), 1, "the answering client is still there");
    let id = enqueue(server.addr, "after the drop").await;
    let event = tokio::time::timeout(WAIT, reader).await.expect("an event in time").unwrap();
    assert!(event.contains(&id), "{event}");
    // And the silent client, reading at last, finds its pings and the reason it was dropped
    // (read as bytes: its library would answer the pings first, into a closed connection).
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, silent.get_mut().read_to_end(&mut raw)).await;
    read.expect("the server ended the connection").unwrap();
    let frames = server_frames(&raw);
    let pings = vec![(0x9, Vec::new()); PINGS_UNANSWERED_MAX as usize];
    assert_eq!(frames[..pings.len()], pings[..], "{frames:?}");
    let (opcode, close) = &frames[pings.len()];
    assert_eq!(*opcode, 0x8, "a close frame: {frames:?}");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), CLOSE_NO_PONG);
    let reason = format!("no pong to {PINGS_UNANSWERED_MAX} pings; resume with ?from={KEY_EVENTS}");
    assert_eq!(String::from_utf8_lossy(&close[2..]), reason);
    server.stop().await;
}
