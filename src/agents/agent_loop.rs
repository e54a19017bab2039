//! The loop the thinking built-in agents share: ask the model through the gateway (with the
//! agent's tools offered), run the tool calls it asks for, feed their results back, until it
//! answers without asking for a tool. It is bounded by [`Loop::steps_max`] model calls, by
//! [`TOOL_CALLS_PER_STEP_MAX`] tool calls per answer and [`TOOL_CALLS_MAX`] per attempt, and by
//! the mission's budget (each call goes through [`Calls`]) and timeout (the worker's).
//!
//! Every step is in the mission's history, in order: each model call as `MissionLlmCalled`
//! (through the gateway's record) and each tool call, run or refused, as `MissionToolCalled`
//! (tool, arguments, result or error, duration), so the history reads as the agent's reasoning.
//!
//! The loop starts from a [`Record`]: the steps its attempt already took. A recorded step is
//! played back, not asked or run again: that is how a mission suspended for its children goes
//! on where it stopped (the `spawn_missions` call's result is then what the children did),
//! how a fork starts from another run's steps, and, in [`Mode::Check`], how a replay checks
//! today's prompts and tools against a past run without calling anything.

use std::time::Instant;

use domain::mission::{ChildOutcome, LlmCall, MissionCommand, ToolCallRecord};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};

use crate::agents::plain::{failure, for_mission, task_text};
use crate::agents::record::{self, Record};
use crate::agents::tools::delegate::{self, SpawnMissions};
use crate::agents::tools::{RESULT_BYTES_MAX, Registry, ToolError};
use crate::llm::calls::{
    Ask, Caller, Calls, RECORD_BYTES_MAX, RecordMode, bounded, record_for_mission,
};
use crate::llm::{ChatAnswer, Message, Role, ToolCall, ToolSpec, Usage};
use crate::missions::agent::{Agent, ChildRequest, Failure, Outcome, Task};

/// Most tool calls one answer of the model may ask for; the rest are refused.
pub const TOOL_CALLS_PER_STEP_MAX: usize = 16;
/// Most tool calls of one attempt: past it, the attempt fails.
pub const TOOL_CALLS_MAX: u32 = 100;
/// Model calls of one attempt when the agent sets none.
pub const STEPS_MAX_DEFAULT: u32 = 12;

/// One thinking agent: its prompt, its tools, its bounds.
#[derive(Clone)]
pub struct Loop {
    pub calls: Calls,
    pub system_prompt: String,
    pub tools: Registry,
    /// Offered to the supervisor: split the mission into sub-missions and wait for them.
    pub spawn: Option<SpawnMissions>,
    pub steps_max: u32,
    /// Where the model's text streams as it is generated.
    pub tokens: Option<(async_nats::Client, crate::config::Namespace)>,
}

/// Whether the loop runs for real or checks itself against a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plays the record back, then asks the model and runs tools, recording each step.
    Live,
    /// Plays the whole record back, calls nothing, records nothing, and stops at the first
    /// step where the code decides otherwise than the record says it did.
    Check,
}

/// How a run of the loop ended.
#[derive(Debug)]
pub enum Ended {
    /// The model answered without asking for a tool.
    Answered(Value),
    /// The model asked for sub-missions: the attempt waits for them.
    Wait { step: u32, call_id: String, children: Vec<ChildRequest> },
    /// ([`Mode::Check`] only) the code now differs from the record here.
    Diverged(Divergence),
}

/// The first step where the code now decides otherwise than the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub step: u32,
    /// What differs: the request sent to the model, a tool call, the end of the run.
    pub what: String,
    pub recorded: Value,
    pub now: Value,
}

/// A step the loop records in the mission's history.
enum Step {
    Llm(LlmCall),
    Tool(ToolCallRecord),
}

/// A tool call's outcome as the model is told it.
struct ToolOutcome {
    result: Value,
    error: Option<String>,
}

impl ToolOutcome {
    fn of(record: &ToolCallRecord) -> ToolOutcome {
        ToolOutcome { result: record.result.clone(), error: record.error.clone() }
    }

    fn content(&self) -> String {
        match &self.error {
            Some(error) => json!({ "error": error }).to_string(),
            None => self.result.to_string(),
        }
    }
}

