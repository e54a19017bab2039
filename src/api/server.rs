//! The HTTP server around the router: its own accept loop, so that every connection has a
//! bound. `axum::serve` sets no header-read timeout and counts no connections; here each
//! accepted connection holds a permit of [`HttpLimits::connections_max`] for as long as its
//! socket lives (a WebSocket's too: the permit travels with the upgraded socket), headers
//! must arrive within [`HttpLimits::header_read_timeout`], every request is answered within
//! [`HttpLimits::request_timeout`] (body read included, so a client sending one byte a second
//! is cut off, answered 408), and shutdown finishes within [`HttpLimits::shutdown_timeout`]
//! whatever the clients do.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Connections one process holds at once, WebSocket clients included.
pub const HTTP_CONNECTIONS_MAX_DEFAULT: usize = 12_288;
/// Longest a client may take to send a request's headers.
pub const HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest a request may take from its headers to its answer, body read included.
pub const HTTP_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest shutdown waits for requests in flight before it drops their connections.
pub const HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// The HTTP server's bounds, from `brain serve`'s flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct HttpLimits {
    /// Connections held at once (WebSocket clients included); past it, new ones wait in the
    /// listen backlog until one closes.
    #[arg(long = "http-connections-max", env = "BRAIN_HTTP_CONNECTIONS_MAX", default_value_t = HTTP_CONNECTIONS_MAX_DEFAULT)]
    pub connections_max: usize,
    /// Longest a client may take to send a request's headers, in ms.
    #[arg(long = "http-header-read-timeout-ms", env = "BRAIN_HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// Longest a request may take from headers to answer, body included, in ms (408 past it).
    #[arg(long = "http-request-timeout-ms", env = "BRAIN_HTTP_REQUEST_TIMEOUT_MS", default_value_t = HTTP_REQUEST_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Longest shutdown waits for requests in flight, in ms; then their connections close.
    #[arg(long = "http-shutdown-timeout-ms", env = "BRAIN_HTTP_SHUTDOWN_TIMEOUT_MS", default_value_t = HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT)]
    pub shutdown_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            connections_max: HTTP_CONNECTIONS_MAX_DEFAULT,
            header_read_timeout_ms: HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: HTTP_REQUEST_TIMEOUT_MS_DEFAULT,
            shutdown_timeout_ms: HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl HttpLimits {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout());
    // CONNECT protocol for WebSockets over HTTP/2, as axum::serve enables it.
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let builder = Arc::new(builder);
    loop {
        // A permit first: at the cap, new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, _) = tokio::select! {
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
        // Live feed messages are small writes that should leave at once, not wait (Nagle)
        // for the acknowledgement of the previous one.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Permitted { stream, _permit: permit });
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
        // Reap finished connection tasks so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout(), graceful.shutdown()).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight at the shutdown deadline; closing their connections"
        );
    }
    connections.abort_all();
    Ok(())
}

/// A connection's socket with its place under the connection cap, given back when the
/// socket is dropped, after an upgrade too.
struct Permitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
