//! The LLM gateway: the one place every LLM call goes through. A [`Provider`] speaks one
//! wire protocol (one file each: [`openai`], [`ollama`], [`anthropic`], and [`offline`], which
//! needs no network); [`gateway`] runs a call against a route's targets in order, with
//! timeouts, retries (backoff with jitter, `Retry-After` honoured) and fallback, and ends every
//! failure as a typed [`Reason`] a person can act on.
//!
//! Provider keys come from the start-up settings ([`Credentials`]) and are never put in a request
//! body, an error message or a log line: errors are built from status codes and the
//! provider's own error text, which never echoes the key.

pub mod anthropic;
pub mod budget;
pub mod calls;
pub mod config;
pub mod estimate;
pub mod gateway;
pub mod limits;
pub mod offline;
pub mod ollama;
pub mod openai;
pub mod retry;
mod sse;
pub mod tokens;
pub mod usage;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use domain::mission::{EstimateMethod, UsageEstimate};

/// Longest text of a provider's error body kept in a failure's message.
pub const ERROR_TEXT_MAX: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool the model may call: its name, what it does, and a JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
}

/// A call of a tool the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    /// The provider's id for it (generated where a provider gives none), to answer it by.
    pub id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// An assistant message's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool message answers this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// One chat call as a provider receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Set when a count is the gateway's estimate, the provider having reported none
    /// ([`estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<UsageEstimate>,
}

impl Usage {
    /// Counts as the provider reported them.
    pub fn reported(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage { input_tokens, output_tokens, estimate: None }
    }

    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// A provider's complete answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatAnswer {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// Why generation stopped, in the provider's words (`stop`, `tool_calls`, `end_turn`...).
    pub finish_reason: String,
    /// The model that answered, as the provider names it.
    pub model: String,
}

/// Why a call failed, as a person can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ProviderUnreachable,
    AuthFailed,
    ModelNotFound,
    RateLimited,
    Timeout,
    ContextTooLong,
    BadResponse,
    BudgetExceeded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ProviderUnreachable => "provider_unreachable",
            Reason::AuthFailed => "auth_failed",
            Reason::ModelNotFound => "model_not_found",
            Reason::RateLimited => "rate_limited",
            Reason::Timeout => "timeout",
            Reason::ContextTooLong => "context_too_long",
            Reason::BadResponse => "bad_response",
            Reason::BudgetExceeded => "budget_exceeded",
        }
    }

    /// Whether another try of the same target may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Reason::ProviderUnreachable | Reason::RateLimited | Reason::Timeout)
    }
}

/// A failed call: its reason, a message without secrets, and how long the provider asked us
/// to wait (a 429's or 503's `Retry-After`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct LlmError {
    pub reason: Reason,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// A 5xx: worth retrying although the reason says `bad_response`.
    pub server_error: bool,
}

impl LlmError {
    pub fn new(reason: Reason, message: impl Into<String>) -> LlmError {
        LlmError { reason, message: message.into(), retry_after: None, server_error: false }
    }

    pub fn retryable(&self) -> bool {
        self.reason.retryable() || self.server_error
    }
}

/// Receives an answer's text as it is generated.
pub type TokenSink<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Deadlines of one call to a provider.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the first byte of the answer (the first token, streaming).
    pub first_token: Duration,
    /// The whole call.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(60),
            total: Duration::from_secs(120),
        }
    }
}

/// An origin entry that lets a key go anywhere: never the result of parsing a base URL.
pub const ANY_ORIGIN: &str = "*";

/// API keys, per provider, each bound to the origins it may be sent to: the provider's own,
/// `BRAIN_LLM_HOST` when the start-up provider is this one, and `BRAIN_LLM_KEY_HOSTS` — all
/// set by whoever started the process, never by a configuration change through the API.
/// `Debug` never shows a key (design invariant 13: a secret goes only to the host it was
/// configured for).
#[derive(Clone, Default)]
pub struct Credentials {
    pub openai: Option<String>,
    pub anthropic: Option<String>,
    /// Origins (`scheme://host[:port]`) an OpenAI key may go to; [`ANY_ORIGIN`] (which no
    /// configuration can produce) for code that binds keys itself, such as tests.
    pub openai_origins: Vec<String>,
    /// Origins an Anthropic key may go to.
    pub anthropic_origins: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("openai", &self.openai.as_ref().map(|_| "<set>"))
            .field("anthropic", &self.anthropic.as_ref().map(|_| "<set>"))
            .field("openai_origins", &self.openai_origins)
            .field("anthropic_origins", &self.anthropic_origins)
            .finish()
    }
}

impl Credentials {
    /// The keys the process was started with (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`) and
    /// where each may go.
    pub fn of(settings: &crate::config::llm::LlmSettings) -> Credentials {
        use crate::config::llm::{ProviderKind, origin};
        let key = |secret: &Option<crate::config::llm::Secret>| {
            secret.as_ref().map(|secret| secret.expose().to_owned()).filter(|key| !key.is_empty())
        };
        let origins = |kind: ProviderKind| {
            let own = std::iter::once(kind.default_host().to_owned());
            let started = settings.host.clone().filter(|_| settings.provider == kind);
            let listed = settings.key_hosts.iter().cloned();
            let mut origins: Vec<String> =
                own.chain(started).chain(listed).filter_map(|url| origin(&url)).collect();
            origins.sort();
            origins.dedup();
            origins
        };
        Credentials {
            openai: key(&settings.openai_api_key),
            anthropic: key(&settings.anthropic_api_key),
            openai_origins: origins(ProviderKind::Openai),
            anthropic_origins: origins(ProviderKind::Anthropic),
        }
    }

