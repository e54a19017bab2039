//! The test environment: a fresh database (`brain_t_<id>`, migrated) and namespace
//! (`t_<id>`, its own JetStream stream) per test, dropped when the test ends, even by panic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use brain::config::Namespace;
use brain::eventlog::bus;
use brain::eventlog::store::{Append, Appended, CommitterConfig, EventStore};
use domain::{EventMetadata, ExpectedVersion, NewEvent, StreamId, StreamType};
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub fn postgres_server_url() -> String {
    std::env::var("BRAIN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".to_owned())
}

/// NATS as BRAiN's user (the local credentials `scripts/services.sh` sets up).
pub fn nats_url() -> String {
    std::env::var("BRAIN_TEST_NATS_URL")
        .unwrap_or_else(|_| brain::config::NATS_URL_DEFAULT.to_owned())
}

/// The NATS server's address (`host:port`), without credentials.
pub fn nats_address() -> SocketAddr {
    let url = nats_url();
    let authority = url.trim_start_matches("nats://");
    let address = authority.rsplit_once('@').map_or(authority, |(_, address)| address);
    address.parse().expect("the NATS URL names an IP address and a port")
}

/// `nats_url()` pointed at another address, credentials kept (to go through a proxy).
pub fn nats_url_at(address: SocketAddr) -> String {
    nats_url().replace(&nats_address().to_string(), &address.to_string())
}

