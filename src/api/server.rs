//! The HTTP server around the router: its own accept loop, so that every connection has a
//! bound. `axum::serve` sets no header-read timeout and counts no connections; here
//!
//! - each accepted connection holds a permit of [`HttpLimits::connections_max`] for as long
//!   as its socket lives (a WebSocket's too: the permit travels with the upgraded socket),
//!   and a place among its client address's [`HttpLimits::connections_per_address_max`]: a
//!   connection past that is closed as it is accepted, so one address cannot take every
//!   place;
//! - a connection with no request in flight is closed ([`Activity`]) once it has taken
//!   [`HttpLimits::header_read_timeout`] to send a request head (a new connection's first,
//!   counted from its accepting whether it sent a byte or not; a later one from its first
//!   byte) or stayed idle [`HttpLimits::idle_timeout`] after an answer, over HTTP/1 and
//!   HTTP/2 alike. This is done here rather than by hyper's header timer, which starts only
//!   once the protocol is known (a socket that sends nothing, or a few bytes of the HTTP/2
//!   preface, would wait for ever), counts an idle keep-alive connection's wait as its next
//!   head's, and has no HTTP/2 counterpart;
//! - every request is answered within [`HttpLimits::request_timeout`] (body read included, so
//!   a client sending one byte a second is cut off, answered 408);
//! - a connection whose writes have made no progress for [`HttpLimits::send_timeout`] (its
//!   client reads nothing) is dropped within twice that, a request in flight or not: a streamed answer (server-
//!   sent events) holds its connection only while its client takes what it is sent. A slow
//!   reader is not cut: each write that goes through starts the time again. (Over HTTP/2 a
//!   client that reads but opens no flow-control window stalls a stream without stalling the
//!   socket; that one is bounded by the stream's own limits.)
//! - shutdown finishes within [`HttpLimits::shutdown_timeout`] whatever the clients do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::config::serve::{
    HTTP_CONNECTIONS_MAX_DEFAULT, HTTP_CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
    HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT, HTTP_IDLE_TIMEOUT_MS_DEFAULT,
    HTTP_REQUEST_TIMEOUT_MS_DEFAULT, HTTP_SEND_TIMEOUT_MS_DEFAULT,
    HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT, HttpLimits,
};

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish for at
/// most the shutdown timeout and drops what is left. Upgraded connections (WebSocket
/// sessions) are not waited for here: they saw the same signal and close their clients.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let addresses = Arc::new(Addresses::new(limits.connections_per_address_max));
    let quiet = Quiet {
        head: limits.header_read_timeout(),
        idle: limits.idle_timeout(),
        send: limits.send_timeout(),
    };
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // Heads and idleness are timed by each connection's `Activity`, not hyper's timer.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    // CONNECT protocol for WebSockets over HTTP/2, as axum::serve enables it.
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let builder = Arc::new(builder);
    loop {
        // A permit first: at the cap, new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = addresses.take(peer.ip()) else {
            // Closed at once (its permit goes back with it): a flood from one address costs
            // an accept and a close per connection, and holds nothing.
            metrics::counter!("brain_http_connections_refused_total").increment(1);
            tracing::debug!(%peer, "connection refused: its address holds its most connections");
            continue;
        };
        // Live feed messages are small writes that should leave at once, not wait (Nagle)
        // for the acknowledgement of the previous one.
        let _ = stream.set_nodelay(true);
        metrics::gauge!("brain_http_connections").increment(1.0);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Held {
            stream,
            activity: activity.clone(),
            _permit: permit,
            _place: place,
        });
        let service = TowerToHyperService::new(Tracked {
            router: router.clone(),
            activity: activity.clone(),
        });
        let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
        // A child token: each connection waits on its own node, not on one shared by all
        // (whose lock every poll of every connection would take).
        let shutdown = shutdown.child_token();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut check = std::pin::pin!(tokio::time::sleep(quiet.head.min(quiet.send)));
            // Asked to close, because it was quiet too long or for shutdown.
            let (mut closing, mut stopping) = (false, false);
            loop {
                tokio::select! {
                    // The connection first: it is what is ready nearly every time.
                    biased;
                    ended = connection.as_mut() => {
                        if let Err(error) = ended {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.cancelled(), if !stopping => {
                        connection.as_mut().graceful_shutdown();
                        stopping = true;
                    }
                    _ = check.as_mut(), if !stopping => {
                        let now = Instant::now();
                        let stalled = activity.stalled_until(quiet.send);
                        if stalled.is_some_and(|deadline| deadline <= now) {
                            // Nothing more can reach the client, a close frame or the rest
                            // of an answer alike: dropped at once.
                            metrics::counter!("brain_http_connections_stalled_closed_total")
                                .increment(1);
                            tracing::debug!("connection dropped: its client read nothing in time");
                            break;
                        }
                        let next = if closing {
                            // Asked to close a while ago and still open: dropped, unless a
                            // request slipped in meanwhile (its own deadline bounds it).
                            if activity.in_flight.load(Ordering::Acquire) == 0 {
                                break;
                            }
                            now + quiet.head
                        } else {
                            match activity.quiet_until(quiet) {
                                Some(deadline) if deadline <= now => {
                                    metrics::counter!("brain_http_connections_quiet_closed_total")
                                        .increment(1);
                                    connection.as_mut().graceful_shutdown();
                                    closing = true;
                                    now + quiet.head
                                }
                                Some(deadline) => deadline,
                                None => now + quiet.head,
                            }
                        };
                        // Looked at again within the send timeout whatever else it waits
                        // for, so that a stall that begins meanwhile is seen in time.
                        let next = next.min(now + quiet.send);
                        check.as_mut().reset(stalled.map_or(next, |stall| next.min(stall)));
                    }
                }
            }
        });
        // Reap finished connection tasks so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_timeout(), drained).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight at the shutdown deadline; closing their connections"
        );
    }
    connections.abort_all();
    Ok(())
}