    /// The key of `kind` if `base_url` is one of the origins it may go to; otherwise none,
    /// said in the log (the call then goes out without it, and a real provider refuses).
    pub fn key_for(
        &self,
        kind: crate::config::llm::ProviderKind,
        base_url: &str,
    ) -> Option<String> {
        use crate::config::llm::{ProviderKind, origin};
        let (key, origins) = match kind {
            ProviderKind::Openai => (self.openai.as_ref(), &self.openai_origins),
            ProviderKind::Anthropic => (self.anthropic.as_ref(), &self.anthropic_origins),
            ProviderKind::Ollama | ProviderKind::Offline => return None,
        };
        let key = key?;
        let target = origin(base_url).unwrap_or_default();
        if origins.iter().any(|allowed| *allowed == target || allowed == ANY_ORIGIN) {
            return Some(key.clone());
        }
        tracing::warn!(
            provider = kind.as_str(),
            host = %target,
            allowed = ?origins,
            "the provider key is not sent to this host: it goes only to the hosts it was configured for (BRAIN_LLM_KEY_HOSTS)"
        );
        None
    }
}

/// One wire protocol.
pub trait Provider: Send + Sync {
    /// The provider's name in events and metrics (`openai`, `ollama`, `anthropic`, `offline`).
    fn name(&self) -> &'static str;

    /// One chat call. With a sink, the answer is streamed and each piece of text is handed
    /// to it as it arrives; the complete answer is returned either way.
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        sink: Option<TokenSink<'a>>,
    ) -> BoxFuture<'a, Result<ChatAnswer, LlmError>>;

    /// Embeddings of `inputs`, one vector each.
    fn embed<'a>(
        &'a self,
        model: &'a str,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>>;
}

/// Sends a provider request: the answer's headers are due within the first-token deadline, the
/// whole exchange within the total one; a status other than 2xx becomes its typed failure,
/// with the provider's `Retry-After`.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeouts: &Timeouts,
) -> Result<reqwest::Response, LlmError> {
    let request = request.timeout(timeouts.total);
    let response = tokio::time::timeout(timeouts.first_token, request.send())
        .await
        .map_err(|_| LlmError::new(Reason::Timeout, "no answer within the first-token deadline"))?
        .map_err(transport_error)?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let retry_after = retry::retry_after_of(response.headers());
    let text = response.text().await.unwrap_or_default();
    Err(status_error(status, &text, retry_after))
}

/// `{base}/v1/{path}`, for a base URL given with or without its `/v1`.
pub(crate) fn v1_url(base_url: &str, path: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/{path}")
}

/// The JSON body of an answer that was not streamed.
pub(crate) async fn json_body(response: reqwest::Response) -> Result<serde_json::Value, LlmError> {
    response.json().await.map_err(transport_error)
}

/// Tool-call arguments arrive as JSON text; what does not parse is kept as a string, for the
/// agent loop to refuse as a tool error.
pub(crate) fn tool_arguments(text: &str) -> serde_json::Value {
    if text.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// A role as OpenAI's and Ollama's protocols spell it.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// Tools as OpenAI's and Ollama's protocols take them.
pub(crate) fn function_tools(tools: &[ToolSpec]) -> serde_json::Value {
    tools
        .iter()
        .map(|tool| {
            serde_json::json!({ "type": "function", "function": {
                "name": tool.name, "description": tool.description, "parameters": tool.parameters } })
        })
        .collect()
}

/// What an HTTP status from a provider means.
pub(crate) fn status_error(status: u16, body: &str, retry_after: Option<Duration>) -> LlmError {
    let text: String = body.chars().take(ERROR_TEXT_MAX).collect();
    let lower = text.to_lowercase();
    let reason = match status {
        401 | 403 => Reason::AuthFailed,
        404 => Reason::ModelNotFound,
        408 => Reason::Timeout,
        // 529: Anthropic's "overloaded", its way of asking to come back later.
        429 | 529 => Reason::RateLimited,
        400 | 413 | 422
            if lower.contains("context")
                || lower.contains("too long")
                || lower.contains("maximum") =>
        {
            Reason::ContextTooLong
        }
        400 if lower.contains("model") && lower.contains("not found") => Reason::ModelNotFound,
        _ => Reason::BadResponse,
    };
    LlmError {
        reason,
        message: format!("HTTP {status}: {text}"),
        retry_after,
        server_error: status >= 500,
    }
}

/// What a transport failure means (the message is reqwest's, which names the host, not a key).
pub(crate) fn transport_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::new(Reason::Timeout, "the provider did not answer in time")
    } else if error.is_connect() {
        LlmError::new(Reason::ProviderUnreachable, format!("cannot connect: {error}"))
    } else if error.is_decode() {
        LlmError::new(Reason::BadResponse, format!("unreadable answer: {error}"))
    } else {
        LlmError::new(Reason::ProviderUnreachable, error.to_string())
    }
}

/// A JSON body from a provider that does not have the expected shape.
pub(crate) fn bad_response(what: impl std::fmt::Display) -> LlmError {
    LlmError::new(Reason::BadResponse, what.to_string())
}
