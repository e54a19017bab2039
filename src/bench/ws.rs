//! `brain bench ws`: many WebSocket clients of the live feed on a running `brain serve`,
//! missions enqueued over HTTP at a steady rate, and how long each event takes to reach every
//! client.
//!
//! Latency is measured from the event's `recorded_at` (the start of the transaction that
//! committed it, by PostgreSQL's clock) to the moment a client task holds the message, so the
//! bench must run on the server's host or one with a synchronised clock. It includes commit,
//! relay, the feed, the socket write and the client's own scheduling: with the bench on the
//! same cores as the server, the bench's share of the CPU shows up in the figures too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{cores, ms_at, ms_max};

#[derive(Debug, clap::Args)]
pub struct WsBench {
    /// The running `brain serve` to measure.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(flatten)]
    key: super::BenchKey,
    /// WebSocket clients to connect.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Missions enqueued per second in the timed phase.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Missions enqueued in the timed phase; each is one event every client receives.
    #[arg(long, default_value_t = 600)]
    missions: u64,
    /// How long, after the last mission, every client gets to receive everything.
    #[arg(long, default_value_t = 60)]
    drain_timeout_s: u64,
}

/// Latency histograms are sharded so that client tasks on different threads rarely meet.
const SHARDS: usize = 64;

/// What the client tasks record.
struct Tally {
    latencies: Vec<std::sync::Mutex<Histogram<u64>>>,
    connected: AtomicU64,
    connect_failed: AtomicU64,
    first_connect_error: std::sync::Mutex<Option<String>>,
    delivered: AtomicU64,
    /// Messages at or below a position already received.
    out_of_order: AtomicU64,
    /// Positions skipped (every client selects everything, so none may be).
    gaps: AtomicU64,
    closed_by_server: AtomicU64,
    first_close_reason: std::sync::Mutex<Option<String>>,
    broken: AtomicU64,
    /// Per client, the last position received.
    last: Vec<AtomicU64>,
}

impl Tally {
    fn new(clients: usize, head: u64) -> Tally {
        Tally {
            latencies: (0..SHARDS)
                .map(|_| {
                    let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3);
                    std::sync::Mutex::new(histogram.expect("histogram bounds"))
                })
                .collect(),
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            first_connect_error: std::sync::Mutex::new(None),
            delivered: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            closed_by_server: AtomicU64::new(0),
            first_close_reason: std::sync::Mutex::new(None),
            broken: AtomicU64::new(0),
            last: (0..clients).map(|_| AtomicU64::new(head)).collect(),
        }
    }

    /// Clients that have received everything up to `head`.
    fn caught_up(&self, head: u64) -> u64 {
        self.last.iter().filter(|last| last.load(Ordering::SeqCst) >= head).count() as u64
    }

    /// Of the `connected` clients, those neither closed by the server nor broken.
    fn open(&self, connected: u64) -> u64 {
        connected
            - self.closed_by_server.load(Ordering::SeqCst)
            - self.broken.load(Ordering::SeqCst)
    }

    /// The shards' latencies, merged.
    fn latencies(&self) -> anyhow::Result<Histogram<u64>> {
        let mut latencies = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        for shard in &self.latencies {
            latencies.add(&*shard.lock().expect("not poisoned"))?;
        }
        Ok(latencies)
    }
}

