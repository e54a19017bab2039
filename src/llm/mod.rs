//! The LLM gateway: the one place every LLM call goes through. A [`Provider`] speaks one
//! wire protocol (one file each: [`openai`], [`ollama`], [`anthropic`], and [`offline`], which
//! needs no network); [`gateway`] runs a call against a route's targets in order, with
//! timeouts, retries (backoff with jitter, `Retry-After` honoured) and fallback, and ends every
//! failure as a typed [`Reason`] a person can act on.
//!
//! Provider keys come from the start-up settings ([`Credentials`]), each bound to the base URLs
//! it was configured for, and are never put in a request body, an error message or a log
//! line. A provider's error body is not handed to the caller: the caller gets the typed
//! [`Reason`] and a short summary (the provider's own error message, cut and cleaned); the
//! body itself, bounded, goes to the call's record only, redacted like everything recorded.

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

/// Longest summary of a provider's error a caller is shown, in characters.
pub const ERROR_SUMMARY_MAX: usize = 200;
/// Most of a provider's error body that is read (and kept for the call's record), in bytes.
pub const ERROR_BODY_BYTES_MAX: usize = 16 * 1024;

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

/// A failed call: its reason, a short message for the caller, what the provider said in full
/// (for the record only), and how long the provider asked us to wait (a 429's or 503's
/// `Retry-After`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct LlmError {
    pub reason: Reason,
    /// At most a status and [`ERROR_SUMMARY_MAX`] characters of the provider's words.
    pub message: String,
    /// The provider's error as it sent it (at most [`ERROR_BODY_BYTES_MAX`]): for the call's
    /// record, never for the caller.
    pub detail: Option<String>,
    pub retry_after: Option<Duration>,
    /// A 5xx: worth retrying although the reason says `bad_response`.
    pub server_error: bool,
}

impl LlmError {
    pub fn new(reason: Reason, message: impl Into<String>) -> LlmError {
        LlmError {
            reason,
            message: message.into(),
            detail: None,
            retry_after: None,
            server_error: false,
        }
    }

