//! Anthropic: `POST /v1/messages` with `x-api-key` and `anthropic-version`, streamed as SSE
//! events (`message_start` with the input usage, `content_block_start` / `_delta` / `_stop`
//! for text and `tool_use` blocks, `message_delta` with the stop reason and output usage,
//! `message_stop`). System messages go in the top-level `system`; tool results are
//! `tool_result` blocks of a user message. Anthropic has no embeddings endpoint.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::llm::sse::{Lines, PartialCall, Streamed, parse_json, relay_text};
use crate::llm::{
    ChatAnswer, ChatRequest, LlmError, Provider, Reason, Role, Timeouts, TokenSink, ToolCall,
    Usage, bad_response, json_body, v1_url,
};

/// The API version this code speaks.
pub const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the call names none.
pub const MAX_TOKENS_DEFAULT: u32 = 1_024;

pub struct Anthropic {
    pub client: reqwest::Client,
    /// `https://api.anthropic.com`, or a base ending in `/v1`.
    pub base_url: String,
    pub key: Option<String>,
    pub timeouts: Timeouts,
}

fn wire_request(request: &ChatRequest, stream: bool) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|message| match message.role {
            Role::Tool => json!({ "role": "user", "content": [{
                "type": "tool_result",
                "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                "content": message.content,
            }]}),
            Role::Assistant if !message.tool_calls.is_empty() => {
                let mut blocks = Vec::new();
                if !message.content.is_empty() {
                    blocks.push(json!({ "type": "text", "text": message.content }));
                }
                for call in &message.tool_calls {
                    blocks.push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments }));
                }
                json!({ "role": "assistant", "content": blocks })
            }
            Role::Assistant => json!({ "role": "assistant", "content": message.content }),
            _ => json!({ "role": "user", "content": message.content }),
        })
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(MAX_TOKENS_DEFAULT),
        "messages": messages,
        "stream": stream,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| json!({ "name": tool.name, "description": tool.description, "input_schema": tool.parameters }))
            .collect();
    }
    body
}

impl Anthropic {
    async fn send(&self, body: &Value) -> Result<reqwest::Response, LlmError> {
        let mut request = self
            .client
            .post(v1_url(&self.base_url, "messages"))
            .header("anthropic-version", API_VERSION)
            .json(body);
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key);
        }
        crate::llm::send(request, &self.timeouts).await
    }

    /// A streamed call: its events added up, its text relayed to `sink` as it comes.
    async fn stream(
        &self,
        request: &ChatRequest,
        sink: TokenSink<'_>,
    ) -> Result<ChatAnswer, LlmError> {
        let response = self.send(&wire_request(request, true)).await?;
        let mut lines = Lines::new(response, self.timeouts.first_token);
        let mut streamed = Streamed::default();
        while let Some(event) = lines.next_event().await? {
            let data = if event.data.is_empty() {
                Value::Null
            } else {
                parse_json(&event.data, "a stream event")?
            };
            match event.name.as_str() {
                "message_start" => message_start(&mut streamed.answer, &data["message"]),
                "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                    tool_use_start(&mut streamed, &data);
                }
                "content_block_delta" => content_delta(&mut streamed, &data, sink),
                "message_delta" => message_delta(&mut streamed.answer, &data),
                "message_stop" => return Ok(streamed.finish()),
                "error" => return Err(stream_error(&data["error"])),
                _ => {}
            }
        }
        Err(bad_response("the stream ended before message_stop"))
    }
}

fn usage_of(usage: &Value) -> Usage {
    Usage::reported(
        usage["input_tokens"].as_u64().unwrap_or(0),
        usage["output_tokens"].as_u64().unwrap_or(0),
    )
}

fn parse_answer(body: &Value) -> Result<ChatAnswer, LlmError> {
    let blocks =
        body["content"].as_array().ok_or_else(|| bad_response("an answer without content"))?;
    let mut answer = ChatAnswer {
        content: String::new(),
        tool_calls: Vec::new(),
        usage: usage_of(&body["usage"]),
        finish_reason: body["stop_reason"].as_str().unwrap_or_default().to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
    };
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => answer.content.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => answer.tool_calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or_default().to_owned(),
                name: block["name"].as_str().unwrap_or_default().to_owned(),
                arguments: block["input"].clone(),
            }),
            _ => {}
        }
    }
    Ok(answer)
}

/// `message_start`: the model, and the input usage (the output's so far).
fn message_start(answer: &mut ChatAnswer, message: &Value) {
    answer.model = message["model"].as_str().unwrap_or_default().to_owned();
    answer.usage = usage_of(&message["usage"]);
}

/// `content_block_start` of a `tool_use` block: its id and name; its input follows in pieces.
fn tool_use_start(streamed: &mut Streamed, data: &Value) {
    let block = &data["content_block"];
    *streamed.open_call(data["index"].as_u64().unwrap_or(0)) = PartialCall {
        id: block["id"].as_str().unwrap_or_default().to_owned(),
        name: block["name"].as_str().unwrap_or_default().to_owned(),
        arguments: String::new(),
    };
}

/// `content_block_delta`: a piece of text, or of a tool call's input.
fn content_delta(streamed: &mut Streamed, data: &Value, sink: TokenSink<'_>) {
    let delta = &data["delta"];
    match delta["type"].as_str() {
        Some("text_delta") => {
            relay_text(&mut streamed.answer, sink, delta["text"].as_str().unwrap_or_default());
        }
        Some("input_json_delta") => {
            if let Some(call) = streamed.call(data["index"].as_u64().unwrap_or(0)) {
                call.arguments.push_str(delta["partial_json"].as_str().unwrap_or_default());
            }
        }
        _ => {}
    }
}

/// `message_delta`: the stop reason and the final output usage.
fn message_delta(answer: &mut ChatAnswer, data: &Value) {
    if let Some(reason) = data["delta"]["stop_reason"].as_str() {
        answer.finish_reason = reason.to_owned();
    }
    if let Some(output) = data["usage"]["output_tokens"].as_u64() {
        answer.usage.output_tokens = output;
    }
}

/// An `error` event: Anthropic overloaded or rate-limited is worth another try, the rest not.
fn stream_error(error: &Value) -> LlmError {
    let kind = error["type"].as_str().unwrap_or_default();
    let reason = if kind == "overloaded_error" || kind == "rate_limit_error" {
        Reason::RateLimited
    } else {
        Reason::BadResponse
    };
    let what = format!("the stream ended with an error ({})", crate::llm::sanitised(kind, 64));
    crate::llm::provider_error(reason, &what, &json!({ "error": error }).to_string())
}

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        sink: Option<TokenSink<'a>>,
    ) -> BoxFuture<'a, Result<ChatAnswer, LlmError>> {
        async move {
            match sink {
                Some(sink) => self.stream(request, sink).await,
                None => {
                    let response = self.send(&wire_request(request, false)).await?;
                    parse_answer(&json_body(response).await?)
                }
            }
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        _model: &'a str,
        _inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>> {
        async { Err(LlmError::new(Reason::ModelNotFound, "Anthropic has no embeddings endpoint")) }
            .boxed()
    }
}
