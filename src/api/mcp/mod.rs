//! BRAiN as a Model Context Protocol server: `/mcp` answers MCP over streamable HTTP, so an
//! MCP client (a coding assistant, another agent framework) can enqueue missions, follow
//! them, read their results and histories, and chat with an agent, with no glue of its own.
//!
//! The protocol is `rmcp`'s ([`StreamableHttpService`], nested in the API's router); what
//! is BRAiN's is the gate around it and the tools behind it:
//!
//! - [`gate`] keeps the API's own rules: the `Host` check and the caller found by
//!   `auth::authenticate` (which wraps every route, this one too), then a foreign `Origin`
//!   refused and a request without a key or session refused (401), each answered in the
//!   API's error shape, and the key's request rate counted. It also bounds what `rmcp` would
//!   not: the body ([`BODY_BYTES_MAX`], read here before the protocol sees it, within the
//!   request deadline) and the number of sessions ([`SESSIONS_MAX`]; each ends after
//!   [`SESSION_IDLE_TIMEOUT_S`] of quiet).
//!
//! `/mcp` is not under the API's deadline on a request's answer: in the sessionless
//! revision, the answer to a call begins only with the call's first message, so a
//! `wait_for_mission` without a progress token would be cut at the deadline however long it
//! was allowed to wait. Each call is bounded by its own limit instead (a wait by
//! [`wait::WAIT_TIMEOUT_S_MAX`], a chat by the LLM gateway's timeout, the rest by the
//! store's), and the body by the deadline.
//! - [`server`] is the protocol's handler: one per session (or per request, for clients of
//!   the sessionless 2026-07-28 revision). Every call reads its caller from the HTTP request
//!   that carried it, so a key revoked mid-session stops at its next call, and a session is
//!   bound to the key that opened it.
//! - [`tools`] are the tools and the history resource, each calling the same function its
//!   HTTP route calls, under the same permission; a refusal is the route's error body.
//! - [`stdio`] is `brain mcp`: a local stdio server that relays to a running serve's `/mcp`.

mod gate;
mod resources;
mod server;
pub mod stdio;
mod tools;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::AppState;

/// Where the serve answers MCP.
pub const MCP_PATH: &str = "/mcp";
/// Most MCP sessions (clients that opened one with `initialize`) a serve holds at once; a
/// new one past it is refused (503 `too_many_clients`) until one ends.
pub const SESSIONS_MAX: usize = 256;
/// A session with no message either way for this long is closed; its client must
/// initialize again.
pub const SESSION_IDLE_TIMEOUT_S: u64 = 600;
/// Longest a new session may wait for its `initialize`.
pub const SESSION_INIT_TIMEOUT_S: u64 = 30;
/// Largest request body: a JSON-RPC message with a tool's arguments (a mission's payload is
/// at most 256 KiB, a chat message 32,000 characters).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Most tool calls and resource reads in flight over MCP in one serve, every session
/// together; one past it is refused at once (`too_many_clients`) rather than queued.
pub const CALLS_MAX: usize = 64;
/// How often an idle event stream carries a keep-alive comment.
pub const SSE_KEEP_ALIVE_S: u64 = 15;

/// The `/mcp` route: `rmcp`'s streamable HTTP service behind [`gate`], which reads a body
/// within `request_timeout`.
pub fn router(app: AppState, request_timeout: Duration) -> Router<AppState> {
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(Duration::from_secs(SESSION_IDLE_TIMEOUT_S));
    sessions.session_config.init_timeout = Some(Duration::from_secs(SESSION_INIT_TIMEOUT_S));
    let sessions = Arc::new(sessions);
    // `Host` and `Origin` are the gate's (the API's policy, BRAIN_PUBLIC_HOSTS and
    // BRAIN_ALLOWED_ORIGINS): rmcp's own lists would know only loopback names.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(BODY_BYTES_MAX)
        .with_sse_keep_alive(Some(Duration::from_secs(SSE_KEEP_ALIVE_S)));
    let calls = Arc::new(tokio::sync::Semaphore::new(CALLS_MAX));
    let handler_app = app.clone();
    let service = StreamableHttpService::new(
        move || Ok(server::McpServer::new(handler_app.clone(), calls.clone())),
        sessions.clone(),
        config,
    );
    Router::new().route_service(MCP_PATH, service).layer(axum::middleware::from_fn_with_state(
        gate::Gate { sessions, request_timeout },
        gate::gate,
    ))
}