impl Agent for Loop {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let this = self.clone();
        async move {
            let fresh = Record {
                children_spawned: task.children_spawned,
                depth: task.depth,
                ..Record::default()
            };
            let record = match &this.calls.store {
                Some(store) if task.playback => {
                    record::for_attempt(store, &task.mission_id, task.attempt)
                        .await
                        .map_err(Failure::retryable)?
                }
                _ => fresh,
            };
            match this.drive(&task, &record, Mode::Live).await? {
                Ended::Answered(result) => Ok(Outcome::Done(result)),
                Ended::Wait { step, call_id, children } => {
                    Ok(Outcome::Wait { step, call_id, children })
                }
                Ended::Diverged(divergence) => Err(Failure::permanent(format!(
                    "the run diverged from its record at step {}: {}",
                    divergence.step, divergence.what
                ))),
            }
        }
        .boxed()
    }
}

/// What children did, as the model and the result are told it: each child's result cut to an
/// equal share of [`RESULT_BYTES_MAX`] (at least 1 KiB), so that a hundred of them fit.
fn summary(outcomes: &[&ChildOutcome]) -> Value {
    let share = (RESULT_BYTES_MAX / outcomes.len().max(1)).max(1024);
    let cut: Vec<ChildOutcome> = outcomes
        .iter()
        .map(|outcome| ChildOutcome {
            result: outcome.result.as_ref().map(|result| domain::mission::cut(result, share)),
            ..(*outcome).clone()
        })
        .collect();
    json!(cut)
}

/// Where two requests first differ, message by message.
fn request_divergence(step: u32, recorded: &Value, now: &Value) -> Divergence {
    let (old, new) = (recorded.as_array(), now.as_array());
    if let (Some(old), Some(new)) = (old, new) {
        let at = (0..old.len().max(new.len())).find(|&n| old.get(n) != new.get(n)).unwrap_or(0);
        let role = new.get(at).or(old.get(at)).and_then(|message| message["role"].as_str());
        return Divergence {
            step,
            what: format!("the request to the model, at message {at} ({})", role.unwrap_or("?")),
            recorded: old.get(at).cloned().unwrap_or(Value::Null),
            now: new.get(at).cloned().unwrap_or(Value::Null),
        };
    }
    let what = "the request to the model".to_owned();
    Divergence { step, what, recorded: recorded.clone(), now: now.clone() }
}

impl Loop {
    /// Plays `record` back against today's prompt and tools without calling anything.
    pub async fn check(&self, task: &Task, record: &Record) -> Result<Ended, Failure> {
        self.drive(task, record, Mode::Check).await
    }

    /// Whether a run that waits after `answer` can go on when resumed: only if that answer
    /// (and every one before, checked when the record is read) is in the record whole.
    fn resumable(&self, answer: &ChatAnswer) -> Result<(), ToolError> {
        if self.calls.record == RecordMode::Usage {
            return Err(ToolError::Refused(
                "sub-missions need the model's answers recorded whole (BRAIN_LLM_RECORD=full)"
                    .into(),
            ));
        }
        let recorded = json!({ "content": answer.content, "tool_calls": answer.tool_calls,
            "finish_reason": answer.finish_reason, "model": answer.model });
        let bytes = recorded.to_string().len();
        if bytes > RECORD_BYTES_MAX {
            return Err(ToolError::Refused(format!(
                "the answer asking for sub-missions is {bytes} bytes, more than the {RECORD_BYTES_MAX} a record keeps whole: ask for fewer or shorter tasks"
            )));
        }
        Ok(())
    }

    /// The tools offered to the model.
    fn offered(&self) -> Vec<ToolSpec> {
        let mut specs = self.tools.specs();
        specs.extend(self.spawn.as_ref().map(SpawnMissions::spec));
        specs
    }

    /// Why the code now refuses a call the record shows was run, if it does. (A refusal by
    /// the tool's own rules, a path outside the root, needs the tool to run, so only the
    /// checks made before are compared.)
    fn refusal_now(&self, n: usize, call: &ToolCall) -> Option<ToolError> {
        if n >= TOOL_CALLS_PER_STEP_MAX {
            return Some(ToolError::Refused(format!(
                "at most {TOOL_CALLS_PER_STEP_MAX} tool calls per answer"
            )));
        }
        match &self.spawn {
            Some(spawn) if call.name == delegate::NAME => {
                spawn.requests(&call.arguments, 0, 0).err()
            }
            _ => self.tools.check(&call.name, &call.arguments).err(),
        }
    }