/// How long a connection with no request in flight may stay so.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    /// To send a whole request head: from a new connection's accepting, or from a later
    /// head's first byte.
    head: Duration,
    /// Between an answer and the next head's first byte.
    idle: Duration,
    /// Of writes making no progress, whatever is in flight.
    send: Duration,
}

/// What one connection is doing: requests in flight (a request is in flight from its head's
/// arrival until its answer's body is sent or dropped), since when none is, since when a
/// next head is coming, and since when its writes wait on the client. Times are
/// microseconds after `opened`.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Requests answered; while none is, the connection is new and has `Quiet::head`.
    answered: AtomicU64,
    /// When the last request ended.
    quiet_since_us: AtomicU64,
    /// When the first byte after it arrived (not after `quiet_since_us`: none yet).
    head_since_us: AtomicU64,
    /// When a write found the socket full and nothing has been written since; 0: none has.
    stalled_since_us: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            quiet_since_us: AtomicU64::new(0),
            head_since_us: AtomicU64::new(0),
            stalled_since_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64
    }

    /// When the connection will have been quiet too long, if no request is in flight.
    fn quiet_until(&self, quiet: Quiet) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.quiet_since_us.load(Ordering::Acquire);
        let head = self.head_since_us.load(Ordering::Acquire);
        let allowed =
            if self.answered.load(Ordering::Acquire) == 0 { quiet.head } else { quiet.idle };
        let mut deadline = self.opened + Duration::from_micros(since) + allowed;
        if head > since {
            deadline = deadline.min(self.opened + Duration::from_micros(head) + quiet.head);
        }
        Some(deadline)
    }

    /// Bytes arrived: while no request is in flight, the next head has begun. (Over HTTP/2
    /// a frame that is no request, a ping, counts too: such a connection gets the head's
    /// time rather than the idle one's.)
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        let since = self.quiet_since_us.load(Ordering::Acquire);
        if self.head_since_us.load(Ordering::Acquire) <= since {
            let now = self.now_us().max(since + 1);
            self.head_since_us.store(now, Ordering::Release);
        }
    }

    /// When the connection will have waited on its client too long, if a write waits.
    fn stalled_until(&self, send: Duration) -> Option<Instant> {
        match self.stalled_since_us.load(Ordering::Acquire) {
            0 => None,
            since => Some(self.opened + Duration::from_micros(since) + send),
        }
    }

    /// A write's outcome: the socket full (the client is not reading), or bytes gone.
    fn wrote<T>(&self, outcome: &Poll<std::io::Result<T>>) {
        match outcome {
            Poll::Pending => {
                if self.stalled_since_us.load(Ordering::Acquire) == 0 {
                    self.stalled_since_us.store(self.now_us().max(1), Ordering::Release);
                }
            }
            Poll::Ready(Ok(_)) => {
                if self.stalled_since_us.load(Ordering::Acquire) != 0 {
                    self.stalled_since_us.store(0, Ordering::Release);
                }
            }
            Poll::Ready(Err(_)) => {}
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

/// One request in flight; its end when dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        // The head that began this request is spent: the next one begins with a later byte.
        let end = activity.now_us().max(activity.head_since_us.load(Ordering::Acquire));
        activity.quiet_since_us.fetch_max(end, Ordering::AcqRel);
        activity.answered.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting the connection's requests in flight into its [`Activity`].
#[derive(Clone)]
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
}

impl<B> tower::Service<Request<B>> for Tracked
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready (axum's own `Service` says so).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let busy = self.activity.begin();
        let answered = tower::ServiceExt::oneshot(self.router.clone(), request.map(Body::new));
        Box::pin(async move {
            let response = answered.await?;
            Ok(response.map(|body| Body::new(Answering { body, _busy: busy })))
        })
    }
}

