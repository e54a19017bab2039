//! OpenAI-compatible providers (OpenAI, a LiteLLM proxy, vLLM, llama.cpp's server):
//! `POST /v1/chat/completions`, streamed as SSE `data:` lines ending `[DONE]` with the usage in
//! the last chunk (`stream_options.include_usage`), tool calls as `function` calls whose
//! arguments arrive as JSON text in pieces; `POST /v1/embeddings`; `Authorization: Bearer`.

use std::collections::BTreeMap;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::llm::sse::Lines;
use crate::llm::{
    ChatAnswer, ChatRequest, LlmError, Message, Provider, Timeouts, TokenSink, ToolCall, Usage,
    bad_response, function_tools, role_name, transport_error,
};

pub struct OpenAi {
    pub client: reqwest::Client,
    /// `http://host:port`, or a base ending in `/v1`.
    pub base_url: String,
    pub key: Option<String>,
    pub timeouts: Timeouts,
}

impl OpenAi {
    fn url(&self, path: &str) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/{path}")
    }

    async fn send(&self, path: &str, body: &Value) -> Result<reqwest::Response, LlmError> {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        crate::llm::send(request, &self.timeouts).await
    }
}

fn wire_message(message: &Message) -> Value {
    let mut wire = json!({ "role": role_name(message.role), "content": message.content });
    if !message.tool_calls.is_empty() {
        wire["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({ "id": call.id, "type": "function",
                        "function": { "name": call.name, "arguments": call.arguments.to_string() } })
            })
            .collect();
    }
    if let Some(id) = &message.tool_call_id {
        wire["tool_call_id"] = json!(id);
    }
    wire
}

fn wire_request(request: &ChatRequest, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "messages": request.messages.iter().map(wire_message).collect::<Vec<_>>(),
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    if !request.tools.is_empty() {
        body["tools"] = function_tools(&request.tools);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = request.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    body
}

fn usage_of(value: &Value) -> Usage {
    Usage {
        input_tokens: value["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: value["completion_tokens"].as_u64().unwrap_or(0),
    }
}

/// Tool-call arguments arrive as JSON text; what does not parse is kept as a string, for the
/// agent loop to refuse as a tool error.
fn arguments(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn parse_answer(body: &Value) -> Result<ChatAnswer, LlmError> {
    let choice = body["choices"].get(0).ok_or_else(|| bad_response("an answer without choices"))?;
    let message = &choice["message"];
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|call| ToolCall {
                    id: call["id"].as_str().unwrap_or_default().to_owned(),
                    name: call["function"]["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: arguments(call["function"]["arguments"].as_str().unwrap_or("")),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ChatAnswer {
        content: message["content"].as_str().unwrap_or_default().to_owned(),
        tool_calls,
        usage: usage_of(&body["usage"]),
        finish_reason: choice["finish_reason"].as_str().unwrap_or_default().to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
    })
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        sink: Option<TokenSink<'a>>,
    ) -> BoxFuture<'a, Result<ChatAnswer, LlmError>> {
        async move {
            let Some(sink) = sink else {
                let response = self.send("chat/completions", &wire_request(request, false)).await?;
                let body: Value = response.json().await.map_err(transport_error)?;
                return parse_answer(&body);
            };
            let response = self.send("chat/completions", &wire_request(request, true)).await?;
            let mut lines = Lines::new(response, self.timeouts.first_token);
            let mut answer = ChatAnswer::default();
            // Tool calls by index: id and name come first, the arguments in pieces.
            let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
            let mut finished = false;
            while let Some(event) = lines.next_event().await? {
                if event.data == "[DONE]" {
                    finished = true;
                    break;
                }
                let chunk: Value = serde_json::from_str(&event.data).map_err(|error| {
                    bad_response(format!("a stream chunk is not JSON: {error}"))
                })?;
                if let Some(error) = chunk.get("error") {
                    return Err(bad_response(format!("the stream ended with an error: {error}")));
                }
                if let Some(model) = chunk["model"].as_str() {
                    answer.model = model.to_owned();
                }
                if chunk["usage"].is_object() {
                    answer.usage = usage_of(&chunk["usage"]);
                }
                let Some(choice) = chunk["choices"].get(0) else { continue };
                if let Some(text) = choice["delta"]["content"].as_str()
                    && !text.is_empty()
                {
                    sink(text);
                    answer.content.push_str(text);
                }
                for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    let entry = calls.entry(call["index"].as_u64().unwrap_or(0)).or_default();
                    if let Some(id) = call["id"].as_str() {
                        entry.0 = id.to_owned();
                    }
                    if let Some(name) = call["function"]["name"].as_str() {
                        entry.1.push_str(name);
                    }
                    if let Some(piece) = call["function"]["arguments"].as_str() {
                        entry.2.push_str(piece);
                    }
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    answer.finish_reason = reason.to_owned();
                }
            }
            if !finished {
                return Err(bad_response("the stream ended before [DONE]"));
            }
            answer.tool_calls = calls
                .into_values()
                .map(|(id, name, text)| ToolCall { id, name, arguments: arguments(&text) })
                .collect();
            Ok(answer)
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>> {
        async move {
            let response =
                self.send("embeddings", &json!({ "model": model, "input": inputs })).await?;
            let body: Value = response.json().await.map_err(transport_error)?;
            let data =
                body["data"].as_array().ok_or_else(|| bad_response("embeddings without data"))?;
            data.iter()
                .map(|item| {
                    serde_json::from_value(item["embedding"].clone()).map_err(|error| {
                        bad_response(format!("an embedding is not a vector: {error}"))
                    })
                })
                .collect()
        }
        .boxed()
    }
}
