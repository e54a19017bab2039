//! `POST /v1/chat/completions`: BRAiN speaking OpenAI's chat completions protocol, streaming
//! included, so any OpenAI client calls through the gateway's routes, retries and fallback.
//! `model` names a configured route (or `default`); any other name runs on the default route
//! with that model. Each call counts against the daily budgets and is recorded in the log
//! (`llm_call/<id>`, `LlmCalled`, by the calling key).
//!
//! A streamed answer's status line goes out once the call is let through (its budgets held,
//! its first try's place under the shared limits taken): a call refused before that answers
//! with its own status and error body (`402 budget_exceeded`, `429 rate_limited` with
//! `Retry-After`, ...), as an unstreamed one does, never a `200` with an error chunk; one that
//! fails after it ends its stream with an error chunk. The answer is then relayed as it arrives
//! through a bounded buffer ([`STREAM_BUFFER_PIECES`]); the pieces a client that far behind
//! cannot take are dropped (the call runs on to its end and record), rather than making the
//! server hold an unbounded answer for it.

use crate::api::auth::{Access, Authed};
use domain::api_key::Permission;
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::error::{ErrorCode, Refusal, errors, refused};
use super::extract::Metadata;
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::llm::calls::{Ask, CallError, Caller, Calls};
use crate::llm::gateway::{Answered, LetThrough};
use crate::llm::{ChatAnswer, Message, Role, ToolCall, ToolSpec};

/// Pieces of a streamed answer held for a client that reads slowly.
pub const STREAM_BUFFER_PIECES: usize = 4_096;
/// Most messages and tools one request may carry.
pub const MESSAGES_MAX: usize = 1_000;
pub const TOOLS_MAX: usize = 128;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(Access::needs(Permission::LlmCall), routes!(chat_completions))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// A route's name, `default`, or a model for the default route's provider.
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Tools in OpenAI's `{"type": "function", "function": {...}}` form. Other fields of the
    /// protocol (`stream_options`, `user`, ...) are accepted and ignored.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<Value>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Refused(Refusal {
        code: ErrorCode::InvalidField,
        field: Some(field.to_owned().into()),
        message: message.into(),
    })
}

/// A message's text: a string, or the text parts of a content array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|part| part["text"].as_str()).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