    async fn drive(&self, task: &Task, record: &Record, mode: Mode) -> Result<Ended, Failure> {
        let live = mode == Mode::Live;
        let began = Instant::now();
        let mission = for_mission(task);
        let caller = Caller::Mission(mission.clone());
        let system = Message::new(Role::System, self.system_prompt.clone());
        let mut ask = Ask {
            route: task.payload.get("route").and_then(Value::as_str).map(str::to_owned),
            messages: vec![system, Message::new(Role::User, task_text(task))],
            tools: self.offered(),
            ..Ask::default()
        };
        // A record of the calls made here; a played-back step was recorded already, unless
        // it was copied from another run.
        let store = self.calls.store.as_ref().filter(|_| live);
        let for_mission = &mission;
        let record_step = |step: Step| async move {
            let mission = for_mission;
            let Some(store) = store else { return Ok(()) };
            let (worker_id, attempt) = (mission.worker_id.clone(), mission.attempt);
            record_for_mission(store, mission, |now_ms| match &step {
                Step::Llm(call) => MissionCommand::RecordLlmCall {
                    worker_id: worker_id.clone(),
                    attempt,
                    call: call.clone(),
                    now_ms,
                },
                Step::Tool(call) => MissionCommand::RecordToolCall {
                    worker_id: worker_id.clone(),
                    attempt,
                    call: call.clone(),
                    now_ms,
                },
            })
            .await
            .map_err(failure)
        };
        let mut publisher = self.tokens.clone().filter(|_| live).map(|(nats, namespace)| {
            let subject = crate::llm::tokens::subject(&namespace, &task.mission_id);
            crate::llm::tokens::Publisher::start(nats, subject, &task.mission_id, task.attempt)
        });
        let (mut usage, mut cost_usd, mut tool_calls) = (Usage::default(), 0.0, 0u32);
        let (mut provider, mut model) = (String::new(), String::new());
        for step in 1..=self.steps_max {
            let answer: ChatAnswer = match record.answers.get(step as usize - 1) {
                Some(recorded) => {
                    let answer = match &recorded.answer {
                        Ok(answer) => answer.clone(),
                        Err(why) if live => {
                            return Err(Failure::permanent(format!(
                                "cannot go on from the record at step {step}: {why}"
                            )));
                        }
                        Err(why) => {
                            return Ok(Ended::Diverged(Divergence {
                                step,
                                what: "the record cannot be played back".into(),
                                recorded: json!(why),
                                now: Value::Null,
                            }));
                        }
                    };
                    let now = bounded(json!(ask.messages));
                    if !live && now != recorded.call.request {
                        return Ok(Ended::Diverged(request_divergence(
                            step,
                            &recorded.call.request,
                            &now,
                        )));
                    }
                    if record.copied && !record.here.contains(&(step, None)) {
                        let call = LlmCall { replayed: true, ..recorded.call.clone() };
                        record_step(Step::Llm(call)).await?;
                    }
                    // A copied step was spent in its origin, and counted there.
                    if !record.copied {
                        cost_usd += recorded.call.cost_usd;
                        usage.input_tokens += answer.usage.input_tokens;
                        usage.output_tokens += answer.usage.output_tokens;
                    }
                    provider.clone_from(&recorded.call.provider);
                    answer
                }
                // The recorded attempt ended here without an answer (a timeout, a cancel, a
                // lease lost): the code decided the same up to where it ran.
                None if !live && record.result.is_none() => {
                    return Ok(Ended::Answered(Value::Null));
                }
                None if !live => {
                    return Ok(Ended::Diverged(Divergence {
                        step,
                        what: "a model call the recorded run did not make".into(),
                        recorded: Value::Null,
                        now: ask.messages.last().map(|message| json!(message)).unwrap_or_default(),
                    }));
                }
                None => {
                    let answered = match publisher.as_mut() {
                        None => self.calls.chat(&caller, &ask, None).await,
                        Some(publisher) => {
                            let mut sink = |piece: &str| publisher.piece(piece);
                            self.calls.chat(&caller, &ask, Some(&mut sink)).await
                        }
                    };
                    let answered = answered.map_err(failure)?;
                    cost_usd += answered.cost_usd;
                    usage.input_tokens += answered.answer.usage.input_tokens;
                    usage.output_tokens += answered.answer.usage.output_tokens;
                    provider = answered.provider.as_str().to_owned();
                    answered.answer
                }
            };
            model.clone_from(&answer.model);
            if answer.tool_calls.is_empty() {
                if let Some(publisher) = publisher {
                    publisher.finish().await;
                }
                let mut result = json!({
                    "answer": answer.content,
                    "provider": provider,
                    "model": model,
                    "steps": step,
                    "tool_calls": tool_calls,
                    "usage": usage,
                    "cost_usd": cost_usd,
                    "duration_ms": began.elapsed().as_millis() as u64,
                });
                let children = record.child_outcomes();
                if !children.is_empty() {
                    result["children"] = summary(&children);
                }
                return Ok(Ended::Answered(result));
            }
            ask.messages.push(Message {
                role: Role::Assistant,
                content: answer.content.clone(),
                tool_calls: answer.tool_calls.clone(),
                tool_call_id: None,
            });
            for (n, call) in answer.tool_calls.iter().enumerate() {
                tool_calls += 1;
                if tool_calls > TOOL_CALLS_MAX {
                    return Err(Failure::permanent(format!(
                        "tool-call limit: more than {TOOL_CALLS_MAX} tool calls in one attempt"
                    )));
                }
                let key = (step, call.id.clone());
                let outcome = match record.tools.get(&key) {
                    Some(recorded) => {
                        if !live
                            && !recorded.refused
                            && let Some(refusal) = self.refusal_now(n, call)
                        {
                            return Ok(Ended::Diverged(Divergence {
                                step,
                                what: format!("tool call {} ({})", call.name, call.id),
                                recorded: json!({ "ran": true, "result": recorded.result, "error": recorded.error }),
                                now: json!({ "refused": refusal.to_string() }),
                            }));
                        }
                        if record.copied && !record.here.contains(&(step, Some(call.id.clone()))) {
                            let call = ToolCallRecord { replayed: true, ..recorded.clone() };
                            record_step(Step::Tool(call)).await?;
                        }
                        ToolOutcome::of(recorded)
                    }
                    None => {
                        let started = Instant::now();
                        let ran = match (&self.spawn, record.waits.get(&key)) {
                            _ if n >= TOOL_CALLS_PER_STEP_MAX => {
                                Err(self.refusal_now(n, call).expect("past the per-answer limit"))
                            }
                            (Some(_), Some(wait)) if call.name == delegate::NAME => {
                                match wait.finished() {
                                    Some(outcomes) => Ok(json!({ "children": summary(&outcomes) })),
                                    None if live => {
                                        return Err(Failure::retryable(
                                            "resumed before all its children ended",
                                        ));
                                    }
                                    // The recorded run ended waiting (cancelled while
                                    // suspended): the same decisions up to there.
                                    None => return Ok(Ended::Answered(Value::Null)),
                                }
                            }
                            _ if !live => {
                                return Ok(Ended::Diverged(Divergence {
                                    step,
                                    what: format!(
                                        "tool call {} ({}) the recorded run did not make",
                                        call.name, call.id
                                    ),
                                    recorded: Value::Null,
                                    now: json!(call),
                                }));
                            }
                            (Some(spawn), None) if call.name == delegate::NAME => {
                                let requests = self.resumable(&answer).and_then(|()| {
                                    spawn.requests(
                                        &call.arguments,
                                        record.children_spawned,
                                        record.depth,
                                    )
                                });
                                match requests {
                                    Ok(children) => {
                                        if let Some(publisher) = publisher {
                                            publisher.finish().await;
                                        }
                                        let call_id = call.id.clone();
                                        return Ok(Ended::Wait { step, call_id, children });
                                    }
                                    Err(refused) => Err(refused),
                                }
                            }
                            _ => self.tools.call(&call.name, &call.arguments).await,
                        };
                        let recorded = ToolCallRecord {
                            step,
                            call_id: call.id.clone(),
                            tool: call.name.clone(),
                            arguments: call.arguments.clone(),
                            result: ran.as_ref().cloned().unwrap_or(Value::Null),
                            error: ran.as_ref().err().map(ToString::to_string),
                            refused: matches!(ran, Err(ToolError::Refused(_))),
                            duration_ms: started.elapsed().as_millis() as u64,
                            replayed: false,
                        };
                        record_step(Step::Tool(recorded.clone())).await?;
                        ToolOutcome::of(&recorded)
                    }
                };
                ask.messages.push(Message {
                    role: Role::Tool,
                    content: outcome.content(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call.id.clone()),
                });
            }
        }
        if let Some(publisher) = publisher {
            publisher.finish().await;
        }
        Err(Failure::permanent(format!(
            "step limit: {} model calls without a final answer ({tool_calls} tool calls made)",
            self.steps_max
        )))
    }
}
