//! A call as BRAiN makes it for someone: the route chosen from the runtime configuration, the
//! budgets that apply, the call through the gateway (limits, retries, fallback), and its
//! record in the log. Built-in agents and `POST /v1/chat/completions` both call through here,
//! so every call, whoever makes it, is budgeted, limited and recorded the same way.
//!
//! A mission's call is recorded in the mission's history (`MissionLlmCalled`, fenced by the
//! caller's lease); any other call in a stream of its own (`llm_call/<id>`, `LlmCalled`).
//! Each record holds the route, provider, model, tries, the request and the answer (each cut
//! to [`RECORD_BYTES_MAX`]; only the usage with `BRAIN_LLM_RECORD=usage`), tokens (marked
//! where they are the gateway's estimate, the provider having reported none), cost at the
//! configured price, latency and outcome; a failed call's record holds the provider's error
//! as it sent it (bounded), which its caller is never shown.
//!
//! What the model answers is redacted ([`crate::secrets`]) before anyone sees or records it,
//! and so is the request as it is recorded: a secret a tool read or a prompt held does not
//! reach the log through a call.

use std::time::Instant;

use domain::budget::Budget;
use domain::llm_call::LlmCallEvent;
use domain::mission::{LlmCall, Mission, MissionCommand};
use domain::{EventMetadata, ExpectedVersion, StreamId};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::config::llm::LlmSettings;
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::{Append, EventStore};
use crate::llm::budget;
use crate::llm::config::Resolved;
use crate::llm::gateway::{Answered, Call, Failed, Gateway, LetThrough, Route};
use crate::llm::{LlmError, Message, Reason, TokenSink, ToolSpec};

/// Longest request or answer a call record keeps, in bytes of JSON text.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

pub use crate::config::llm::RecordMode;

/// The mission a call is made for: its attempt fences the record, its budget and agent kind
/// bound the spend.
#[derive(Debug, Clone)]
pub struct ForMission {
    pub mission_id: String,
    pub kind: String,
    pub attempt: u32,
    pub worker_id: String,
    pub budget: Option<Budget>,
    /// The mission whose budget it is (the root of a tree for its sub-missions).
    pub budget_scope: String,
}

/// Who a call is for.
#[derive(Debug, Clone)]
pub enum Caller {
    Mission(ForMission),
    /// A call with no mission (`POST /v1/chat/completions`, chat), by this actor, held to
    /// its API key's budgets and model allow-list.
    Api {
        by: String,
        key: Option<budget::KeyBudget>,
        /// What usage groups it under in place of a mission's kind: [`API_USAGE_KIND`], or
        /// [`chat_usage_kind`] of the agent chatted with. Never an agent kind's own name, so
        /// that a kind's budget counts only its missions.
        usage_kind: String,
    },
}

/// The usage kind of a call made through `POST /v1/chat/completions`.
pub const API_USAGE_KIND: &str = "api";

/// The usage kind of a chat with agent kind `agent`: `chat:coder`.
pub fn chat_usage_kind(agent: &str) -> String {
    format!("chat:{agent}")
}

/// What to ask.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// A configured route's name; the default route when `None`.
    pub route: Option<String>,
    /// With no `route`: a configured route's name, `default`, or a model to run the default
    /// route's targets with (an OpenAI client naming a model).
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran, or was refused before it was sent (a budget, the gateway switched off),
    /// and was recorded.
    #[error("{}", .0.error)]
    Llm(Failed),
    /// No such route: nothing was sent.
    #[error("{0}")]
    Route(String),
    /// The configuration cannot be read now (the store is unavailable): nothing was sent.
    #[error("{0}")]
    Config(String),
    /// The answer came but cannot be recorded (for a mission: its lease is gone).
    #[error("cannot record the LLM call: {0}")]
    Record(String),
    /// The calling key may not call this model or route: nothing was sent.
    #[error("{0}")]
    NotAllowed(String),
}

/// Makes calls for missions and API clients. Cheap to clone.
#[derive(Clone)]
pub struct Calls {
    pub gateway: Gateway,
    /// The configuration is read from it at every call, and calls are recorded in it;
    /// without it, the start-up settings' route, unrecorded and unbudgeted.
    pub store: Option<EventStore>,
    pub record: RecordMode,
    /// The start-up settings: the route until one is configured in the log.
    pub settings: LlmSettings,
}

/// `value` as a record keeps it: whole, or its first bytes and its size.
pub fn bounded(value: Value) -> Value {
    domain::mission::cut(&value, RECORD_BYTES_MAX)
}

/// A call's request as its record keeps it: redacted, then bounded.
pub fn recorded_request(redactor: &crate::secrets::Redactor, messages: &[Message]) -> Value {
    bounded(redactor.redacted_json(json!(messages)))
}