fn messages(request: &CompletionRequest) -> Result<Vec<Message>, ApiError> {
    if request.messages.is_empty() || request.messages.len() > MESSAGES_MAX {
        return Err(invalid("messages", format!("1 to {MESSAGES_MAX} messages")));
    }
    request
        .messages
        .iter()
        .enumerate()
        .map(|(n, message)| {
            let role = match message["role"].as_str() {
                Some("system") | Some("developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("tool") => Role::Tool,
                _ => {
                    return Err(invalid(
                        &format!("messages[{n}].role"),
                        "system, user, assistant or tool",
                    ));
                }
            };
            let tool_calls = message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|call| ToolCall {
                    id: call["id"].as_str().unwrap_or_default().to_owned(),
                    name: call["function"]["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: call["function"]["arguments"]
                        .as_str()
                        .and_then(|text| serde_json::from_str(text).ok())
                        .unwrap_or(json!({})),
                })
                .collect();
            Ok(Message {
                role,
                content: text_of(&message["content"]),
                tool_calls,
                tool_call_id: message["tool_call_id"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

fn tools(request: &CompletionRequest) -> Result<Vec<ToolSpec>, ApiError> {
    if request.tools.len() > TOOLS_MAX {
        return Err(invalid("tools", format!("at most {TOOLS_MAX}")));
    }
    Ok(request
        .tools
        .iter()
        .map(|tool| ToolSpec {
            name: tool["function"]["name"].as_str().unwrap_or_default().to_owned(),
            description: tool["function"]["description"].as_str().unwrap_or_default().to_owned(),
            parameters: tool["function"]["parameters"].clone(),
        })
        .collect())
}

/// What the request asks (the route or model `model` names is chosen by the call itself).
fn ask_for(request: &CompletionRequest) -> Result<Ask, ApiError> {
    Ok(Ask {
        route: None,
        model: Some(request.model.clone()),
        messages: messages(request)?,
        tools: tools(request)?,
        temperature: request.temperature,
        max_tokens: request.max_tokens,
    })
}

fn wire_tool_calls(calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .map(|call| json!({ "id": call.id, "type": "function", "function": { "name": call.name, "arguments": call.arguments.to_string() } }))
        .collect()
}

fn usage(answered: &Answered) -> Value {
    let usage = answered.answer.usage;
    json!({ "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens })
}

/// A call that failed before its answer began, with `Retry-After` when it was rate-limited
/// (the provider's, or the shared limits', wait; a second when neither said).
fn refusal(error: CallError) -> Response {
    let retry_after = match &error {
        CallError::Llm(failed) if failed.error.reason == crate::llm::Reason::RateLimited => {
            Some(failed.error.retry_after.unwrap_or_default())
        }
        _ => None,
    };
    let response = call_failure(error).into_response();
    match retry_after {
        Some(wait) => super::error::with_retry_after(response, wait),
        None => response,
    }
}

pub(super) fn call_failure(error: CallError) -> ApiError {
    match error {
        // Refused before any try for want of a route: the gateway is switched off.
        CallError::Llm(failed)
            if failed.tries.is_empty()
                && failed.error.reason == crate::llm::Reason::ProviderUnreachable =>
        {
            refused(ErrorCode::LlmDisabled, None, failed.error.to_string())
        }
        CallError::Llm(failed) => {
            let code = ErrorCode::of_llm(failed.error.reason, failed.error.server_error);
            refused(code, None, failed.error.to_string())
        }
        CallError::Route(reason) => refused(ErrorCode::ModelNotFound, Some("model"), reason),
        CallError::NotAllowed(reason) => refused(ErrorCode::Forbidden, Some("model"), reason),
        CallError::Record(reason) | CallError::Config(reason) => {
            refused(ErrorCode::StoreUnavailable, None, reason)
        }
    }
}

errors! { CompletionErrors = INTERNAL + JSON_BODY + CALLER + LLM_CALL + [InvalidField] }

/// `POST /v1/chat/completions`: OpenAI's protocol, answered through the gateway.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    params(Metadata),
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "A `chat.completion`, or with `stream: true` an SSE stream of `chat.completion.chunk`s ending `[DONE]`"),
        CompletionErrors,
    ))]
async fn chat_completions(
    State(app): State<AppState>,
    Authed(principal): Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let ask = ask_for(&request)?;
    let caller = Caller::Api {
        by: metadata.actor,
        key: Some(key_budget(&principal)),
        usage_kind: crate::llm::calls::API_USAGE_KIND.to_owned(),
    };
    let calls = app.llm_calls().await;
    let completion = Completion {
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        created_s: time::OffsetDateTime::now_utc().unix_timestamp(),
        model: request.model.clone(),
    };
    if request.stream {
        Ok(answer_streamed(calls, caller, ask, completion).await)
    } else {
        answer_whole(calls, caller, ask, completion).await
    }
}

/// What every answer of one completion carries: its id, when it was made, and the model the
/// request named (a whole answer names the model that answered instead).
#[derive(Clone)]
struct Completion {
    id: String,
    created_s: i64,
    model: String,
}

impl Completion {
    /// A `chat.completion.chunk` with one choice of `delta` and `finish`, or, both null, with
    /// none (the usage chunk).
    fn chunk(&self, delta: Value, finish: Value, usage: Option<Value>) -> Value {
        let choices = if finish.is_null() && delta.is_null() {
            json!([])
        } else {
            json!([{ "index": 0, "delta": delta, "finish_reason": finish }])
        };
        let mut chunk = json!({ "id": self.id, "object": "chat.completion.chunk",
            "created": self.created_s, "model": self.model, "choices": choices });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    }
}

/// Why the answer stopped, as OpenAI's clients expect it.
fn finish_reason(answer: &ChatAnswer) -> &'static str {
    if answer.tool_calls.is_empty() { "stop" } else { "tool_calls" }
}

/// The answer as one `chat.completion`, once it is complete.
async fn answer_whole(
    calls: Calls,
    caller: Caller,
    ask: Ask,
    completion: Completion,
) -> Result<Response, ApiError> {
    // In a task of its own: a client that hangs up does not cut the call between its
    // answer and its record (the answer is paid for either way).
    let answered = match tokio::spawn(async move { calls.chat(&caller, &ask, None).await })
        .await
        .map_err(|error| ApiError::Internal(error.into()))?
    {
        Ok(answered) => answered,
        Err(error) => return Ok(refusal(error)),
    };
    let answer = &answered.answer;
    let mut message = json!({ "role": "assistant", "content": answer.content });
    if !answer.tool_calls.is_empty() {
        message["tool_calls"] = json!(wire_tool_calls(&answer.tool_calls));
    }
    Ok(ApiJson(json!({
        "id": completion.id, "object": "chat.completion", "created": completion.created_s,
        "model": answer.model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason(answer) }],
        "usage": usage(&answered),
    }))
    .into_response())
}

/// How a streamed call began: let through (its answer follows in the stream), or refused.
type Began = Result<(), CallError>;

/// The answer as an SSE stream of chunks ending `[DONE]`, relayed as it is generated; its
/// status line waits until the call is let through, so a refusal answers with its status.
async fn answer_streamed(
    calls: Calls,
    caller: Caller,
    ask: Ask,
    completion: Completion,
) -> Response {
    let (pieces, received) = tokio::sync::mpsc::channel::<Value>(STREAM_BUFFER_PIECES);
    let (began, beginning) = tokio::sync::oneshot::channel::<Began>();
    tokio::spawn(stream_call(calls, caller, ask, completion, pieces, began));
    match beginning.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return refusal(error),
        Err(_) => {
            return ApiError::Internal(anyhow::anyhow!("a streamed call ended without an answer"))
                .into_response();
        }
    }
    let events = super::stream::receiver_stream(received)
        .map(|chunk| Ok::<_, Infallible>(Event::default().data(chunk.to_string())))
        .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }));
    // A comment line while the provider thinks in silence: proxies keep the connection,
    // clients ignore it.
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Runs the call, telling `began` once it is let through (or refused), and sending its
/// chunks to `pieces`: the role, each piece of text as it comes, then the tool calls, the
/// finish reason and the usage, or the failure.
async fn stream_call(
    calls: Calls,
    caller: Caller,
    ask: Ask,
    completion: Completion,
    pieces: tokio::sync::mpsc::Sender<Value>,
    began: tokio::sync::oneshot::Sender<Began>,
) {
    // Waits in the buffer, which is empty yet, until the status line is out.
    let first = completion.chunk(json!({ "role": "assistant", "content": "" }), Value::Null, None);
    if pieces.try_send(first).is_err() {
        return;
    }
    let began = Mutex::new(Some(began));
    let let_through = AtomicBool::new(false);
    let tell = || {
        let_through.store(true, Ordering::SeqCst);
        if let Some(began) = began.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = began.send(Ok(()));
        }
    };
    let (sender, piece_chunks) = (pieces.clone(), completion.clone());
    let mut sink = move |piece: &str| {
        // Bounded: a client this far behind is cut off, the call with it.
        let _ = sender.try_send(piece_chunks.chunk(json!({ "content": piece }), Value::Null, None));
    };
    // A client that leaves before its call is let through (the request's deadline, a hang-up)
    // takes the call with it: nothing was sent to a provider yet. Once let through, the call
    // runs on to its end and record, whoever still reads it.
    let left_first = async {
        pieces.closed().await;
        if let_through.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        outcome = calls.chat_told(&caller, &ask, Some(&mut sink), Some(LetThrough(&tell))) => outcome,
        () = left_first => return,
    };
    let last = match outcome {
        Ok(answered) => {
            tell();
            send_tool_calls_and_finish(&completion, &pieces, &answered.answer).await;
            completion.chunk(Value::Null, Value::Null, Some(usage(&answered)))
        }
        Err(error) => {
            let unsent = began.lock().unwrap_or_else(|e| e.into_inner()).take();
            match unsent {
                // Refused before it was let through: answered with its status instead.
                Some(began) => {
                    let _ = began.send(Err(error));
                    return;
                }
                None => stream_failure(error),
            }
        }
    };
    let _ = pieces.send(last).await;
}