pub struct TestEnv {
    pub namespace: Namespace,
    pub database_url: String,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv::migrated_to(None).await
    }

    /// A database migrated only up to migration `version`: a log an older build wrote.
    pub async fn new_at_migration(version: i64) -> TestEnv {
        TestEnv::migrated_to(Some(version)).await
    }

    async fn migrated_to(version: Option<i64>) -> TestEnv {
        let id = &Uuid::new_v4().simple().to_string()[..16];
        let namespace = Namespace::parse(&format!("t_{id}")).expect("valid namespace");
        let database_url = format!("{}/brain_t_{id}", postgres_server_url());
        Postgres::create_database(&database_url).await.expect("create test database");
        let pool = PgPool::connect(&database_url).await.expect("connect to test database");
        match version {
            None => brain::eventlog::db::migrate(&pool).await.expect("migrate test database"),
            Some(version) => brain::eventlog::db::MIGRATOR
                .run_to(version, &pool)
                .await
                .expect("migrate test database part of the way"),
        }
        let nats = bus::connect(&nats_url()).await.expect("connect to NATS");
        let jetstream = bus::jetstream(nats.clone(), 64);
        bus::ensure_stream(&jetstream, &namespace).await.expect("create test stream");
        TestEnv { namespace, database_url, pool, nats, jetstream }
    }

    /// A second pool on the same database: another "process" as far as PostgreSQL knows.
    pub async fn other_pool(&self) -> PgPool {
        PgPool::connect(&self.database_url).await.expect("connect to test database")
    }

    pub fn store(&self) -> (EventStore, JoinHandle<()>) {
        EventStore::start(self.pool.clone(), self.namespace.as_str(), CommitterConfig::default())
    }

    /// The namespace's live feed, following the bus until the token is cancelled (the
    /// process's one consumer, which projectors follow). Made before it runs: it starts
    /// after the store's head as it is now.
    pub async fn feed(
        &self,
        config: brain::eventlog::feed::FeedConfig,
    ) -> (brain::eventlog::feed::Feed, tokio_util::sync::CancellationToken) {
        let stop = tokio_util::sync::CancellationToken::new();
        let feed = brain::eventlog::feed::Feed::new(
            self.pool.clone(),
            self.nats.clone(),
            self.namespace.clone(),
            config,
            stop.clone(),
        )
        .await
        .expect("the feed starts");
        (feed, stop)
    }

    /// [`TestEnv::feed`], running, with a quick look at the store when the bus is silent.
    pub async fn running_feed(
        &self,
    ) -> (brain::eventlog::feed::FeedHandle, tokio_util::sync::CancellationToken) {
        let config = brain::eventlog::feed::FeedConfig {
            idle_check: Duration::from_millis(100),
            ..Default::default()
        };
        let (feed, stop) = self.feed(config).await;
        let handle = feed.handle();
        tokio::spawn(feed.run(stop.clone()));
        (handle, stop)
    }

    /// The consumers of the namespace's stream, by name.
    pub async fn consumer_names(&self) -> Vec<String> {
        use futures::StreamExt;
        let stream = self.jetstream.get_stream(bus::stream_name(&self.namespace)).await;
        let stream = stream.expect("the namespace's stream");
        stream.consumer_names().map(|name| name.expect("a consumer name")).collect().await
    }

    /// The namespace's relay, checking a silent stream every 100 ms, until the token is
    /// cancelled.
    pub fn start_relay(&self) -> tokio_util::sync::CancellationToken {
        use brain::eventlog::relay::{Relay, RelayConfig};
        let config =
            RelayConfig { idle_check: Duration::from_millis(100), ..RelayConfig::default() };
        let relay =
            Relay::new(self.pool.clone(), self.nats.clone(), self.namespace.clone(), config);
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(relay.run(shutdown.clone()));
        shutdown
    }

    pub async fn head(&self) -> u64 {
        brain::eventlog::store::head(&self.pool).await.expect("read head")
    }

    pub async fn stream_last_sequence(&self) -> u64 {
        let stream = self.jetstream.get_stream(bus::stream_name(&self.namespace)).await;
        stream.map_or(0, |stream| stream.cached_info().state.last_sequence)
    }

    /// Asserts that the JetStream stream holds exactly the store's events, each at the
    /// sequence equal to its position.
    pub async fn assert_bus_mirrors_store(&self) {
        let head = self.head().await;
        let mut stream = self
            .jetstream
            .get_stream(bus::stream_name(&self.namespace))
            .await
            .expect("stream exists");
        let state = stream.info().await.expect("stream info").state.clone();
        assert_eq!(state.messages, head, "stream holds one message per event");
        assert_eq!((state.first_sequence, state.last_sequence), (1, head));
        let events = brain::eventlog::store::read_all(&self.pool, 0, u32::MAX).await.unwrap();
        for event in events {
            let message = stream.get_raw_message(event.global_position).await.expect("message");
            let envelope = bus::Envelope::decode(&message.payload).expect("envelope");
            assert_eq!(envelope.global_position, event.global_position);
            assert_eq!(envelope.into_event().expect("decodes"), event, "bus copy equals store");
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let database_url = self.database_url.clone();
        let stream = bus::stream_name(&self.namespace);
        let redis_keys = format!("{{{}}}*", self.namespace);
        // Async clean-up from a destructor: a runtime of its own on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.expect("runtime").block_on(async move {
                if let Ok(nats) = bus::connect(&nats_url()).await {
                    let _ = jetstream::new(nats).delete_stream(&stream).await;
                }
                let _ = Postgres::force_drop_database(&database_url).await;
                delete_redis_keys(&redis_keys).await;
            });
        });
        let _ = cleanup.join();
    }
}

