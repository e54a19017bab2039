//! The loop the thinking built-in agents share: ask the model through the gateway (with the
//! agent's tools offered), run the tool calls it asks for, feed their results back, until it
//! answers without asking for a tool. It is bounded by [`Loop::steps_max`] model calls, by
//! [`TOOL_CALLS_PER_STEP_MAX`] tool calls per answer, and by the mission's budget (each call
//! goes through [`Calls`]) and timeout (the worker's).
//!
//! Every step is in the mission's history, in order: each model call as `MissionLlmCalled`
//! (through the gateway's record) and each tool call, run or refused, as `MissionToolCalled`
//! (tool, arguments, result or error, duration), so the history reads as the agent's reasoning.

use std::time::Instant;

use domain::mission::{MissionCommand, ToolCallRecord};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::agents::plain::{failure, task_text};
use crate::agents::tools::{Registry, ToolError};
use crate::llm::calls::{Ask, Caller, Calls, ForMission, record_for_mission};
use crate::llm::{Message, Role, Usage};
use crate::missions::agent::{Agent, Failure, Task};

/// Most tool calls one answer of the model may ask for; the rest are refused.
pub const TOOL_CALLS_PER_STEP_MAX: usize = 16;
/// Model calls of one attempt when the agent sets none.
pub const STEPS_MAX_DEFAULT: u32 = 12;

/// One thinking agent: its prompt, its tools, its bounds.
pub struct Loop {
    pub calls: Calls,
    pub system_prompt: String,
    pub tools: Registry,
    pub steps_max: u32,
    /// Where the model's text streams as it is generated.
    pub tokens: Option<(async_nats::Client, crate::config::Namespace)>,
}

impl Agent for Loop {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Value, Failure>> {
        let (calls, tools, tokens) = (self.calls.clone(), self.tools.clone(), self.tokens.clone());
        let (system, steps_max) = (self.system_prompt.clone(), self.steps_max);
        async move {
            let mission = ForMission {
                mission_id: task.mission_id.clone(),
                kind: task.agent.clone(),
                attempt: task.attempt,
                worker_id: task.worker_id.clone(),
                budget: task.budget,
            };
            let caller = Caller::Mission(mission.clone());
            let mut ask = Ask {
                route: task.payload.get("route").and_then(Value::as_str).map(str::to_owned),
                messages: vec![Message::new(Role::System, system), Message::new(Role::User, task_text(&task))],
                tools: tools.specs(),
                ..Ask::default()
            };
            let mut publisher = tokens.map(|(nats, namespace)| {
                let subject = crate::llm::tokens::subject(&namespace, &task.mission_id);
                crate::llm::tokens::Publisher::start(nats, subject, &task.mission_id, task.attempt)
            });
            let (mut usage, mut cost_usd, mut tool_calls) = (Usage::default(), 0.0, 0u32);
            for step in 1..=steps_max {
                let answered = match publisher.as_mut() {
                    None => calls.chat(&caller, &ask, None).await,
                    Some(publisher) => {
                        let mut sink = |piece: &str| publisher.piece(piece);
                        calls.chat(&caller, &ask, Some(&mut sink)).await
                    }
                };
                let answered = answered.map_err(failure)?;
                usage.input_tokens += answered.answer.usage.input_tokens;
                usage.output_tokens += answered.answer.usage.output_tokens;
                cost_usd += answered.cost_usd;
                let asked = answered.answer.tool_calls.clone();
                if asked.is_empty() {
                    if let Some(publisher) = publisher {
                        publisher.finish().await;
                    }
                    return Ok(json!({
                        "answer": answered.answer.content,
                        "provider": answered.provider.as_str(),
                        "model": answered.answer.model,
                        "steps": step,
                        "tool_calls": tool_calls,
                        "usage": usage,
                        "cost_usd": cost_usd,
                    }));
                }
                ask.messages.push(Message {
                    role: Role::Assistant,
                    content: answered.answer.content.clone(),
                    tool_calls: asked.clone(),
                    tool_call_id: None,
                });
                for (n, call) in asked.iter().enumerate() {
                    let started = Instant::now();
                    let outcome = if n < TOOL_CALLS_PER_STEP_MAX {
                        tools.call(&call.name, &call.arguments).await
                    } else {
                        Err(ToolError::Refused(format!(
                            "at most {TOOL_CALLS_PER_STEP_MAX} tool calls per answer"
                        )))
                    };
                    tool_calls += 1;
                    let record = ToolCallRecord {
                        step,
                        call_id: call.id.clone(),
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                        result: outcome.as_ref().cloned().unwrap_or(Value::Null),
                        error: outcome.as_ref().err().map(ToString::to_string),
                        refused: matches!(outcome, Err(ToolError::Refused(_))),
                        duration_ms: started.elapsed().as_millis() as u64,
                        replayed: false,
                    };
                    if let Some(store) = &calls.store {
                        record_for_mission(store, &mission, |now_ms| MissionCommand::RecordToolCall {
                            worker_id: mission.worker_id.clone(),
                            attempt: mission.attempt,
                            call: record.clone(),
                            now_ms,
                        })
                        .await
                        .map_err(failure)?;
                    }
                    let content = match &outcome {
                        Ok(result) => result.to_string(),
                        Err(error) => json!({ "error": error.to_string() }).to_string(),
                    };
                    ask.messages.push(Message {
                        role: Role::Tool,
                        content,
                        tool_calls: Vec::new(),
                        tool_call_id: Some(call.id.clone()),
                    });
                }
            }
            if let Some(publisher) = publisher {
                publisher.finish().await;
            }
            Err(Failure::permanent(format!(
                "step limit: {steps_max} model calls without a final answer ({tool_calls} tool calls made)"
            )))
        }
        .boxed()
    }
}