/// An answer's body, holding its request in flight until it is sent or dropped (a stream's
/// until it ends).
struct Answering {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Connections held per client address. IPv6 clients are counted by their /64, the block
/// one host or subscriber is given; an IPv4-mapped address is its IPv4 address.
struct Addresses {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl Addresses {
    fn new(max: usize) -> Addresses {
        Addresses { max: max.max(1), held: Mutex::default() }
    }

    /// A place for a connection from `ip`, or none when its address holds its most.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressPlace> {
        let client = client_of(ip);
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = held.entry(client).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressPlace { addresses: self.clone(), client })
    }
}

/// The client an address counts for.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// A connection's place among its address's, given back when the socket is dropped.
struct AddressPlace {
    addresses: Arc<Addresses>,
    client: IpAddr,
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut held = self.addresses.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// A connection's socket with its places under the connection caps, given back when the
/// socket is dropped, after an upgrade too.
struct Held {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
    _place: AddressPlace,
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::gauge!("brain_http_connections").decrement(1.0);
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        read
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.activity.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.activity.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_its_most_and_gets_a_place_back_as_one_closes() {
        let addresses = Arc::new(Addresses::new(2));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let (a, b) = (addresses.take(one).unwrap(), addresses.take(one).unwrap());
        assert!(addresses.take(one).is_none());
        assert!(addresses.take("10.0.0.2".parse().unwrap()).is_some(), "another address");
        drop(a);
        let c = addresses.take(one).expect("a place given back");
        drop((b, c));
        assert!(addresses.held.lock().unwrap().is_empty(), "nothing kept for a gone address");
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let client = |text: &str| client_of(text.parse().unwrap());
        assert_eq!(client("2001:db8:1:2:aaaa::1"), client("2001:db8:1:2:bbbb::2"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("::ffff:192.0.2.7"), client("192.0.2.7"));
        assert_eq!(client("192.0.2.7").to_string(), "192.0.2.7");
    }
}
