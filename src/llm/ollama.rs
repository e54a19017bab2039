//! Ollama: `POST /api/chat` (a stream of NDJSON lines, each a piece of the message, the last
//! with `done: true` and the token counts), tool calls as whole objects with their arguments
//! as JSON, `POST /api/embed`. No key.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::llm::sse::{Lines, parse_json, relay_text};
use crate::llm::{
    ChatAnswer, ChatRequest, LlmError, Message, Provider, Reason, Timeouts, TokenSink, ToolCall,
    Usage, bad_response, function_tools, json_body, role_name,
};

pub struct Ollama {
    pub client: reqwest::Client,
    /// `http://host:11434`.
    pub base_url: String,
    pub timeouts: Timeouts,
}

impl Ollama {
    async fn send(&self, path: &str, body: &Value) -> Result<reqwest::Response, LlmError> {
        let url = format!("{}/api/{path}", self.base_url.trim_end_matches('/'));
        crate::llm::send(self.client.post(url).json(body), &self.timeouts).await
    }
}

fn wire_message(message: &Message) -> Value {
    let mut wire = json!({ "role": role_name(message.role), "content": message.content });
    if !message.tool_calls.is_empty() {
        wire["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| json!({ "function": { "name": call.name, "arguments": call.arguments } }))
            .collect();
    }
    wire
}

fn wire_request(request: &ChatRequest, stream: bool) -> Value {
    let mut options = json!({});
    if let Some(temperature) = request.temperature {
        options["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = request.max_tokens {
        options["num_predict"] = json!(max_tokens);
    }
    let mut body = json!({
        "model": request.model,
        "messages": request.messages.iter().map(wire_message).collect::<Vec<_>>(),
        "stream": stream,
        "options": options,
    });
    if !request.tools.is_empty() {
        body["tools"] = function_tools(&request.tools);
    }
    body
}

/// Ollama gives tool calls no id; the answer numbers them, so a reply can name one.
fn tool_calls(message: &Value, first: usize) -> Vec<ToolCall> {
    message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(n, call)| ToolCall {
            id: format!("call_{}", first + n),
            name: call["function"]["name"].as_str().unwrap_or_default().to_owned(),
            arguments: call["function"]["arguments"].clone(),
        })
        .collect()
}

fn finish(answer: &mut ChatAnswer, line: &Value) {
    // Absent when Ollama had the prompt cached, or not given at all by servers that only
    // mimic the protocol: the gateway then estimates them.
    answer.usage = Usage::reported(
        line["prompt_eval_count"].as_u64().unwrap_or(0),
        line["eval_count"].as_u64().unwrap_or(0),
    );
    answer.finish_reason = line["done_reason"].as_str().unwrap_or("stop").to_owned();
    if let Some(model) = line["model"].as_str() {
        answer.model = model.to_owned();
    }
}

impl Ollama {
    /// A call answered whole: one message with its tool calls and token counts.
    async fn whole(&self, request: &ChatRequest) -> Result<ChatAnswer, LlmError> {
        let body = json_body(self.send("chat", &wire_request(request, false)).await?).await?;
        if !body["message"].is_object() {
            return Err(bad_response("an answer without a message"));
        }
        let mut answer = ChatAnswer {
            content: body["message"]["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls: tool_calls(&body["message"], 0),
            ..ChatAnswer::default()
        };
        finish(&mut answer, &body);
        Ok(answer)
    }

    /// A streamed call: its lines added up until the one marked `done`, its text relayed to
    /// `sink` as it comes.
    async fn stream(
        &self,
        request: &ChatRequest,
        sink: TokenSink<'_>,
    ) -> Result<ChatAnswer, LlmError> {
        let response = self.send("chat", &wire_request(request, true)).await?;
        let mut lines = Lines::new(response, self.timeouts.first_token);
        let mut answer = ChatAnswer::default();
        while let Some(line) = lines.next().await? {
            if line.trim().is_empty() {
                continue;
            }
            let chunk = parse_json(&line, "a stream line")?;
            if chunk["error"].is_string() {
                let what = "the stream ended with an error";
                return Err(crate::llm::provider_error(Reason::BadResponse, what, &line));
            }
            if let Some(text) = chunk["message"]["content"].as_str() {
                relay_text(&mut answer, sink, text);
            }
            let first = answer.tool_calls.len();
            answer.tool_calls.extend(tool_calls(&chunk["message"], first));
            if chunk["done"] == true {
                finish(&mut answer, &chunk);
                return Ok(answer);
            }
        }
        Err(bad_response("the stream ended before done"))
    }
}

impl Provider for Ollama {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        sink: Option<TokenSink<'a>>,
    ) -> BoxFuture<'a, Result<ChatAnswer, LlmError>> {
        async move {
            match sink {
                Some(sink) => self.stream(request, sink).await,
                None => self.whole(request).await,
            }
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>> {
        async move {
            let response = self.send("embed", &json!({ "model": model, "input": inputs })).await?;
            let body = json_body(response).await?;
            serde_json::from_value(body["embeddings"].clone())
                .map_err(|error| bad_response(format!("embeddings are not vectors: {error}")))
        }
        .boxed()
    }
}
