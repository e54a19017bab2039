//! `plain`: sends the mission's task to the LLM gateway's default route and completes with the
//! answer and its usage. The task is `payload.prompt`, else the mission's description, else its
//! name. It serves the `coder` kind until the coder agent gets its tools; with no LLM
//! configured, the gateway's route is `offline`, so a first mission completes out of the box.
//!
//! Every call, answered or failed, is recorded in the mission's history (`MissionLlmCalled`)
//! before the attempt reports: route, provider, model, tries, the request and the answer
//! (each cut to [`RECORD_BYTES_MAX`]; only the usage with `BRAIN_LLM_RECORD=usage`), tokens,
//! cost at the configured price, latency and outcome.

use std::time::Instant;

use domain::mission::{LlmCall, Mission, MissionCommand};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use time::OffsetDateTime;

use domain::{EventMetadata, StreamId};

use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;
use crate::llm::config::Resolved;
use crate::llm::gateway::Gateway;
use crate::llm::{Message, Role};
use crate::missions::agent::{Agent, Failure, Task};

/// Longest request or answer a call record keeps, in bytes of JSON text.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// What a call record holds: everything within the bound, or the usage alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMode {
    Full,
    Usage,
}

impl RecordMode {
    /// `BRAIN_LLM_RECORD`: `full` (the default) or `usage`.
    pub fn from_env() -> RecordMode {
        match std::env::var("BRAIN_LLM_RECORD").as_deref() {
            Ok("usage") => RecordMode::Usage,
            _ => RecordMode::Full,
        }
    }
}

pub struct Plain {
    pub gateway: Gateway,
    /// Where the runtime configuration is read at every call, and the calls are recorded;
    /// without it (an agent not hosted by a worker), the environment's route, unrecorded.
    pub store: Option<EventStore>,
    pub record: RecordMode,
    /// Where the answer streams as it is generated.
    pub tokens: Option<(async_nats::Client, crate::config::Namespace)>,
}

impl Plain {
    pub fn new(
        store: Option<EventStore>,
        tokens: Option<(async_nats::Client, crate::config::Namespace)>,
    ) -> Plain {
        Plain { gateway: Gateway::from_env(), store, record: RecordMode::from_env(), tokens }
    }
}

/// What the agent asks the model.
pub fn task_text(task: &Task) -> String {
    match task.payload.get("prompt").and_then(|prompt| prompt.as_str()) {
        Some(prompt) if !prompt.trim().is_empty() => prompt.to_owned(),
        _ if !task.description.trim().is_empty() => task.description.clone(),
        _ => task.name.clone(),
    }
}

/// `value` as a record keeps it: whole, or its first bytes and its size.
fn bounded(value: Value) -> Value {
    let text = value.to_string();
    if text.len() <= RECORD_BYTES_MAX {
        return value;
    }
    let mut cut = RECORD_BYTES_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    json!({ "truncated": true, "bytes": text.len(), "head": &text[..cut] })
}

/// The call's cost at its model's price, also counted in `/metrics`.
fn cost_usd(resolved: &Resolved, provider: &str, model: &str, usage: crate::llm::Usage) -> f64 {
    let cost = resolved.cost_usd(model, usage.input_tokens, usage.output_tokens);
    metrics::counter!("brain_llm_cost_microusd_total", "provider" => provider.to_owned(), "model" => model.to_owned())
        .increment((cost * 1_000_000.0).round() as u64);
    cost
}