impl Calls {
    pub fn new(settings: &LlmSettings, gateway: Gateway, store: Option<EventStore>) -> Calls {
        Calls { gateway, store, record: settings.record, settings: settings.clone() }
    }

    /// One call for `caller`, recorded once it ends (answered or failed).
    pub async fn chat(
        &self,
        caller: &Caller,
        ask: &Ask,
        sink: Option<TokenSink<'_>>,
    ) -> Result<Answered, CallError> {
        self.chat_told(caller, ask, sink, None).await
    }

    /// [`Calls::chat`], telling `let_through` when the call is let through: a failure before
    /// that is a refusal (no route, a budget, the shared limits), and nothing was sent.
    pub async fn chat_told(
        &self,
        caller: &Caller,
        ask: &Ask,
        sink: Option<TokenSink<'_>>,
        let_through: Option<LetThrough<'_>>,
    ) -> Result<Answered, CallError> {
        let resolved = match &self.store {
            None => Resolved::fallback(&self.settings),
            Some(store) => {
                crate::llm::config::current(store, &self.settings).await.map_err(|error| {
                    CallError::Config(format!("cannot read the LLM configuration: {error}"))
                })?
            }
        };
        let (route_name, model) = match (&ask.route, &ask.model) {
            (Some(route), model) => (route.clone(), model.clone()),
            (None, Some(model)) if model == "default" || model.is_empty() => {
                ("default".into(), None)
            }
            (None, Some(model)) if resolved.routes.contains_key(model) => (model.clone(), None),
            (None, model) => ("default".into(), model.clone()),
        };
        if let Caller::Api { key: Some(key), .. } = caller {
            // What the client named: a route, a model (run on the default route), or nothing.
            let allowed = &key.limits.models;
            let asked = ask.route.as_ref().or(ask.model.as_ref()).map_or("default", String::as_str);
            let asked = if asked.is_empty() { "default" } else { asked };
            if !allowed.is_empty() && !allowed.iter().any(|name| name == asked) {
                return Err(CallError::NotAllowed(format!(
                    "the key {} may call {} only, not {asked:?}",
                    key.key_id,
                    allowed.join(", ")
                )));
            }
        }
        let mut route = match resolved.route(Some(&route_name)) {
            Ok(route) => route.clone(),
            Err(reason) if resolved.route.is_none() => {
                let error = LlmError::new(Reason::ProviderUnreachable, reason);
                let refused = Err(Failed { error, tries: vec![] });
                return self.finish(caller, ask, &route_name, None, refused, 0).await;
            }
            Err(reason) => return Err(CallError::Route(reason)),
        };
        if let Some(model) = &model {
            for target in &mut route.targets {
                resolved.with_model(target, model);
            }
        }
        if ask.temperature.is_some() {
            route.temperature = ask.temperature;
        }
        if ask.max_tokens.is_some() {
            route.max_tokens = ask.max_tokens;
        }
        let scopes = match (&self.store, caller) {
            (None, _) => vec![],
            (Some(_), Caller::Mission(mission)) => budget::scopes(
                Some((&mission.budget_scope, mission.budget, &mission.kind)),
                None,
                &resolved.daily_budgets,
                OffsetDateTime::now_utc(),
            ),
            (Some(_), Caller::Api { key, .. }) => budget::scopes(
                None,
                key.as_ref(),
                &resolved.daily_budgets,
                OffsetDateTime::now_utc(),
            ),
        };
        let started = Instant::now();
        let call = Call {
            route: &route,
            messages: &ask.messages,
            tools: &ask.tools,
            budgets: &scopes,
            let_through,
        };
        let outcome = self.gateway.call(call, sink).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        self.finish(caller, ask, &route_name, Some(&route), outcome, latency_ms).await
    }

