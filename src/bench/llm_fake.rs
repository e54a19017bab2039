//! The provider `brain bench llm` calls: OpenAI's chat completions protocol (streamed or not)
//! with a capacity of R requests per second, as a provider's rate limit is: a request beyond
//! it is answered 429 with `Retry-After` (whole seconds) and `retry-after-ms` (what OpenAI and
//! Azure add), saying when the next one would be let through. The capacity is a virtual
//! scheduling rule (GCRA) with a burst of a tenth of a second's worth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the fake behaves.
#[derive(Debug, Clone, Copy)]
pub struct FakeProvider {
    /// Requests let through per second; `None` lets every request through.
    pub capacity_per_s: Option<f64>,
    /// How long an answer takes before its first byte.
    pub latency: Duration,
    /// Pieces of a streamed answer, and the time between two.
    pub pieces: u32,
    pub piece_gap: Duration,
    /// Offered tools, answers a request whose last message is not a tool's result with a
    /// call of `list_dir` on `.` (so a thinking agent takes two steps per task).
    pub calls_tools: bool,
    /// Offered `spawn_missions`, answers a request whose last message is not a tool's result
    /// with a call of it asking for this many `coder` sub-missions.
    pub spawns: u32,
}

/// What the fake counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub answered: AtomicU64,
    pub limited: AtomicU64,
    /// Answered since [`Running::measure_from_now`].
    pub answered_measured: AtomicU64,
}

struct Fake {
    config: FakeProvider,
    /// The theoretical arrival time of the next request (GCRA).
    tat: Mutex<Option<Instant>>,
    counts: Arc<Counts>,
    measuring_since: Mutex<Option<Instant>>,
}

pub struct Running {
    pub url: String,
    pub counts: Arc<Counts>,
    fake: Arc<Fake>,
}

impl Running {
    /// Counts answers from now on in `answered_measured`.
    pub fn measure_from_now(&self) {
        *self.fake.measuring_since.lock().expect("not poisoned") = Some(Instant::now());
    }
}

impl FakeProvider {
    pub async fn start(self) -> anyhow::Result<Running> {
        let counts = Arc::new(Counts::default());
        let fake = Arc::new(Fake {
            config: self,
            tat: Mutex::new(None),
            counts: counts.clone(),
            measuring_since: Mutex::new(None),
        });
        let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        // Without TCP_NODELAY a streamed answer's pieces wait on the client's delayed ACK
        // (40 ms a step), which would be the fake's latency, not the gateway's.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Running { url, counts, fake })
    }
}

impl Fake {
    /// Admits a request now, or says how long until one would be.
    fn admit(&self) -> Result<(), Duration> {
        let Some(rate) = self.config.capacity_per_s else { return Ok(()) };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let burst = interval.mul_f64((rate / 10.0).max(1.0));
        let now = Instant::now();
        let mut tat = self.tat.lock().expect("not poisoned");
        let next = tat.unwrap_or(now).max(now);
        if next > now + burst {
            return Err(next - now - burst);
        }
        *tat = Some(next + interval);
        Ok(())
    }
}

async fn chat(State(fake): State<Arc<Fake>>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(wait) = fake.admit() {
        fake.counts.limited.fetch_add(1, Ordering::Relaxed);
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let error = json!({ "error": { "message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded" } });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", seconds.to_string()),
                ("retry-after-ms", wait.as_millis().max(1).to_string()),
            ],
            axum::Json(error),
        )
            .into_response();
    }
    tokio::time::sleep(fake.config.latency).await;
    fake.counts.answered.fetch_add(1, Ordering::Relaxed);
    let since = *fake.measuring_since.lock().expect("not poisoned");
    if since.is_some() {
        fake.counts.answered_measured.fetch_add(1, Ordering::Relaxed);
    }
    let model = body["model"].clone();
    let offered = body["tools"].as_array().is_some_and(|tools| !tools.is_empty());
    let answered_tool =
        body["messages"].as_array().and_then(|m| m.last()).is_some_and(|m| m["role"] == "tool");
    let spawn_offered = body["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|tool| tool["function"]["name"] == "spawn_missions"));
    if fake.config.spawns > 0 && spawn_offered && !answered_tool {
        let missions: Vec<Value> = (0..fake.config.spawns)
            .map(|n| json!({ "agent": "coder", "name": format!("part {n}"), "task": format!("do part {n}") }))
            .collect();
        return tool_call(&body, model, "spawn_missions", &json!({ "missions": missions }));
    }
    if fake.config.calls_tools && offered && !answered_tool {
        return tool_call(&body, model, "list_dir", &json!({ "path": "." }));
    }
    let pieces = fake.config.pieces.max(1);
    let usage =
        json!({ "prompt_tokens": 12, "completion_tokens": pieces, "total_tokens": 12 + pieces });
    if body["stream"] != true {
        let text = "word ".repeat(pieces as usize);
        return axum::Json(json!({ "id": "chatcmpl-bench", "object": "chat.completion", "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            "usage": usage }))
        .into_response();
    }
    let gap = fake.config.piece_gap;
    let chunk = move |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        )
    };
    let stream = futures::stream::unfold(0u32, move |n| {
        let (chunk, usage) = (chunk.clone(), usage.clone());
        async move {
            let text = match n {
                0 => chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
                n if n <= pieces => {
                    tokio::time::sleep(gap).await;
                    chunk(json!({ "content": "word " }), Value::Null)
                }
                n if n == pieces + 1 => chunk(json!({}), json!("stop")),
                n if n == pieces + 2 => format!(
                    "data: {}\n\n",
                    json!({ "id": "chatcmpl-bench", "object": "chat.completion.chunk", "choices": [], "usage": usage })
                ),
                n if n == pieces + 3 => "data: [DONE]\n\n".to_owned(),
                _ => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(text), n + 1))
        }
    });
    ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
}

/// An answer asking for tool `name` with `arguments`, streamed or not as the request asks.
fn tool_call(body: &Value, model: Value, name: &str, arguments: &Value) -> Response {
    let call = json!({ "id": "call_0", "type": "function", "function": { "name": name, "arguments": arguments.to_string() } });
    let usage = json!({ "prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18 });
    if body["stream"] != true {
        return axum::Json(json!({ "id": "chatcmpl-bench", "object": "chat.completion", "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": null, "tool_calls": [call] }, "finish_reason": "tool_calls" }],
            "usage": usage }))
        .into_response();
    }
    let mut streamed = call.clone();
    streamed["index"] = json!(0);
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        )
    };
    let text = [
        chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
        chunk(json!({ "tool_calls": [streamed] }), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        format!("data: {}\n\n", json!({ "id": "chatcmpl-bench", "object": "chat.completion.chunk", "choices": [], "usage": usage })),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    ([("content-type", "text/event-stream")], Body::from(text)).into_response()
}
