//! `brain mcp`: an MCP server on stdin/stdout for local clients (an editor, a desktop
//! assistant) that start their servers as processes. It serves nothing of its own: it is
//! an MCP client of a running serve's `/mcp` (`BRAIN_URL`, with the key in
//! `BRAIN_API_KEY`) and relays each request there, so the tools, their permissions and
//! their records are the serve's, one implementation for both transports. Progress
//! notifications come back under the token the local client gave.
//!
//! stdout carries the protocol only; logs go to stderr like every command's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, ReadResourceResponse,
    ResultType, ServerConfig, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceExt};

/// Longest a relayed request may take: the longest wait a tool may ask for, and a margin.
pub const RELAY_TIMEOUT_S: u64 = super::wait::WAIT_TIMEOUT_S_MAX + 60;
/// Requests relayed at once to the serve (more wait their turn in the client).
pub const RELAY_CONCURRENT_MAX: usize = 16;

/// Runs `brain mcp` against the serve at `base_url` with `key` until the local client closes
/// stdin.
pub async fn run(base_url: &str, key: Option<String>) -> anyhow::Result<()> {
    let key = key.context("brain mcp needs a key: set BRAIN_API_KEY or --key")?;
    let url = format!("{}{}", base_url.trim_end_matches('/'), super::MCP_PATH);
    let config = StreamableHttpClientTransportConfig::with_uri(url.clone())
        .auth_header(key)
        .max_concurrent_requests(RELAY_CONCURRENT_MAX);
    let transport = StreamableHttpClientTransport::from_config(config);
    let relay = Arc::new(Relay::default());
    let upstream = Upstream { relay: relay.clone() }
        .serve(transport)
        .await
        .with_context(|| format!("cannot open an MCP session at {url}"))?;
    let serve_info = upstream.peer().peer_info().context("the serve did not say who it is")?;
    // The local session negotiates its own protocol version; the rest is the serve's.
    let mut info = ServerConfig::new(serve_info.capabilities.clone());
    if let Some(implementation) = &serve_info.server_info {
        info = info.with_server_info(implementation.clone());
    }
    if let Some(instructions) = &serve_info.instructions {
        info = info.with_instructions(instructions.clone());
    }
    let local = Local { serve: upstream.peer().clone(), relay: relay.clone(), info }
        .serve(rmcp::transport::stdio())
        .await
        .context("the local client did not open its session")?;
    let _ = relay.local.set(local.peer().clone());
    let _ = local.waiting().await;
    let _ = upstream.cancel().await;
    Ok(())
}

/// What both halves share: the local client's peer, and which local progress token each
/// relayed call's token stands for.
#[derive(Default)]
struct Relay {
    local: OnceLock<Peer<RoleServer>>,
    tokens: Mutex<HashMap<ProgressToken, ProgressToken>>,
}

/// The client half, facing the serve.
struct Upstream {
    relay: Arc<Relay>,
}

impl ClientHandler for Upstream {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let local_token = {
            let tokens = self.relay.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            tokens.get(&params.progress_token).cloned()
        };
        if let (Some(token), Some(local)) = (local_token, self.relay.local.get()) {
            let mut params = params;
            params.progress_token = token;
            let _ = local.notify_progress(params).await;
        }
    }
}

/// The server half, facing the local client. Results come from the serve's session, whose
/// protocol revision may predate the local one's; each is marked complete (the field the
/// 2026-07-28 revision requires, which the server side clears again for older clients).
struct Local {
    serve: Peer<RoleClient>,
    relay: Arc<Relay>,
    info: ServerConfig,
}

fn relayed(error: rmcp::ServiceError) -> ErrorData {
    match error {
        rmcp::ServiceError::McpError(error) => error,
        other => ErrorData::internal_error(format!("the serve did not answer: {other}"), None),
    }
}

/// Forgets a relayed call's token when the call ends, however it ends.
struct TokenGuard<'a> {
    relay: &'a Relay,
    token: ProgressToken,
}

impl Drop for TokenGuard<'_> {
    fn drop(&mut self) {
        let mut tokens = self.relay.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.remove(&self.token);
    }
}

impl ServerHandler for Local {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut listed = self.serve.list_tools(request.map(without_meta)).await.map_err(relayed)?;
        listed.result_type = Some(ResultType::COMPLETE);
        Ok(listed)
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // The serve's session has its own protocol details; the local client's stay here.
        request.meta = None;
        let options = PeerRequestOptions::with_timeout(Duration::from_secs(RELAY_TIMEOUT_S));
        let call = ClientRequest::CallToolRequest(CallToolRequest::new(request));
        let handle = self.serve.send_request_with_option(call, options).await.map_err(relayed)?;
        let _guard = context.meta.get_progress_token().map(|local_token| {
            let token = handle.progress_token.clone();
            let mut tokens =
                self.relay.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            tokens.insert(token.clone(), local_token);
            TokenGuard { relay: &self.relay, token }
        });
        match handle.await_response().await.map_err(relayed)? {
            ServerResult::CallToolResult(mut result) => {
                result.result_type = Some(ResultType::COMPLETE);
                Ok(CallToolResponse::Complete(result))
            }
            _ => Err(ErrorData::internal_error("the serve answered a tool call oddly", None)),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut listed =
            self.serve.list_resources(request.map(without_meta)).await.map_err(relayed)?;
        listed.result_type = Some(ResultType::COMPLETE);
        Ok(listed)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let mut listed =
            self.serve.list_resource_templates(request.map(without_meta)).await.map_err(relayed)?;
        listed.result_type = Some(ResultType::COMPLETE);
        Ok(listed)
    }

    async fn read_resource(
        &self,
        mut request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        request.meta = None;
        let mut read = self.serve.read_resource(request).await.map_err(relayed)?;
        read.result_type = Some(ResultType::COMPLETE);
        Ok(read.into())
    }
}

fn without_meta(mut request: PaginatedRequestParams) -> PaginatedRequestParams {
    request.meta = None;
    request
}