    async fn finish(
        &self,
        caller: &Caller,
        ask: &Ask,
        route_name: &str,
        route: Option<&Route>,
        outcome: Result<Answered, Failed>,
        latency_ms: u64,
    ) -> Result<Answered, CallError> {
        let redactor = &self.gateway.redactor;
        let outcome = match outcome {
            Ok(mut answered) => {
                redact_answer(redactor, &mut answered.answer);
                Ok(answered)
            }
            Err(mut failed) => {
                failed.error = failed.error.redacted(redactor);
                Err(failed)
            }
        };
        let Some(store) = &self.store else {
            return outcome.map_err(CallError::Llm);
        };
        let tries = match &outcome {
            Ok(answered) => &answered.tries,
            Err(failed) => &failed.tries,
        };
        // The target that answered or was tried last; for a call refused before any try (a
        // budget), the one it would have tried first.
        let (provider, model) = match (tries.last(), route.and_then(|route| route.targets.first()))
        {
            (Some(last), _) => (last.provider.as_str().to_owned(), last.model.clone()),
            (None, Some(first)) => (first.provider.as_str().to_owned(), first.model.clone()),
            (None, None) => (String::new(), String::new()),
        };
        let full = self.record == RecordMode::Full;
        let (usage, cost_usd, outcome_name, response) = match &outcome {
            Ok(answered) => (
                answered.answer.usage,
                answered.cost_usd,
                "ok".to_owned(),
                json!({ "content": answered.answer.content, "tool_calls": answered.answer.tool_calls,
                        "finish_reason": answered.answer.finish_reason, "model": answered.answer.model }),
            ),
            Err(failed) => {
                let error = &failed.error;
                let response = json!({ "error": { "reason": error.reason, "message": error.message,
                                                  "detail": error.detail } });
                (Default::default(), 0.0, error.reason.as_str().to_owned(), response)
            }
        };
        metrics::counter!("brain_llm_cost_microusd_total", "provider" => provider.clone(), "model" => model.clone())
            .increment((cost_usd * 1_000_000.0).round() as u64);
        let call = LlmCall {
            route: route_name.to_owned(),
            kind: match caller {
                Caller::Mission(mission) => mission.kind.clone(),
                Caller::Api { usage_kind, .. } => usage_kind.clone(),
            },
            provider,
            model,
            tries: tries.len() as u32,
            request: if full { recorded_request(redactor, &ask.messages) } else { Value::Null },
            response: if full { bounded(response) } else { Value::Null },
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd,
            latency_ms,
            outcome: outcome_name,
            replayed: false,
            usage_estimate: usage.estimate,
        };
        match (record(store, caller, call).await, caller) {
            (Ok(()), _) => {}
            // An API client's answer was paid for and settled: it gets it even when the record
            // cannot be written, rather than retry and pay again. The gap shows in the metric.
            (Err(error), Caller::Api { .. }) if outcome.is_ok() => {
                metrics::counter!("brain_llm_unrecorded_calls_total").increment(1);
                tracing::error!(%error, "an answered LLM call could not be recorded");
            }
            // A mission's attempt is fenced by its record: without it the answer does not count.
            (Err(error), _) => return Err(error),
        }
        outcome.map_err(CallError::Llm)
    }
}

/// Takes the process's secrets out of what the model answered.
fn redact_answer(redactor: &crate::secrets::Redactor, answer: &mut crate::llm::ChatAnswer) {
    redactor.redact_string(&mut answer.content);
    for call in &mut answer.tool_calls {
        redactor.redact_json(&mut call.arguments);
    }
}

/// Records `make`'s report (an LLM or tool call) in the mission's history, fenced by the
/// caller's attempt like every report of the lease holder.
pub async fn record_for_mission(
    store: &EventStore,
    mission: &ForMission,
    make: impl Fn(i64) -> MissionCommand,
) -> Result<(), CallError> {
    let Ok(mission_id) = StreamId::parse(&mission.mission_id) else { return Ok(()) };
    let mut metadata =
        EventMetadata::new(format!("worker:{}", mission.worker_id), OffsetDateTime::now_utc());
    metadata.command_id = Some(uuid::Uuid::now_v7());
    if let Ok(id) = uuid::Uuid::parse_str(&mission.mission_id) {
        metadata.correlation_id = id;
    }
    let now_ms = crate::clock::now_ms();
    command::execute::<Mission>(store, &mission_id, metadata, || make(now_ms))
        .await
        .map(|_| ())
        // Either the lease is gone (this attempt's answer will not count either), or the
        // record could not be written (an unrecorded step breaks the audit trail): the
        // attempt fails, and runs again.
        .map_err(|error: CommandError<_>| CallError::Record(error.to_string()))
}

async fn record(store: &EventStore, caller: &Caller, call: LlmCall) -> Result<(), CallError> {
    match caller {
        Caller::Mission(mission) => {
            record_for_mission(store, mission, |now_ms| MissionCommand::RecordLlmCall {
                worker_id: mission.worker_id.clone(),
                attempt: mission.attempt,
                call: call.clone(),
                now_ms,
            })
            .await
        }
        Caller::Api { by, .. } => {
            let mut metadata = EventMetadata::new(by.clone(), OffsetDateTime::now_utc());
            metadata.command_id = Some(uuid::Uuid::now_v7());
            let event =
                LlmCallEvent::LlmCalled { call, by: by.clone(), at_ms: crate::clock::now_ms() };
            let append = Append {
                stream_type: domain::llm_call::stream_type(),
                stream_id: StreamId::from(uuid::Uuid::now_v7()),
                expected: ExpectedVersion::Exact(0),
                events: vec![command::new_event(&event)],
                metadata,
            };
            store
                .append(append)
                .await
                .map(|_| ())
                .map_err(|error| CallError::Record(error.to_string()))
        }
    }
}