/// The end of a streamed answer: its tool calls, numbered, then why it stopped.
async fn send_tool_calls_and_finish(
    completion: &Completion,
    pieces: &tokio::sync::mpsc::Sender<Value>,
    answer: &ChatAnswer,
) {
    if !answer.tool_calls.is_empty() {
        let calls: Vec<Value> = wire_tool_calls(&answer.tool_calls)
            .into_iter()
            .enumerate()
            .map(|(n, mut call)| {
                call["index"] = json!(n);
                call
            })
            .collect();
        let _ =
            pieces.send(completion.chunk(json!({ "tool_calls": calls }), Value::Null, None)).await;
    }
    let finish = json!(finish_reason(answer));
    let _ = pieces.send(completion.chunk(json!({}), finish, None)).await;
}

/// A failed call as the last chunk of its stream (the status line went out with the first).
fn stream_failure(error: CallError) -> Value {
    match error {
        CallError::Llm(failed) => {
            json!({ "error": { "message": failed.error.to_string(), "type": failed.error.reason.as_str() } })
        }
        error @ CallError::Route(_) => {
            json!({ "error": { "message": error.to_string(), "type": ErrorCode::ModelNotFound } })
        }
        error @ CallError::NotAllowed(_) => {
            json!({ "error": { "message": error.to_string(), "type": ErrorCode::Forbidden } })
        }
        error @ (CallError::Record(_) | CallError::Config(_)) => {
            json!({ "error": { "message": error.to_string(), "type": ErrorCode::StoreUnavailable } })
        }
    }
}

/// What a principal's key may spend and call, as the gateway holds it.
pub(super) fn key_budget(principal: &crate::identity::Principal) -> crate::llm::budget::KeyBudget {
    crate::llm::budget::KeyBudget {
        key_id: principal.key_id.clone(),
        limits: principal.limits.clone(),
    }
}
