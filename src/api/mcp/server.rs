//! The MCP handler: who is calling (from the HTTP request that carried the message), whether
//! the session is theirs, a place among [`CALLS_MAX`](super::CALLS_MAX) calls in flight,
//! then the tool or resource of [`super::tools`].

use std::sync::{Arc, OnceLock};

use axum::http::request::Parts;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation,
    InitializeRequestParams, InitializeResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::tools;
use crate::api::error::{ApiError, ErrorCode, refused};
use crate::api::{AppState, auth};
use crate::identity::Principal;

/// What the server tells a client about itself when it connects.
const INSTRUCTIONS: &str = "BRAiN runs missions (tasks) with AI agents. Enqueue one with \
    enqueue_mission, follow it with wait_for_mission (progress notifications while it runs) \
    or get_mission, find missions with list_missions, cancel with cancel_mission. Read a \
    mission's whole history as the resource brain://missions/{mission_id}/history. Errors are \
    {\"error\": {\"code\", \"message\", \"field\"}} like the HTTP API's.";

/// The handler of one session (or one sessionless request).
#[derive(Clone)]
pub(super) struct McpServer {
    app: AppState,
    /// Shared by every session of the serve.
    calls: Arc<Semaphore>,
    /// The key that opened the session; every later message must come with it.
    owner: Arc<OnceLock<String>>,
}

/// Who is calling, as the HTTP request that carried the message says.
pub(super) struct Call {
    pub(super) principal: Principal,
    pub(super) metadata: domain::EventMetadata,
    _permit: OwnedSemaphorePermit,
}

impl McpServer {
    pub(super) fn new(app: AppState, calls: Arc<Semaphore>) -> McpServer {
        McpServer { app, calls, owner: Arc::new(OnceLock::new()) }
    }

    /// The caller of a message and a place among the calls in flight, or why not.
    fn call(&self, context: &RequestContext<RoleServer>) -> Result<Call, ApiError> {
        let parts = context.extensions.get::<Parts>().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("an MCP message came without its HTTP request"))
        })?;
        let principal = auth::principal_of(parts).cloned().ok_or_else(|| {
            let message = "no key: send Authorization: Bearer brn_...".to_owned();
            refused(ErrorCode::Unauthenticated, None, message)
        })?;
        if let Some(owner) = self.owner.get()
            && *owner != principal.key_id
        {
            let message = format!(
                "this MCP session was opened with the key {owner}; another key opens its own"
            );
            return Err(refused(ErrorCode::Forbidden, None, message));
        }
        let metadata = crate::api::extract::metadata(parts)?;
        let permit = self.calls.clone().try_acquire_owned().map_err(|_| {
            let message = format!(
                "this serve has its most MCP calls in flight ({}); retry shortly",
                super::CALLS_MAX
            );
            refused(ErrorCode::TooManyClients, None, message)
        })?;
        Ok(Call { principal, metadata, _permit: permit })
    }
}

/// A refusal as a protocol error (for what has no tool result to carry it: listing and
/// reading resources), with the API's error body as its data.
pub(super) fn protocol_error(error: ApiError) -> ErrorData {
    let (_, body) = error.into_body();
    let code = match body.error.code {
        ErrorCode::MissionNotFound => rmcp::model::ErrorCode::RESOURCE_NOT_FOUND,
        ErrorCode::Internal | ErrorCode::StoreUnavailable | ErrorCode::TooManyClients => {
            rmcp::model::ErrorCode::INTERNAL_ERROR
        }
        ErrorCode::Unauthenticated | ErrorCode::Forbidden => {
            rmcp::model::ErrorCode::INVALID_REQUEST
        }
        _ => rmcp::model::ErrorCode::INVALID_PARAMS,
    };
    let message = body.error.message.clone();
    ErrorData::new(code, message, serde_json::to_value(&body).ok())
}

/// A refusal as a tool's error result: the API's error body, as structured content and as
/// its text.
pub(super) fn tool_error(error: ApiError) -> CallToolResult {
    let (_, body) = error.into_body();
    CallToolResult::structured_error(serde_json::to_value(&body).unwrap_or_default())
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools().enable_resources().build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("brain", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        // The gate let only a signed caller through; the session is theirs from here on.
        if let Some(principal) = context.extensions.get::<Parts>().and_then(auth::principal_of) {
            let _ = self.owner.set(principal.key_id.clone());
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.call(&context).map_err(protocol_error)?;
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = tools::Tool::named(&request.name) else {
            let message = format!("no tool {:?}; tools/list names them", request.name);
            return Err(ErrorData::invalid_params(message, None));
        };
        let call = match self.call(&context) {
            Ok(call) => call,
            Err(error) => return Ok(tool_error(error).into()),
        };
        let answer = tool.run(&self.app, call, request.arguments, &context).await;
        Ok(answer.unwrap_or_else(tool_error).into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let call = self.call(&context).map_err(protocol_error)?;
        let cursor = request.and_then(|request| request.cursor);
        tools::list_histories(&self.app, &call, cursor).await.map_err(protocol_error)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.call(&context).map_err(protocol_error)?;
        Ok(ListResourceTemplatesResult::with_all_items(vec![tools::history_template()]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let call = self.call(&context).map_err(protocol_error)?;
        let read = tools::read_history(&self.app, &call, &request.uri).await;
        read.map(Into::into).map_err(protocol_error)
    }
}