/// The server the bench measures.
struct Target {
    base: reqwest::Url,
    host: String,
    port: u16,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Target {
    fn url(&self, path: &str) -> reqwest::Url {
        self.base.join(path).expect("a valid path")
    }
}

/// How the clients' connecting went.
struct Connected {
    connected: u64,
    failed: u64,
    connect_s: f64,
    server_clients: Option<f64>,
}

/// How the timed phase went.
struct Timed {
    enqueued: u64,
    enqueue_s: f64,
    drain_s: f64,
    /// Events each client should have received.
    expected_per_client: u64,
    head_after: u64,
    cpu_s: f64,
}

impl WsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.clients == 0 || self.rate == 0 || self.missions == 0 {
            bail!("--clients, --rate and --missions must be at least 1");
        }
        self.raise_open_files();
        let target = self.target().await?;
        let head_before = head(&target.http, target.url("/api/events?limit=1")).await?;
        let ws_url = format!("ws://{}:{}/ws/events?from={head_before}", target.host, target.port);
        eprintln!("bench: {} clients on {ws_url}", self.clients);
        let tally = Arc::new(Tally::new(self.clients, head_before));
        let started = Instant::now();
        let handshakes = Arc::new(Semaphore::new(self.connect_concurrency.max(1)));
        let tasks: Vec<_> = (0..self.clients)
            .map(|id| {
                let (tally, handshakes, ws_url) =
                    (tally.clone(), handshakes.clone(), ws_url.clone());
                let key = self.key.key.clone();
                tokio::spawn(client(id, target.addr, (ws_url, key), handshakes, tally))
            })
            .collect();
        let connected = self.wait_for_connections(&target, &tally, started).await?;
        let timed = self.timed_phase(&target, &tally, head_before, connected.connected).await?;
        for task in &tasks {
            task.abort();
        }
        self.print(&tally, &connected, &timed)
    }

    /// Raises this process's open files limit as far as it goes, and says so when the
    /// clients need more.
    fn raise_open_files(&self) {
        let (soft, hard) = raise_open_files_limit();
        eprintln!("bench: open files limit {soft} (hard {hard})");
        if soft < (self.clients + 100) as libc::rlim_t {
            eprintln!(
                "bench: {} clients need about as many open files; raise the hard limit \
                 (e.g. `ulimit -Hn 65536` as root) or lower --clients",
                self.clients
            );
        }
    }

    async fn target(&self) -> anyhow::Result<Target> {
        let base = reqwest::Url::parse(&self.url).context("--url")?;
        let host = base.host_str().context("--url has no host")?.to_owned();
        let port = base.port_or_known_default().context("--url has no port")?;
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .context("--url resolves to no address")?;
        let http = super::http_client(self.key.key.as_deref()).build()?;
        Ok(Target { base, host, port, addr, http })
    }

    /// Waits (at most 300 s) until every client connected or failed to, and reports it.
    async fn wait_for_connections(
        &self,
        target: &Target,
        tally: &Tally,
        started: Instant,
    ) -> anyhow::Result<Connected> {
        let settled =
            || tally.connected.load(Ordering::SeqCst) + tally.connect_failed.load(Ordering::SeqCst);
        while settled() < self.clients as u64 {
            if started.elapsed() > Duration::from_secs(300) {
                bail!("clients still connecting after 300 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let connect_s = started.elapsed().as_secs_f64();
        let connected = tally.connected.load(Ordering::SeqCst);
        let failed = tally.connect_failed.load(Ordering::SeqCst);
        let server_clients = metric(&target.http, target.url("/metrics"), "brain_ws_clients").await;
        eprintln!(
            "bench: {connected} connected, {failed} failed in {connect_s:.1} s; the server counts {}",
            server_clients.map_or("?".to_owned(), |n| format!("{n:.0}"))
        );
        if failed > 0 {
            let error = tally.first_connect_error.lock().expect("not poisoned").clone();
            eprintln!("bench: first connection error: {}", error.unwrap_or_default());
            eprintln!(
                "bench: if the server ran out of file descriptors, start it with a higher \
                 limit: bash -c 'ulimit -n 65536; brain serve'"
            );
        }
        if connected == 0 {
            bail!("no client connected");
        }
        Ok(Connected { connected, failed, connect_s, server_clients })
    }

    /// Enqueues the missions, then waits (at most `--drain-timeout-s`) until every open
    /// client has received everything.
    async fn timed_phase(
        &self,
        target: &Target,
        tally: &Tally,
        head_before: u64,
        connected: u64,
    ) -> anyhow::Result<Timed> {
        eprintln!("bench: enqueueing {} missions at {}/s", self.missions, self.rate);
        let cpu_before = cpu_seconds();
        let enqueue_started = Instant::now();
        let enqueued = self.enqueue(&target.http, target.url("/api/missions/enqueue")).await?;
        let enqueue_s = enqueue_started.elapsed().as_secs_f64();
        let head_after = head(&target.http, target.url("/api/events?limit=1")).await?;
        let deadline = Instant::now() + Duration::from_secs(self.drain_timeout_s);
        while tally.caught_up(head_after) < tally.open(connected) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Timed {
            enqueued,
            enqueue_s,
            drain_s: enqueue_started.elapsed().as_secs_f64() - enqueue_s,
            expected_per_client: head_after - head_before,
            head_after,
            cpu_s: cpu_seconds() - cpu_before,
        })
    }

    fn print(&self, tally: &Tally, c: &Connected, t: &Timed) -> anyhow::Result<()> {
        let latencies = tally.latencies()?;
        let ms = |q: f64| ms_at(&latencies, q);
        let (connected, expected_per_client, cpu) = (c.connected, t.expected_per_client, t.cpu_s);
        let (connect_s, enqueued, enqueue_s) = (c.connect_s, t.enqueued, t.enqueue_s);
        let delivered = tally.delivered.load(Ordering::SeqCst);
        let expected = expected_per_client * connected;
        let closed = tally.closed_by_server.load(Ordering::SeqCst);
        let close_reason = tally.first_close_reason.lock().expect("not poisoned").clone();
        let (out_of_order, gaps) =
            (tally.out_of_order.load(Ordering::SeqCst), tally.gaps.load(Ordering::SeqCst));
        let cores = cores();
        let duration_s = enqueue_s + t.drain_s;
        println!(
            "brain bench ws: {} clients, {} missions at {}/s, {cores} cores",
            self.clients, self.missions, self.rate
        );
        println!(
            "  connected     {connected} of {} in {connect_s:.1} s (server counted {})",
            self.clients,
            c.server_clients.map_or("?".to_owned(), |n| format!("{n:.0}"))
        );
        println!(
            "  enqueued      {enqueued} missions in {enqueue_s:.1} s ({:.1}/s), {expected_per_client} events",
            enqueued as f64 / enqueue_s
        );
        println!(
            "  delivered     {delivered} of {expected} messages ({:.0}/s over {duration_s:.1} s); {} of {} open clients got everything",
            delivered as f64 / duration_s,
            tally.caught_up(t.head_after),
            tally.open(connected)
        );
        println!(
            "  dropped       {closed} closed by the server{}, {} broken",
            close_reason.as_deref().map_or(String::new(), |r| format!(" (first: {r:?})")),
            tally.broken.load(Ordering::SeqCst)
        );
        println!("  order         {out_of_order} duplicates or out of order, {gaps} gaps");
        println!(
            "  latency       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            ms_max(&latencies)
        );
        println!("  bench CPU     {cpu:.1} s over {duration_s:.1} s");
        let json = serde_json::json!({
            "bench": "ws",
            "params": { "clients": self.clients, "missions": self.missions, "rate": self.rate, "cores": cores },
            "results": {
                "connected": connected, "connect_failed": c.failed, "connect_s": connect_s,
                "enqueued": enqueued, "events_per_client": expected_per_client,
                "delivered": delivered, "expected": expected, "closed_by_server": closed,
                "out_of_order": out_of_order, "gaps": gaps,
                "latency_p50_ms": ms(0.5), "latency_p99_ms": ms(0.99), "latency_p999_ms": ms(0.999),
                "latency_max_ms": ms_max(&latencies), "bench_cpu_s": cpu,
            },
        });
        println!("{json}");
        Ok(())
    }

    /// Enqueues the missions at the configured rate, each request on a task of its own so
    /// that a slow answer does not hold back the schedule. Returns how many were accepted.
    async fn enqueue(&self, http: &reqwest::Client, url: reqwest::Url) -> anyhow::Result<u64> {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = Vec::with_capacity(self.missions as usize);
        for n in 0..self.missions {
            tick.tick().await;
            let request = http
                .post(url.clone())
                .json(&serde_json::json!({ "name": format!("bench {n}"), "payload": { "n": n } }));
            requests.push(tokio::spawn(async move {
                let response = request.send().await?;
                anyhow::ensure!(response.status().is_success(), "enqueue: {}", response.status());
                Ok(())
            }));
        }
        let mut accepted = 0;
        for request in requests {
            match request.await? {
                Ok(()) => accepted += 1,
                Err(error) => eprintln!("bench: {error:#}"),
            }
        }
        Ok(accepted)
    }
}

/// Clients connecting from one loopback address; more would pass a serve's
/// `BRAIN_HTTP_CONNECTIONS_PER_ADDRESS_MAX` (1,024 by default).
const CLIENTS_PER_LOOPBACK_ADDRESS: usize = 500;

/// Client `id`'s connection to `addr`. Against a serve on the IPv4 loopback, clients are
/// spread over its addresses (127.1.0.1, 127.1.0.2, ...: Linux answers all of 127.0.0.0/8)
/// as clients on as many hosts would be, so the per-address cap is the serve's own and not
/// the bench's; elsewhere they all come from this host's one address.
async fn connect_from(id: usize, addr: SocketAddr) -> std::io::Result<TcpStream> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let host = (id / CLIENTS_PER_LOOPBACK_ADDRESS) as u32 + 1;
            let from = std::net::Ipv4Addr::from(u32::from_be_bytes([127, 1, 0, 0]) + host);
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((from, 0)))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

