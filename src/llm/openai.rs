//! OpenAI-compatible providers (OpenAI, a LiteLLM proxy, vLLM, llama.cpp's server):
//! `POST /v1/chat/completions`, streamed as SSE `data:` lines ending `[DONE]` with the usage in
//! the last chunk (`stream_options.include_usage`), tool calls as `function` calls whose
//! arguments arrive as JSON text in pieces; `POST /v1/embeddings`; `Authorization: Bearer`.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::llm::sse::{Lines, Streamed, parse_json, relay_text};
use crate::llm::{
    ChatAnswer, ChatRequest, LlmError, Message, Provider, Reason, Timeouts, TokenSink, ToolCall,
    Usage, bad_response, function_tools, json_body, role_name, tool_arguments, v1_url,
};

pub struct OpenAi {
    pub client: reqwest::Client,
    /// `http://host:port`, or a base ending in `/v1`.
    pub base_url: String,
    pub key: Option<String>,
    pub timeouts: Timeouts,
}

impl OpenAi {
    async fn send(&self, path: &str, body: &Value) -> Result<reqwest::Response, LlmError> {
        let mut request = self.client.post(v1_url(&self.base_url, path)).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        crate::llm::send(request, &self.timeouts).await
    }

    /// A streamed call: its chunks added up, its text relayed to `sink` as it comes.
    async fn stream(
        &self,
        request: &ChatRequest,
        sink: TokenSink<'_>,
    ) -> Result<ChatAnswer, LlmError> {
        let response = self.send("chat/completions", &wire_request(request, true)).await?;
        let mut lines = Lines::new(response, self.timeouts.first_token);
        let mut streamed = Streamed::default();
        while let Some(event) = lines.next_event().await? {
            if event.data == "[DONE]" {
                return Ok(streamed.finish());
            }
            add_chunk(&mut streamed, &parse_json(&event.data, "a stream chunk")?, sink)?;
        }
        Err(bad_response("the stream ended before [DONE]"))
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
    Usage::reported(
        value["prompt_tokens"].as_u64().unwrap_or(0),
        value["completion_tokens"].as_u64().unwrap_or(0),
    )
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
                    arguments: tool_arguments(call["function"]["arguments"].as_str().unwrap_or("")),
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

/// One chunk of a stream: the model, usage (in the last chunk), a piece of text, pieces of
/// tool calls (id and name first, the arguments in pieces), the finish reason.
fn add_chunk(streamed: &mut Streamed, chunk: &Value, sink: TokenSink<'_>) -> Result<(), LlmError> {
    if chunk.get("error").is_some() {
        let what = "the stream ended with an error";
        return Err(crate::llm::provider_error(Reason::BadResponse, what, &chunk.to_string()));
    }
    if let Some(model) = chunk["model"].as_str() {
        streamed.answer.model = model.to_owned();
    }
    if chunk["usage"].is_object() {
        streamed.answer.usage = usage_of(&chunk["usage"]);
    }
    let Some(choice) = chunk["choices"].get(0) else { return Ok(()) };
    if let Some(text) = choice["delta"]["content"].as_str() {
        relay_text(&mut streamed.answer, sink, text);
    }
    for piece in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
        let call = streamed.open_call(piece["index"].as_u64().unwrap_or(0));
        if let Some(id) = piece["id"].as_str() {
            call.id = id.to_owned();
        }
        if let Some(name) = piece["function"]["name"].as_str() {
            call.name.push_str(name);
        }
        if let Some(arguments) = piece["function"]["arguments"].as_str() {
            call.arguments.push_str(arguments);
        }
    }
    if let Some(reason) = choice["finish_reason"].as_str() {
        streamed.answer.finish_reason = reason.to_owned();
    }
    Ok(())
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
                return parse_answer(&json_body(response).await?);
            };
            self.stream(request, sink).await
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
            let body = json_body(response).await?;
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