    /// This error with the process's secrets taken out of its message and detail.
    pub fn redacted(mut self, redactor: &crate::secrets::Redactor) -> LlmError {
        redactor.redact_string(&mut self.message);
        if let Some(detail) = &mut self.detail {
            redactor.redact_string(detail);
        }
        self
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

/// A base entry that lets a key go anywhere: never the result of parsing a base URL.
pub const ANY_ORIGIN: &str = "*";

/// API keys, per provider, each bound to the base URLs it may be sent to: the provider's own,
/// `BRAIN_LLM_HOST` when the start-up provider is this one, and `BRAIN_LLM_KEY_HOSTS` — all
/// set by whoever started the process — and those the configuration bound with the key in
/// hand (`key_hosts`). Never over plain http to another machine. `Debug` never shows a key
/// (design invariant 13: a secret goes only to the host it was configured for).
#[derive(Clone, Default)]
pub struct Credentials {
    pub openai: Option<String>,
    pub anthropic: Option<String>,
    /// Base URLs (canonical: [`crate::config::llm::key_base`]) an OpenAI key may go to;
    /// [`ANY_ORIGIN`] (which no configuration can produce) for code that binds keys itself,
    /// such as tests.
    pub openai_origins: Vec<String>,
    /// Base URLs an Anthropic key may go to.
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
        use crate::config::llm::{ProviderKind, key_base};
        let key = |secret: &Option<crate::config::llm::Secret>| {
            secret.as_ref().map(|secret| secret.expose().to_owned()).filter(|key| !key.is_empty())
        };
        let origins = |kind: ProviderKind| {
            let own = std::iter::once(kind.default_host().to_owned());
            let started = settings.host.clone().filter(|_| settings.provider == kind);
            let listed = settings.key_hosts.iter().cloned();
            let mut origins: Vec<String> =
                own.chain(started).chain(listed).filter_map(|url| key_base(&url)).collect();
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

    fn key_and_origins(
        &self,
        kind: crate::config::llm::ProviderKind,
    ) -> Option<(&String, &Vec<String>)> {
        use crate::config::llm::ProviderKind;
        match kind {
            ProviderKind::Openai => Some((self.openai.as_ref()?, &self.openai_origins)),
            ProviderKind::Anthropic => Some((self.anthropic.as_ref()?, &self.anthropic_origins)),
            ProviderKind::Ollama | ProviderKind::Offline => None,
        }
    }

    /// The key of `kind` if it may go to `base_url`: one of the base URLs it was started
    /// with, or one the configuration bound (`bound`), and never in clear text to another
    /// machine. Otherwise none, said in the log (the call then goes out without it, and a
    /// real provider refuses).
    pub fn key_for(
        &self,
        kind: crate::config::llm::ProviderKind,
        base_url: &str,
        bound: bool,
    ) -> Option<String> {
        use domain::llm_config::clear_text_remote;
        let (key, origins) = self.key_and_origins(kind)?;
        let target = crate::config::llm::key_base(base_url).unwrap_or_default();
        if clear_text_remote(base_url) {
            tracing::warn!(
                provider = kind.as_str(),
                host = %target,
                "the provider key is not sent in clear text: plain http goes only to this machine"
            );
            return None;
        }
        if bound || origins.iter().any(|allowed| *allowed == target || allowed == ANY_ORIGIN) {
            return Some(key.clone());
        }
        tracing::warn!(
            provider = kind.as_str(),
            host = %target,
            allowed = ?origins,
            "the provider key is not sent to this host: it goes only to the hosts it was configured for (BRAIN_LLM_KEY_HOSTS, or key_hosts set with the key)"
        );
        None
    }

    /// What a configuration change is decided with: for each key held, where it goes by
    /// this process's start-up settings, and whether the change came with it (`supplied`,
    /// provider by provider, each already checked with [`Credentials::is_key`]).
    pub fn held(
        &self,
        supplied: &[crate::config::llm::ProviderKind],
    ) -> domain::llm_config::HeldKeys {
        use crate::config::llm::ProviderKind;
        let held = [ProviderKind::Openai, ProviderKind::Anthropic]
            .into_iter()
            .filter_map(|kind| {
                let (_, origins) = self.key_and_origins(kind)?;
                let key = domain::llm_config::HeldKey {
                    default_host: kind.default_host().to_owned(),
                    started: origins.clone(),
                    supplied: supplied.contains(&kind),
                };
                Some((kind.as_str().to_owned(), key))
            })
            .collect();
        domain::llm_config::HeldKeys(held)
    }

    /// Whether `given` is the key of `kind` this process holds (compared in constant time).
    pub fn is_key(&self, kind: crate::config::llm::ProviderKind, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.key_and_origins(kind)
            .is_some_and(|(key, _)| bool::from(key.as_bytes().ct_eq(given.as_bytes())))
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
    let text = bounded_text(response).await;
    Err(status_error(status, &text, retry_after))
}

/// The first [`ERROR_BODY_BYTES_MAX`] of an answer's body, as text (within the call's total
/// deadline, which the request carries): a hostile server's gigabyte is never read whole.
async fn bounded_text(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES_MAX {
        let Ok(Some(chunk)) = response.chunk().await else { break };
        let room = ERROR_BODY_BYTES_MAX - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `text` as a caller may be shown it: control characters and runs of white space made one
/// space, cut to `max` characters (marked `…` when cut).
pub fn sanitised(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_control() || c.is_whitespace() {
            space = true;
            continue;
        }
        if count >= max {
            out.push('…');
            return out;
        }
        if space && !out.is_empty() {
            out.push(' ');
            count += 1;
        }
        space = false;
        out.push(c);
        count += 1;
    }
    out
}

/// The provider's own words in an error it sent as JSON: `error.message` (OpenAI,
/// Anthropic), `error` (Ollama) or `message`; nothing from a body of another shape.
fn error_words(error: &serde_json::Value) -> Option<&str> {
    error["error"]["message"]
        .as_str()
        .or_else(|| error["error"].as_str())
        .or_else(|| error["message"].as_str())
}

/// A provider's error, `raw` as it sent it: the caller is told `what` and a sanitised
/// summary of the provider's own words; `raw` is kept, bounded, for the record.
pub(crate) fn provider_error(reason: Reason, what: &str, raw: &str) -> LlmError {
    let parsed = serde_json::from_str::<serde_json::Value>(raw).ok();
    let words = parsed.as_ref().and_then(error_words).map(|w| sanitised(w, ERROR_SUMMARY_MAX));
    let message = match words.filter(|words| !words.is_empty()) {
        Some(words) => format!("{what}: {words}"),
        None => what.to_owned(),
    };
    let raw: String = if raw.len() > ERROR_BODY_BYTES_MAX {
        raw.char_indices()
            .take_while(|(at, _)| *at < ERROR_BODY_BYTES_MAX)
            .map(|(_, c)| c)
            .collect()
    } else {
        raw.to_owned()
    };
    LlmError { detail: (!raw.is_empty()).then_some(raw), ..LlmError::new(reason, message) }
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

/// What an HTTP status from a provider means (read from the status and the provider's words).
pub(crate) fn status_error(status: u16, body: &str, retry_after: Option<Duration>) -> LlmError {
    let lower = body.to_lowercase();
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
        retry_after,
        server_error: status >= 500,
        ..provider_error(reason, &format!("HTTP {status}"), body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_error_shows_its_caller_a_short_clean_summary_and_keeps_the_body_for_the_record() {
        let words = format!("bad\u{1b}[31m\r\n key \t{}", "x".repeat(1_000));
        let body =
            serde_json::json!({ "error": { "message": words, "internal": "10.0.0.7:5432" } })
                .to_string();
        let error = status_error(401, &body, None);
        assert_eq!(error.reason, Reason::AuthFailed);
        assert!(error.message.starts_with("HTTP 401: bad [31m key xxx"), "{}", error.message);
        assert!(error.message.chars().count() <= "HTTP 401: ".len() + ERROR_SUMMARY_MAX + 1);
        assert!(error.message.ends_with('…') && !error.message.contains("10.0.0.7"));
        assert_eq!(error.detail.as_deref(), Some(body.as_str()));

        // A body of another shape tells the caller the status alone.
        let page = "<html>internal admin page: db=10.0.0.7</html>";
        let error = status_error(500, page, None);
        assert_eq!((error.message.as_str(), error.server_error), ("HTTP 500", true));
        assert_eq!(error.detail.as_deref(), Some(page));
        // Ollama's shape, and a context error still classified from the provider's words.
        let error = status_error(400, r#"{"error": "context length exceeded"}"#, None);
        assert_eq!(error.reason, Reason::ContextTooLong);
        assert_eq!(error.message, "HTTP 400: context length exceeded");
    }

    #[test]
    fn sanitising_keeps_words_drops_controls_and_bounds_characters() {
        assert_eq!(sanitised("  a\u{0}b\n\nc  ", 10), "a b c");
        assert_eq!(sanitised("ééééé", 3), "ééé…");
        assert_eq!(sanitised("", 3), "");
    }
}