async fn client(
    id: usize,
    addr: SocketAddr,
    (url, key): (String, Option<String>),
    handshakes: Arc<Semaphore>,
    tally: Arc<Tally>,
) {
    let permit = handshakes.acquire_owned().await.expect("never closed");
    // Clients only read events of a few hundred bytes: small buffers keep 10,000 of them light.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    let connection = async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().map_err(std::io::Error::other)?;
        if let Some(value) = key.and_then(|key| format!("Bearer {key}").parse().ok()) {
            request.headers_mut().insert("authorization", value);
        }
        let stream = connect_from(id, addr).await?;
        stream.set_nodelay(true)?;
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(socket)
    };
    let mut socket = match connection.await {
        Ok(socket) => socket,
        Err(error) => {
            tally.connect_failed.fetch_add(1, Ordering::SeqCst);
            let mut first = tally.first_connect_error.lock().expect("not poisoned");
            first.get_or_insert_with(|| error.to_string());
            return;
        }
    };
    drop(permit);
    tally.connected.fetch_add(1, Ordering::SeqCst);
    let shard = &tally.latencies[id % SHARDS];
    let last = &tally.last[id];
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => {
                let now = OffsetDateTime::now_utc();
                let Some((position, recorded_at)) = position_and_time(&text) else {
                    tally.broken.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let previous = last.load(Ordering::Relaxed);
                if position <= previous {
                    tally.out_of_order.fetch_add(1, Ordering::Relaxed);
                } else {
                    if position > previous + 1 {
                        tally.gaps.fetch_add(position - previous - 1, Ordering::Relaxed);
                    }
                    last.store(position, Ordering::SeqCst);
                }
                let micros = (now - recorded_at).whole_microseconds().max(1) as u64;
                let _ = shard.lock().expect("not poisoned").record(micros);
                tally.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Message::Close(frame)) => {
                tally.closed_by_server.fetch_add(1, Ordering::SeqCst);
                let reason = frame
                    .map_or_else(String::new, |f| format!("{}: {}", u16::from(f.code), f.reason));
                tally.first_close_reason.lock().expect("not poisoned").get_or_insert(reason);
                return;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    tally.broken.fetch_add(1, Ordering::SeqCst);
}

/// Reads the position (the first field) and `recorded_at` (the last) of an event's JSON text
/// without parsing the rest.
fn position_and_time(text: &str) -> Option<(u64, OffsetDateTime)> {
    let rest = text.strip_prefix("{\"global_position\":")?;
    let position = rest[..rest.find(',')?].parse().ok()?;
    let (_, time) = text.rsplit_once("\"recorded_at\":\"")?;
    let time = time.strip_suffix("\"}")?;
    Some((position, OffsetDateTime::parse(time, &Rfc3339).ok()?))
}

async fn head(http: &reqwest::Client, url: reqwest::Url) -> anyhow::Result<u64> {
    let page: serde_json::Value = http.get(url).send().await?.error_for_status()?.json().await?;
    page["head"].as_u64().context("GET /api/events answered without a head")
}

/// One unlabelled value from the server's Prometheus text.
async fn metric(http: &reqwest::Client, url: reqwest::Url, name: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Raises this process's soft limit on open files to its hard limit; returns both.
fn raise_open_files_limit() -> (libc::rlim_t, libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (0, 0);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// CPU time (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct passed to it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_and_time_are_read_from_an_event_without_parsing_it() {
        let text = r#"{"global_position":42,"stream_type":"mission","payload":{"recorded_at":"x"},"recorded_at":"2026-11-25T20:00:00.001Z"}"#;
        let (position, time) = position_and_time(text).unwrap();
        assert_eq!(position, 42);
        assert_eq!(time.unix_timestamp_nanos(), 1_795_636_800_001_000_000);
        assert_eq!(position_and_time("{}"), None);
    }
}
