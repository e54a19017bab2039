//! A fake LLM server speaking the three providers' real wire protocols (OpenAI's chat
//! completions and embeddings, Ollama's chat and embed, Anthropic's messages), streaming
//! included, and misbehaving on cue: a status with `Retry-After`, a malformed body, a wrong
//! key, an unknown model, answers that report no usage (as many OpenAI-compatible servers
//! stream), a hostile body of any size. It records every request it gets, with when it got it
//! and on which path (OpenAI's chat answers under a fixed path prefix `/gw` too).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

/// The model name the fake does not know.
pub const UNKNOWN_MODEL: &str = "no-such-model";

/// What the fake does with the next request.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Answers with this text (streamed word by word when asked to stream), these tool calls
    /// (name, arguments) and this usage.
    Answer { text: String, tool_calls: Vec<(String, Value)>, usage: (u64, u64) },
    /// Answers this status with a provider-style error body and, if given, `Retry-After`.
    Status { code: u16, retry_after: Option<String> },
    /// Answers 200 with a body that is not the protocol's.
    Malformed,
    /// Answers this status with this body, as it is.
    Body { code: u16, body: String },
}

impl Scripted {
    pub fn text(text: &str) -> Scripted {
        Scripted::Answer { text: text.to_owned(), tool_calls: vec![], usage: (11, 7) }
    }
}

/// `key` for both providers, allowed to go to any host: the fakes listen on ports chosen at
/// run time, so the tests bind keys themselves (`ANY_ORIGIN`) rather than by configuration.
pub fn credentials(key: &str) -> brain::llm::Credentials {
    brain::llm::Credentials {
        openai: Some(key.into()),
        anthropic: Some(key.into()),
        openai_origins: vec![brain::llm::ANY_ORIGIN.into()],
        anthropic_origins: vec![brain::llm::ANY_ORIGIN.into()],
    }
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
}

struct Fake {
    script: Mutex<VecDeque<Scripted>>,
    fallback: Scripted,
    key: Option<String>,
    seen: Mutex<Vec<Seen>>,
    /// How long an OpenAI chat answer takes, and the most such answers in progress at once.
    delay_ms: AtomicU64,
    /// Between the pieces of a streamed OpenAI answer, so a client sees it arrive.
    piece_delay_ms: AtomicU64,
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
    /// Whether answers report their usage (token counts).
    usage_reported: AtomicBool,
}

/// One OpenAI chat request in progress, counted while it lives.
struct InFlight<'a>(&'a Fake);