async fn record(store: &EventStore, task: &Task, call: LlmCall) -> Result<(), Failure> {
    let Ok(mission_id) = StreamId::parse(&task.mission_id) else { return Ok(()) };
    let mut metadata =
        EventMetadata::new(format!("worker:{}", task.worker_id), OffsetDateTime::now_utc());
    metadata.command_id = Some(uuid::Uuid::now_v7());
    if let Ok(id) = uuid::Uuid::parse_str(&task.mission_id) {
        metadata.correlation_id = id;
    }
    let now_ms = crate::clock::now_ms();
    let recorded = command::execute::<Mission>(store, &mission_id, metadata, || {
        MissionCommand::RecordLlmCall {
            worker_id: task.worker_id.clone(),
            attempt: task.attempt,
            call: call.clone(),
            now_ms,
        }
    })
    .await;
    match recorded {
        Ok(_) => Ok(()),
        // The lease is gone: this attempt's answer will not count either.
        Err(CommandError::Rejected(error)) => {
            Err(Failure::retryable(format!("cannot record the LLM call: {error}")))
        }
        // An unrecorded call breaks the audit trail: the attempt fails and runs again.
        Err(error) => Err(Failure::retryable(format!("cannot record the LLM call: {error}"))),
    }
}

impl Agent for Plain {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<serde_json::Value, Failure>> {
        let (gateway, store, mode) = (self.gateway.clone(), self.store.clone(), self.record);
        let tokens = self.tokens.clone();
        async move {
            let resolved = match &store {
                None => Resolved::from_env(),
                Some(store) => crate::llm::config::current(store)
                    .await
                    .map_err(|error| Failure::retryable(format!("cannot read the LLM configuration: {error}")))?,
            };
            let Some(route) = resolved.route.clone() else {
                return Err(Failure::permanent(
                    "LLM call failed: provider_unreachable: the LLM gateway is switched off (enabled: false)",
                ));
            };
            let messages = vec![Message::new(Role::User, task_text(&task))];
            let started = Instant::now();
            let outcome = match tokens {
                None => gateway.chat(&route, &messages, &[], None).await,
                Some((nats, namespace)) => {
                    let subject = crate::llm::tokens::subject(&namespace, &task.mission_id);
                    let mut publisher = crate::llm::tokens::Publisher::start(nats, subject, &task.mission_id, task.attempt);
                    let mut sink = |piece: &str| publisher.piece(piece);
                    let outcome = gateway.chat(&route, &messages, &[], Some(&mut sink)).await;
                    publisher.finish().await;
                    outcome
                }
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let tries = match &outcome {
                Ok(answered) => answered.tries.clone(),
                Err(failed) => failed.tries.clone(),
            };
            let last = tries.last();
            let provider = last.map(|t| t.provider.as_str().to_owned()).unwrap_or_default();
            let model = last.map(|t| t.model.clone()).unwrap_or_default();
            let (usage, outcome_name, response) = match &outcome {
                Ok(answered) => (
                    answered.answer.usage,
                    "ok".to_owned(),
                    json!({ "content": answered.answer.content, "tool_calls": answered.answer.tool_calls,
                            "finish_reason": answered.answer.finish_reason, "model": answered.answer.model }),
                ),
                Err(failed) => (Default::default(), failed.error.reason.as_str().to_owned(), Value::Null),
            };
            if let Some(store) = &store {
                let full = mode == RecordMode::Full;
                let call = LlmCall {
                    route: "default".into(),
                    provider: provider.clone(),
                    model: model.clone(),
                    tries: tries.len() as u32,
                    request: if full { bounded(json!(messages)) } else { Value::Null },
                    response: if full { bounded(response) } else { Value::Null },
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cost_usd: cost_usd(&resolved, &provider, &model, usage),
                    latency_ms,
                    outcome: outcome_name,
                };
                record(store, &task, call).await?;
            }
            match outcome {
                Ok(answered) => Ok(json!({
                    "answer": answered.answer.content,
                    "provider": answered.provider.as_str(),
                    "model": answered.answer.model,
                    "usage": answered.answer.usage,
                })),
                Err(failed) => {
                    let message = format!("LLM call failed: {}", failed.error);
                    Err(if failed.error.retryable() {
                        Failure::retryable(message)
                    } else {
                        Failure::permanent(message)
                    })
                }
            }
        }
        .boxed()
    }
}