pub fn redis_url() -> String {
    std::env::var("BRAIN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Deletes the keys matching `pattern` (a test namespace's hash tag).
pub async fn delete_redis_keys(pattern: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else { return };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else { return };
    let mut cursor: u64 = 0;
    loop {
        let page: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut connection)
            .await;
        let Ok((next, keys)) = page else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> =
                redis::cmd("UNLINK").arg(&keys).query_async(&mut connection).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

pub fn stream_type(name: &str) -> StreamType {
    StreamType::parse(name).expect("valid stream type")
}

pub fn new_stream_id() -> StreamId {
    StreamId::from(Uuid::now_v7())
}

/// An append of `count` events of `event_type`, numbered in their payloads.
pub fn append(
    stream_type: &StreamType,
    stream_id: &StreamId,
    expected: ExpectedVersion,
    event_type: &str,
    count: usize,
) -> Append {
    Append {
        stream_type: stream_type.clone(),
        stream_id: stream_id.clone(),
        expected,
        events: (0..count)
            .map(|n| NewEvent::new(event_type, serde_json::json!({ "n": n })))
            .collect(),
        metadata: EventMetadata::new("test", time::OffsetDateTime::now_utc()),
    }
}

/// Appends `streams` new streams of `per_stream` events each, cycling over event types.
pub async fn append_streams(
    store: &EventStore,
    streams: usize,
    per_stream: usize,
) -> Vec<Appended> {
    let mut appended = Vec::with_capacity(streams);
    // Stream types no aggregate owns: a real projector must never meet made-up events.
    let types = [("probe", "ProbeRecorded"), ("sample", "SampleTaken"), ("probe", "ProbeChecked")];
    for n in 0..streams {
        let (stream, event_type) = types[n % types.len()];
        let append = append(
            &stream_type(stream),
            &new_stream_id(),
            ExpectedVersion::Exact(0),
            event_type,
            per_stream,
        );
        appended.push(store.append(append).await.expect("append"));
    }
    appended
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; panics with `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        // The poll interval of this deadline-bounded wait; the condition, not the sleep,
        // decides when the test goes on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a server, whose link can be cut and restored: a network
/// failure between one client and the server, without disturbing anyone else's tests.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, links) = (cut.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees its connection refused
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().await.push(link);
                }
            }
        });
        Proxy { addr, cut, links, accept }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A TCP proxy in front of a server that counts how often `needle` passes from its clients
/// to the server: with a PostgreSQL pool that caches no prepared statement (each query sends
/// its text), how many times a statement was sent.
pub struct CountingProxy {
    pub addr: SocketAddr,
    seen: Arc<std::sync::atomic::AtomicUsize>,
    accept: JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr, needle: &'static [u8]) -> CountingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let Ok(outbound) = TcpStream::connect(upstream).await else { continue };
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let (mut client_in, mut client_out) = inbound.into_split();
                        let (mut server_in, mut server_out) = outbound.into_split();
                        let down = tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut server_in, &mut client_out).await;
                        });
                        // The last bytes of the previous read are kept, so that a needle
                        // split between two reads is counted once.
                        let keep = needle.len() - 1;
                        let mut window: Vec<u8> = Vec::new();
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_in.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            window.extend_from_slice(&buffer[..n]);
                            let found =
                                window.windows(needle.len()).filter(|w| *w == needle).count();
                            seen.fetch_add(found, Ordering::SeqCst);
                            let cut = window.len().saturating_sub(keep);
                            window.drain(..cut);
                            if server_out.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                        down.abort();
                    });
                }
            }
        });
        CountingProxy { addr, seen, accept }
    }

    /// How many times the needle has passed so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A TCP proxy in front of PostgreSQL that can stall, like a half-open connection (packets
/// dropped, nothing closed), the next `COMMIT` sent on a connection whose start-up message
/// carries `marker` (the committer's sessions carry `lock_timeout=5s` in their options), or
/// pass that `COMMIT` on and lose its answer. Only that connection stops, in both directions;
/// every other one flows as usual.
pub struct StallingProxy {
    pub addr: SocketAddr,
    stalls_left: Arc<std::sync::atomic::AtomicUsize>,
    stalled: Arc<std::sync::atomic::AtomicUsize>,
    /// The stalled `COMMIT` goes through, and only its answer is lost.
    commit_goes_through: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl StallingProxy {
    pub async fn start(upstream: SocketAddr, marker: &'static [u8]) -> StallingProxy {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let stalls_left = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(AtomicUsize::new(0));
        let commit_goes_through = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn({
            let (stalls_left, stalled) = (stalls_left.clone(), stalled.clone());
            let through = commit_goes_through.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let Ok(outbound) = TcpStream::connect(upstream).await else { continue };
                    let (stalls_left, stalled) = (stalls_left.clone(), stalled.clone());
                    let through = through.clone();
                    tokio::spawn(async move {
                        let (mut client_in, mut client_out) = inbound.into_split();
                        let (mut server_in, mut server_out) = outbound.into_split();
                        let stop = tokio_util::sync::CancellationToken::new();
                        let down = tokio::spawn({
                            let stop = stop.clone();
                            async move {
                                let mut buffer = vec![0u8; 64 * 1024];
                                loop {
                                    let read = tokio::select! {
                                        // Stopped before a passed-on COMMIT is answered.
                                        biased;
                                        _ = stop.cancelled() => break,
                                        read = server_in.read(&mut buffer) => read,
                                    };
                                    match read {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => {
                                            if client_out.write_all(&buffer[..n]).await.is_err() {
                                                break;
                                            }
                                        }
                                    }
                                }
                                // Held open while stalled: the client must see silence, not EOF.
                                stop.cancelled().await;
                                std::future::pending::<()>().await;
                                drop(client_out);
                            }
                        });
                        let mut marked = false;
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_in.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let chunk = &buffer[..n];
                            marked |= contains(chunk, marker);
                            if marked
                                && contains(chunk, b"COMMIT")
                                && stalls_left
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                                        left.checked_sub(1)
                                    })
                                    .is_ok()
                            {
                                stalled.fetch_add(1, Ordering::SeqCst);
                                stop.cancel();
                                if through.load(Ordering::SeqCst) {
                                    let _ = server_out.write_all(chunk).await;
                                }
                                // Silence from here on, in both directions, sockets open.
                                std::future::pending::<()>().await;
                            }
                            if server_out.write_all(chunk).await.is_err() {
                                break;
                            }
                        }
                        down.abort();
                    });
                }
            }
        });
        StallingProxy { addr, stalls_left, stalled, commit_goes_through, accept }
    }

    /// Stalls the next `COMMIT` of a marked connection.
    pub fn stall_next_commit(&self) {
        self.commit_goes_through.store(false, Ordering::SeqCst);
        self.stalls_left.store(1, Ordering::SeqCst);
    }

    /// Passes the next `COMMIT` of a marked connection on and loses its answer: the
    /// transaction commits, and its client never hears so.
    pub fn lose_next_commit_answer(&self) {
        self.commit_goes_through.store(true, Ordering::SeqCst);
        self.stalls_left.store(1, Ordering::SeqCst);
    }

    /// How many commits have been stalled.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The admin key every serve of the tests makes sure exists (`BRAIN_ADMIN_KEY`): each test
/// has its own database, so each has this key of its own.
pub const ADMIN_TOKEN: &str =
    "brn_a0000000000000a1_1111111111111111111111111111111111111111111111111111111111111111";

/// An HTTP client carrying [`ADMIN_TOKEN`], sending JSON by default (a change needs it).
pub fn client() -> reqwest::Client {
    client_with(ADMIN_TOKEN)
}

/// An HTTP client carrying `token`.
pub fn client_with(token: &str) -> reqwest::Client {
    crate::serve::crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {token}");
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().expect("a header value"));
    headers.insert(reqwest::header::CONTENT_TYPE, "application/json".parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().expect("a client")
}

/// A WebSocket handshake request for `url` carrying [`ADMIN_TOKEN`].
pub fn ws_request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a WebSocket URL");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    request.headers_mut().insert("authorization", bearer.parse().expect("a header value"));
    request
}

/// The `brain` binary, with [`ADMIN_TOKEN`] as `BRAIN_ADMIN_KEY` (a serve makes sure it
/// exists; other subcommands ignore it).
pub fn brain_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_brain"));
    command.env("BRAIN_ADMIN_KEY", ADMIN_TOKEN);
    command
}

/// Events a serve of the tests records before anything else: [`ADMIN_TOKEN`]'s
/// `ApiKeyCreated`.
pub const KEY_EVENTS: u64 = 1;

/// The actor of what [`ADMIN_TOKEN`] records.
pub const ADMIN_ACTOR: &str = "key:a0000000000000a1";

/// Makes a key through the API of the serve at `addr` with [`ADMIN_TOKEN`]; answers its token.
/// The key id a token names (`brn_<key id>_<secret>`).
pub fn key_id(token: &str) -> &str {
    &token[4..20]
}

pub async fn make_key(addr: SocketAddr, grant: serde_json::Value) -> String {
    let response =
        client().post(format!("http://{addr}/api/keys")).json(&grant).send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A request as raw as a caller may send it: `token` (or none) as the bearer key, `{}` as
/// the JSON body of anything but a GET. Answers the status and the body (none for a stream).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    crate::serve::crypto_provider();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if method != reqwest::Method::GET {
        request = request.header("content-type", "application/json").body("{}");
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|kind| kind.to_str().unwrap_or_default().starts_with("text/event-stream"));
    if streaming {
        return (status, serde_json::Value::Null);
    }
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}