impl<'a> InFlight<'a> {
    fn enter(fake: &'a Fake) -> InFlight<'a> {
        let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        fake.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(fake)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    fake: Arc<Fake>,
}

impl FakeLlm {
    /// A fake answering `fallback` once its script is used up, checking `key` when given.
    pub async fn start(script: Vec<Scripted>, fallback: Scripted, key: Option<&str>) -> FakeLlm {
        let fake = Arc::new(Fake {
            script: Mutex::new(script.into()),
            fallback,
            key: key.map(str::to_owned),
            seen: Mutex::new(Vec::new()),
            delay_ms: AtomicU64::new(0),
            piece_delay_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            most_in_flight: AtomicU64::new(0),
            usage_reported: AtomicBool::new(true),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/gw/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embed))
            .route("/api/chat", post(ollama_chat))
            .route("/api/embed", post(ollama_embed))
            .route("/v1/messages", post(anthropic_messages))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Streamed pieces go out at once, not after the client's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeLlm { addr, fake }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.fake.seen.lock().unwrap().clone()
    }

    /// OpenAI chat answers take this long from now on.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.fake.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The most OpenAI chat requests that were in progress at once.
    /// Spaces the events of every streamed OpenAI answer from now on by `delay`.
    pub fn set_piece_delay(&self, delay: std::time::Duration) {
        self.fake.piece_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn most_in_flight(&self) -> u64 {
        self.fake.most_in_flight.load(Ordering::SeqCst)
    }

    /// From now on, answers report no usage: OpenAI's without its `usage` (a stream without
    /// its usage chunk, whatever `stream_options` asked), Ollama's without its counts,
    /// Anthropic's without its `usage` objects.
    pub fn omit_usage(&self) {
        self.fake.usage_reported.store(false, Ordering::SeqCst);
    }
}

impl Fake {
    fn reports_usage(&self) -> bool {
        self.usage_reported.load(Ordering::SeqCst)
    }
}

enum Protocol {
    OpenAi,
    Ollama,
    Anthropic,
}

impl Fake {
    /// Records the request, checks key and model, and says what to do.
    #[expect(clippy::result_large_err, reason = "a test fake's early answer; size is no concern")]
    fn next(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        protocol: &Protocol,
    ) -> Result<Scripted, Response> {
        self.seen.lock().unwrap().push(Seen {
            path: path.to_owned(),
            at: Instant::now(),
            headers: headers.clone(),
            body: body.clone(),
        });
        if let Some(key) = &self.key {
            let given = match protocol {
                Protocol::OpenAi => headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned),
                Protocol::Anthropic => {
                    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
                }
                Protocol::Ollama => Some(key.clone()),
            };
            if given.as_deref() != Some(key.as_str()) {
                return Err(error(protocol, 401, "invalid api key", None));
            }
        }
        if body["model"] == UNKNOWN_MODEL {
            return Err(error(
                protocol,
                404,
                &format!("model \"{UNKNOWN_MODEL}\" not found"),
                None,
            ));
        }
        let scripted =
            self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.fallback.clone());
        match scripted {
            Scripted::Status { code, retry_after } => {
                Err(error(protocol, code, "scripted failure", retry_after))
            }
            Scripted::Malformed => {
                Err((StatusCode::OK, [("content-type", "application/json")], "{\"surprise\": tru")
                    .into_response())
            }
            Scripted::Body { code, body } => Err((
                StatusCode::from_u16(code).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response()),
            answer => Ok(answer),
        }
    }
}

fn error(protocol: &Protocol, code: u16, message: &str, retry_after: Option<String>) -> Response {
    let body = match protocol {
        Protocol::OpenAi => {
            json!({ "error": { "message": message, "type": "invalid_request_error" } })
        }
        Protocol::Ollama => json!({ "error": message }),
        Protocol::Anthropic => {
            json!({ "type": "error", "error": { "type": "api_error", "message": message } })
        }
    };
    let mut response = (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response();
    if let Some(retry_after) = retry_after {
        response.headers_mut().insert("retry-after", retry_after.parse().unwrap());
    }
    response
}

fn words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    for (n, word) in text.split(' ').enumerate() {
        pieces.push(if n == 0 { word.to_owned() } else { format!(" {word}") });
    }
    pieces
}

fn sse(events: Vec<String>) -> Response {
    let body: String = events.concat();
    ([("content-type", "text/event-stream")], Body::from(body)).into_response()
}

async fn openai_chat(
    State(fake): State<Arc<Fake>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let _counted = InFlight::enter(&fake);
    let delay = fake.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let (text, calls, (input, output)) =
        match fake.next(uri.path(), &headers, &body, &Protocol::OpenAi) {
            Ok(Scripted::Answer { text, tool_calls, usage }) => (text, tool_calls, usage),
            Ok(_) => unreachable!(),
            Err(response) => return response,
        };
    let model = body["model"].clone();
    let usage = json!({ "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output });
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    if body["stream"] != true {
        let tool_calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(n, (name, args))| json!({ "id": format!("call_{n}"), "type": "function", "function": { "name": name, "arguments": args.to_string() } }))
            .collect();
        let mut message = json!({ "role": "assistant", "content": text });
        if !tool_calls.is_empty() {
            message["tool_calls"] = json!(tool_calls);
        }
        let mut answer = json!({ "id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{ "index": 0, "message": message, "finish_reason": finish }] });
        if fake.reports_usage() {
            answer["usage"] = usage;
        }
        return axum::Json(answer).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        )
    };
    let mut events = vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)];
    for piece in words(&text).into_iter().filter(|p| !p.is_empty()) {
        events.push(chunk(json!({ "content": piece }), Value::Null));
    }
    for (n, (name, args)) in calls.iter().enumerate() {
        // The arguments arrive in two pieces, as real servers split them.
        let text = args.to_string();
        let (head, tail) = text.split_at(text.len() / 2);
        events.push(chunk(json!({ "tool_calls": [{ "index": n, "id": format!("call_{n}"), "type": "function", "function": { "name": name, "arguments": head } }] }), Value::Null));
        events.push(chunk(
            json!({ "tool_calls": [{ "index": n, "function": { "arguments": tail } }] }),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!(finish)));
    if fake.reports_usage() {
        events.push(format!("data: {}\n\n", json!({ "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    let pause = fake.piece_delay_ms.load(Ordering::SeqCst);
    if pause == 0 {
        return sse(events);
    }
    let paced = futures::stream::iter(events).then(move |event| async move {
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        Ok::<_, std::convert::Infallible>(event)
    });
    ([("content-type", "text/event-stream")], Body::from_stream(paced)).into_response()
}

async fn openai_embed(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(response) = fake.next("/v1/embeddings", &headers, &body, &Protocol::OpenAi) {
        return response;
    }
    let data: Vec<Value> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, input)| json!({ "object": "embedding", "index": n, "embedding": [input.as_str().unwrap().len() as f32, 0.5] }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data, "model": body["model"] })).into_response()
}

async fn ollama_chat(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let (text, calls, (input, output)) =
        match fake.next("/api/chat", &headers, &body, &Protocol::Ollama) {
            Ok(Scripted::Answer { text, tool_calls, usage }) => (text, tool_calls, usage),
            Ok(_) => unreachable!(),
            Err(response) => return response,
        };
    let model = body["model"].clone();
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(name, args)| json!({ "function": { "name": name, "arguments": args } }))
        .collect();
    let mut done = json!({ "model": model, "created_at": "2026-12-01T00:00:00Z", "message": { "role": "assistant", "content": "" },
        "done": true, "done_reason": "stop" });
    if fake.reports_usage() {
        done["prompt_eval_count"] = json!(input);
        done["eval_count"] = json!(output);
    }
    if body["stream"] == false {
        let mut answer = done.clone();
        answer["message"] =
            json!({ "role": "assistant", "content": text, "tool_calls": tool_calls });
        return axum::Json(answer).into_response();
    }
    let mut lines = Vec::new();
    for piece in words(&text).into_iter().filter(|p| !p.is_empty()) {
        lines.push(format!("{}\n", json!({ "model": model, "message": { "role": "assistant", "content": piece }, "done": false })));
    }
    if !tool_calls.is_empty() {
        lines.push(format!("{}\n", json!({ "model": model, "message": { "role": "assistant", "content": "", "tool_calls": tool_calls }, "done": false })));
    }
    lines.push(format!("{done}\n"));
    ([("content-type", "application/x-ndjson")], Body::from(lines.concat())).into_response()
}

async fn ollama_embed(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(response) = fake.next("/api/embed", &headers, &body, &Protocol::Ollama) {
        return response;
    }
    let embeddings: Vec<Value> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| json!([input.as_str().unwrap().len() as f32, 0.25]))
        .collect();
    axum::Json(json!({ "model": body["model"], "embeddings": embeddings })).into_response()
}

async fn anthropic_messages(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if headers.get("anthropic-version").is_none() {
        return error(&Protocol::Anthropic, 400, "anthropic-version header is required", None);
    }
    let (text, calls, (input, output)) =
        match fake.next("/v1/messages", &headers, &body, &Protocol::Anthropic) {
            Ok(Scripted::Answer { text, tool_calls, usage }) => (text, tool_calls, usage),
            Ok(_) => unreachable!(),
            Err(response) => return response,
        };
    let model = body["model"].clone();
    let stop = if calls.is_empty() { "end_turn" } else { "tool_use" };
    if body["stream"] != true {
        let mut content = vec![json!({ "type": "text", "text": text })];
        for (n, (name, args)) in calls.iter().enumerate() {
            content.push(json!({ "type": "tool_use", "id": format!("toolu_{n}"), "name": name, "input": args }));
        }
        let mut answer = json!({ "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "usage": { "input_tokens": input, "output_tokens": output } });
        if !fake.reports_usage() {
            answer.as_object_mut().unwrap().remove("usage");
        }
        return axum::Json(answer).into_response();
    }
    let reports_usage = fake.reports_usage();
    let event = |name: &str, mut data: Value| {
        if !reports_usage {
            data.as_object_mut().unwrap().remove("usage");
            if let Some(message) = data.get_mut("message").and_then(Value::as_object_mut) {
                message.remove("usage");
            }
        }
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut events = vec![
        event(
            "message_start",
            json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message", "role": "assistant",
            "model": model, "content": [], "usage": { "input_tokens": input, "output_tokens": 1 } } }),
        ),
        event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        event("ping", json!({ "type": "ping" })),
    ];
    for piece in words(&text).into_iter().filter(|p| !p.is_empty()) {
        events.push(event("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": piece } })));
    }
    events.push(event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })));
    for (n, (name, args)) in calls.iter().enumerate() {
        let index = n + 1;
        let text = args.to_string();
        let (head, tail) = text.split_at(text.len() / 2);
        events.push(event("content_block_start", json!({ "type": "content_block_start", "index": index,
            "content_block": { "type": "tool_use", "id": format!("toolu_{n}"), "name": name, "input": {} } })));
        for part in [head, tail] {
            events.push(event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index,
                "delta": { "type": "input_json_delta", "partial_json": part } }),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    events.push(event("message_delta", json!({ "type": "message_delta", "delta": { "stop_reason": stop }, "usage": { "output_tokens": output } })));
    events.push(event("message_stop", json!({ "type": "message_stop" })));
    sse(events)
}
