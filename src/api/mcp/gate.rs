//! What a request to `/mcp` passes before the protocol sees it: the API's gate (`Origin`,
//! a caller whose key or session holds, the key's request rate), a bounded body, and a
//! bounded number of sessions. Every refusal here is the API's error shape with its status,
//! like any route's.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde::Deserialize;

use super::{BODY_BYTES_MAX, SESSIONS_MAX};
use crate::api::auth::{self, Access};
use crate::api::error::{ErrorCode, refused};

/// The session header of the streamable HTTP transport.
const SESSION_HEADER: &str = "mcp-session-id";

#[derive(Clone)]
pub(super) struct Gate {
    pub(super) sessions: Arc<LocalSessionManager>,
    /// The API's request deadline, here the bound on reading a body.
    pub(super) request_timeout: Duration,
}

/// The gate of `/mcp`. Any signed caller may open a session; each tool checks its own
/// permission.
pub(super) async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    if let Err(error) = auth::admit_caller(Access::Signed, &request) {
        return error.into_response();
    }
    if let Err(refusal) = crate::api::rate::counted(Access::Signed, &request).admit().await {
        return refusal;
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > BODY_BYTES_MAX) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    // Read whole here (bounded in size and time), so that a session can be counted before
    // one is made.
    let read =
        tokio::time::timeout(gate.request_timeout, axum::body::to_bytes(body, BODY_BYTES_MAX));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            let message = format!(
                "the request body took longer than {} ms to arrive",
                gate.request_timeout.as_millis()
            );
            return refused(ErrorCode::RequestTimeout, None, message).into_response();
        }
    };
    if !parts.headers.contains_key(SESSION_HEADER) && opens_session(&bytes) {
        let held = gate.sessions.sessions.read().await.len();
        if held >= SESSIONS_MAX {
            let message = format!(
                "this serve holds its most MCP sessions ({SESSIONS_MAX}); retry once one ends \
                 (an idle one ends after {} s)",
                super::SESSION_IDLE_TIMEOUT_S
            );
            return refused(ErrorCode::TooManyClients, None, message).into_response();
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn too_large() -> Response {
    let message = format!("an MCP message is at most {BODY_BYTES_MAX} bytes");
    refused(ErrorCode::InvalidBodyTooLarge, None, message).into_response()
}

/// Whether a message is `initialize`, the one that opens a session (a batch or anything
/// unreadable is left to the protocol, which refuses it).
fn opens_session(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<&'a str>,
    }
    serde_json::from_slice::<Method<'_>>(body)
        .is_ok_and(|message| message.method == Some("initialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_initialize_opens_a_session() {
        assert!(opens_session(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#));
        assert!(!opens_session(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#));
        assert!(!opens_session(br#"[{"method":"initialize"}]"#));
        assert!(!opens_session(b"not json"));
    }
}
