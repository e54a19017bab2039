//! Everything a client can reach has a bound (design invariant 11): headers must arrive in
//! time, on a new connection (whatever it sent, a byte at a time included) and on an idle one
//! alike, a request is
//! answered within its deadline however slowly its body comes, a stream whose client reads
//! nothing is dropped at the send timeout, a process holds a bounded
//! number of connections and WebSocket clients, and shutdown ends within its deadline even
//! with a client trickling a body.

use std::time::Duration;

use brain::api::server::HttpLimits;
use brain::serve::ServeOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve::{get, redis_url, serve_with_options, services};
use crate::support::TestEnv;

const WAIT: Duration = Duration::from_secs(30);

fn options(env: &TestEnv, http: HttpLimits) -> ServeOptions {
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.http = http;
    options
}

/// Reads what the server sends until it closes the connection; `None` if it stays open
/// past `WAIT`.
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    read.ok().map(|_| String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_body_sent_at_one_byte_a_second_is_answered_408_at_the_request_deadline() {
    let env = TestEnv::new().await;
    let http = HttpLimits { request_timeout_ms: 1_000, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/missions/enqueue HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 40\r\n\r\n",
        crate::support::ADMIN_TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{").await.unwrap();
    // The rest never comes in time: the server answers at its deadline, not the client's.
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(WAIT, stream.read(&mut answer)).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..read.unwrap()]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // Other clients are served meanwhile and after.
    assert_eq!(get(addr, "/health").await.0, 200);
    assert_eq!(env.head().await, crate::support::KEY_EVENTS);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn headers_that_do_not_arrive_in_time_get_the_connection_closed() {
    let env = TestEnv::new().await;
    let http = HttpLimits { header_read_timeout_ms: 300, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n").await.unwrap();
    // Headers never finished: the server closes rather than wait for ever.
    let answer = read_until_closed(&mut stream).await.expect("the server closes the connection");
    assert!(!answer.contains("200 OK"), "{answer}");
    assert_eq!(get(addr, "/health").await.0, 200);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_a_few_bytes_of_a_preface_is_closed_at_the_header_timeout()
 {
    let env = TestEnv::new().await;
    let http = HttpLimits { header_read_timeout_ms: 300, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;

    // Nothing at all; one byte of a request line; the start of the HTTP/2 preface (before
    // which the server cannot even tell the protocol).
    for sent in [&b""[..], b"G", b"PRI * HTTP/2.0\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let started = std::time::Instant::now();
        let answer = read_until_closed(&mut stream).await;
        let sent = String::from_utf8_lossy(sent);
        let answer = answer.unwrap_or_else(|| panic!("still open after {sent:?}"));
        assert!(!answer.contains("200"), "{sent:?}: {answer}");
        assert!(started.elapsed() >= Duration::from_millis(250), "{sent:?}: closed too soon");
    }
    assert_eq!(get(addr, "/health").await.0, 200);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_closed_at_the_header_timeout_of_its_accepting() {
    let env = TestEnv::new().await;
    let http = HttpLimits { header_read_timeout_ms: 500, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;

    // A head that never ends, one byte every 50 ms: each byte arrives well within the
    // timeout, the whole head never does.
    let stream = TcpStream::connect(addr).await.unwrap();
    let accepted = std::time::Instant::now();
    let (mut reading, mut writing) = stream.into_split();
    let trickle = tokio::spawn(async move {
        writing.write_all(b"GET /health HTTP/1.1\r\nx-pad: ").await.unwrap();
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        // The client's own pace, not a wait for the server; it ends when the server is gone.
        while writing.write_all(b"a").await.is_ok() {
            pace.tick().await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, reading.read_to_end(&mut answer)).await;
    let closed_after = accepted.elapsed();
    assert!(read.is_ok(), "still open after {WAIT:?} of trickling");
    assert!(!String::from_utf8_lossy(&answer).contains("200"));
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(2_500)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    trickle.abort();
    assert_eq!(get(addr, "/health").await.0, 200);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Sends `head` on a keep-alive connection and reads its (small) answer.
async fn exchange(stream: &mut TcpStream, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_and_a_quiet_stream_is_not() {
    let env = TestEnv::new().await;
    let http =
        HttpLimits { header_read_timeout_ms: 300, idle_timeout_ms: 3_000, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;
    let health = "GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let (status, enqueued) =
        crate::missions_api::post(addr, "/api/missions/enqueue", r#"{"name": "waits"}"#).await;
    assert_eq!(status, 201, "{enqueued}");

    // HTTP/1.1, one request answered and then nothing: closed once idle 3 s, not sooner.
    let idle = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut stream, health).await.starts_with("HTTP/1.1 200"));
        let answered = std::time::Instant::now();
        read_until_closed(&mut stream).await.expect("an idle keep-alive connection is closed");
        answered.elapsed()
    };
    // A next head begun and never finished: closed at the header timeout from its first
    // byte, idle allowance or not.
    let stalled = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut stream, health).await.starts_with("HTTP/1.1 200"));
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        let begun = std::time::Instant::now();
        read_until_closed(&mut stream).await.expect("a stalled head's connection is closed");
        begun.elapsed()
    };
    // HTTP/2 (prior knowledge): the preface and settings, then no request.
    let http2 = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
        read_until_closed(&mut stream)
            .await
            .expect("an HTTP/2 connection with no request is closed");
    };
    // A mission's token stream says nothing for a while (no worker runs it): its request is
    // in flight, so its connection stays open past both timeouts.
    let stream = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET /api/missions/{}/stream HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n",
            enqueued["mission_id"].as_str().unwrap(),
            crate::support::ADMIN_TOKEN
        );
        assert!(exchange(&mut stream, &head).await.starts_with("HTTP/1.1 200"));
        let mut more = [0u8; 256];
        let quiet =
            tokio::time::timeout(Duration::from_millis(4_000), stream.read(&mut more)).await;
        assert!(quiet.is_err(), "the stream's connection was closed or spoke: {quiet:?}");
    };
    let (idle, stalled, (), ()) = tokio::join!(idle, stalled, http2, stream);
    assert!(idle >= Duration::from_millis(2_900), "closed after {idle:?} idle");
    assert!(stalled < Duration::from_millis(2_500), "closed after {stalled:?} of a stalled head");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// The kernel's state of the serve's side of the connection from `client` to `server`
/// (`01` established), or `None` once it is gone.
fn serve_side_state(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<String> {
    let hex = |addr: std::net::SocketAddr| format!("0100007F:{:04X}", addr.port());
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let row: Vec<&str> = line.split_whitespace().collect();
        (row[1] == hex(server) && row[2] == hex(client)).then(|| row[3].to_owned())
    })
}

#[tokio::test]
async fn a_stream_whose_client_reads_nothing_is_dropped_at_the_send_timeout() {
    let env = TestEnv::new().await;
    let http = HttpLimits { send_timeout_ms: 1_000, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;
    let (status, enqueued) =
        crate::missions_api::post(addr, "/api/missions/enqueue", r#"{"name": "streams"}"#).await;
    assert_eq!(status, 201, "{enqueued}");
    let mission_id = enqueued["mission_id"].as_str().unwrap().to_owned();

    // Given a client of the mission's token stream that takes the answer's head and then
    // reads nothing more (a small receive window, so the server's side fills soon).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let head = format!(
        "GET /api/missions/{mission_id}/stream HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n",
        crate::support::ADMIN_TOKEN
    );
    assert!(exchange(&mut stream, &head).await.starts_with("HTTP/1.1 200"));
    // And one that reads all the while.
    let mut reading = TcpStream::connect(addr).await.unwrap();
    assert!(exchange(&mut reading, &head).await.starts_with("HTTP/1.1 200"));
    let reader = tokio::spawn(async move {
        let (mut tail, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
        loop {
            let n = reading.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the reading client's stream ended");
            tail.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&tail).contains("\"seq\":399") {
                return;
            }
            tail.drain(..tail.len().saturating_sub(64));
        }
    });

    // When its agent's pieces keep coming: more than every buffer on the way holds.
    let subject = brain::llm::tokens::subject(&env.namespace, &mission_id);
    let text = "x".repeat(32 * 1024);
    let publishing = async {
        for seq in 0..400u64 {
            let piece = brain::llm::tokens::TokenMessage {
                mission_id: mission_id.clone(),
                attempt: 1,
                seq,
                text: text.clone(),
                done: false,
            };
            let payload = serde_json::to_vec(&piece).unwrap();
            env.nats.publish(subject.clone(), payload.into()).await.unwrap();
        }
        env.nats.flush().await.unwrap();
    };
    publishing.await;
    let published = std::time::Instant::now();

    // Then the server drops the connection once its writes have waited the send timeout,
    // where the stream alone would have held it for an hour.
    crate::support::wait_until("the serve to drop the stalled stream", WAIT, || async {
        serve_side_state(addr, client).is_none_or(|state| state != "01")
    })
    .await;
    let dropped_after = published.elapsed();
    // The client, reading at last, gets what was already on the way, then the end of the
    // connection: far from every piece.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let _ended = read.expect("the connection ends (closed or reset)");
    assert!(answer.len() < 400 * 32 * 1024 / 2, "it got {} bytes", answer.len());
    eprintln!("a stalled stream was dropped {dropped_after:?} after its last piece was published");
    // While the client that reads gets every piece.
    tokio::time::timeout(WAIT, reader).await.expect("the reading client gets it all").unwrap();
    // Other clients are served meanwhile and after.
    assert_eq!(get(addr, "/health").await.0, 200);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn past_the_connection_cap_a_new_connection_waits_until_one_closes() {
    let env = TestEnv::new().await;
    let http = HttpLimits { connections_max: 3, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;

    // Three idle connections take every place.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // A fourth is accepted by the kernel but not served while they stay.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut answer)).await;
    assert!(early.is_err(), "served past the cap");
    // One leaves: the fourth is served.
    drop(held.pop());
    let answer = read_until_closed(&mut fourth).await.expect("served once a place is free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    drop(held);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn past_the_websocket_client_cap_an_upgrade_is_refused_with_a_reason() {
    let env = TestEnv::new().await;
    let mut options = options(&env, HttpLimits::default());
    options.feed.clients_max = 2;
    let (addr, shutdown, task) = serve_with_options(options).await;

    let mut clients = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}/ws/events");
        let (client, _) = tokio_tungstenite::client_async(crate::support::ws_request(&url), stream)
            .await
            .expect("admitted");
        clients.push(client);
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/ws/events");
    match tokio_tungstenite::client_async(crate::support::ws_request(&url), stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_clients", "{body}");
        }
        other => panic!("a third client was not refused: {other:?}"),
    }
    // A stream id alone would make a replay scan the log: refused before any upgrade.
    let (status, body) = get(addr, "/ws/events?stream_id=abc").await;
    assert_eq!((status, &body["error"]["field"]), (400, &serde_json::json!("stream_id")), "{body}");

    drop(clients);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_ends_within_its_deadline_while_a_client_trickles_a_body() {
    let env = TestEnv::new().await;
    let http = HttpLimits {
        request_timeout_ms: 600_000,
        shutdown_timeout_ms: 1_000,
        ..Default::default()
    };
    let (addr, shutdown, task) = serve_with_options(options(&env, http)).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/missions/enqueue HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 40\r\n\r\n{{",
        crate::support::ADMIN_TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if stream.write_all(b" ").await.is_err() {
                return;
            }
            // The client's own pace (one byte a second), not a wait for the server.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    shutdown.cancel();
    // The stated deadline is 1 s for HTTP, then the server's later stages; the request would
    // otherwise hold it for ten minutes.
    let stopped = tokio::time::timeout(Duration::from_secs(20), task).await;
    assert!(stopped.is_ok(), "the server did not stop within its deadline");
    stopped.unwrap().unwrap().unwrap();
    trickle.abort();
}
