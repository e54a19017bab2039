//! Running a step, whatever its answer came from: an answer without tool calls ends the run
//! with the result; otherwise each tool call is played back from the record, refused, run,
//! or (`spawn_missions`) ends the attempt to wait for the children it asks for, and each
//! outcome goes back to the model as the tool's message, redacted of the process's secrets
//! as it is recorded.

use std::ops::ControlFlow;
use std::time::Instant;

use domain::mission::{ChildOutcome, ToolCallRecord};
use serde_json::{Value, json};

use super::run::{Run, Step, Tally};
use super::{Ended, Mode, TOOL_CALLS_MAX, TOOL_CALLS_PER_STEP_MAX, check};
use crate::agents::record::{Record, Wait};
use crate::agents::tools::delegate::{self, SpawnMissions};
use crate::agents::tools::{RESULT_BYTES_MAX, ToolError};
use crate::llm::calls::{RECORD_BYTES_MAX, RecordMode};
use crate::llm::{ChatAnswer, Message, Role, ToolCall};
use crate::missions::agent::{ChildRequest, Failure};

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

/// Runs step `step`'s `answer`: ends the run, or feeds the tool calls' outcomes back.
pub(super) async fn step(
    run: &mut Run<'_>,
    step: u32,
    answer: ChatAnswer,
) -> Result<ControlFlow<Ended>, Failure> {
    run.tally.model.clone_from(&answer.model);
    if answer.tool_calls.is_empty() {
        run.finish_tokens().await;
        let duration_ms = run.began.elapsed().as_millis() as u64;
        let children = run.record.child_outcomes();
        let result = result(&run.tally, step, answer.content, duration_ms, &children);
        return Ok(ControlFlow::Break(Ended::Answered(result)));
    }
    run.ask.messages.push(Message {
        role: Role::Assistant,
        content: answer.content.clone(),
        tool_calls: answer.tool_calls.clone(),
        tool_call_id: None,
    });
    for (n, call) in answer.tool_calls.iter().enumerate() {
        run.tally.tool_calls += 1;
        if run.tally.tool_calls > TOOL_CALLS_MAX {
            return Err(Failure::permanent(format!(
                "tool-call limit: more than {TOOL_CALLS_MAX} tool calls in one attempt"
            )));
        }
        let record = run.record;
        let called = match record.tools.get(&(step, call.id.clone())) {
            Some(recorded) => play_back(run, step, n, call, recorded).await?,
            None => call_now(run, step, n, call, &answer).await?,
        };
        let outcome = match called {
            ControlFlow::Continue(outcome) => outcome,
            ControlFlow::Break(ended) => return Ok(ControlFlow::Break(ended)),
        };
        run.ask.messages.push(Message {
            role: Role::Tool,
            content: outcome.content(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call.id.clone()),
        });
    }
    Ok(ControlFlow::Continue(()))
}

/// The run's result when the model answers without a tool call.
fn result(
    tally: &Tally,
    step: u32,
    answer: String,
    duration_ms: u64,
    children: &[&ChildOutcome],
) -> Value {
    let mut result = json!({
        "answer": answer,
        "provider": tally.provider,
        "model": tally.model,
        "steps": step,
        "tool_calls": tally.tool_calls,
        "usage": tally.usage,
        "cost_usd": tally.cost_usd,
        "duration_ms": duration_ms,
    });
    if !children.is_empty() {
        result["children"] = summary(children);
    }
    result
}

/// A recorded tool call's outcome given again (checked first in check mode). One copied from
/// another run is recorded in this mission's history, marked replayed, the first time.
async fn play_back(
    run: &mut Run<'_>,
    step: u32,
    n: usize,
    call: &ToolCall,
    recorded: &ToolCallRecord,
) -> Result<ControlFlow<Ended, ToolOutcome>, Failure> {
    if run.mode == Mode::Check
        && let Some(divergence) =
            check::tool(step, call, recorded, || run.agent.refusal_now(n, call))
    {
        return Ok(ControlFlow::Break(Ended::Diverged(divergence)));
    }
    let record = run.record;
    if record.copied && !record.here.contains(&(step, Some(call.id.clone()))) {
        let call = ToolCallRecord { replayed: true, ..recorded.clone() };
        run.record_step(Step::Tool(call)).await?;
    }
    Ok(ControlFlow::Continue(ToolOutcome::of(recorded)))
}

/// A tool call the record does not hold: refused past the per-answer limit, answered with
/// what the children did when the record shows it waited for them, spawning them when it
/// asks for sub-missions, else run; recorded in the mission's history.
async fn call_now(
    run: &mut Run<'_>,
    step: u32,
    n: usize,
    call: &ToolCall,
    answer: &ChatAnswer,
) -> Result<ControlFlow<Ended, ToolOutcome>, Failure> {
    let started = Instant::now();
    let (agent, record) = (run.agent, run.record);
    let ran = match (&agent.spawn, record.waits.get(&(step, call.id.clone()))) {
        _ if n >= TOOL_CALLS_PER_STEP_MAX => Err(past_answer_limit()),
        (Some(_), Some(wait)) if call.name == delegate::NAME => match waited(run.mode, wait)? {
            ControlFlow::Continue(children) => Ok(children),
            ControlFlow::Break(ended) => return Ok(ControlFlow::Break(ended)),
        },
        _ if run.mode == Mode::Check => {
            return Ok(ControlFlow::Break(Ended::Diverged(check::unrecorded_tool(step, call))));
        }
        (Some(spawn), None) if call.name == delegate::NAME => {
            match spawned(spawn, agent.calls.record, answer, call, record) {
                Ok(children) => {
                    run.finish_tokens().await;
                    let call_id = call.id.clone();
                    return Ok(ControlFlow::Break(Ended::Wait { step, call_id, children }));
                }
                Err(refused) => Err(refused),
            }
        }
        _ => agent.tools.call(&call.name, &call.arguments).await,
    };
    let recorded = ToolCallRecord {
        step,
        call_id: call.id.clone(),
        tool: agent.tools.shown(&call.name),
        arguments: call.arguments.clone(),
        result: ran.as_ref().cloned().unwrap_or(Value::Null),
        error: ran.as_ref().err().map(ToString::to_string),
        refused: matches!(ran, Err(ToolError::Refused(_))),
        duration_ms: started.elapsed().as_millis() as u64,
        replayed: false,
    };
    // What the model and the record are given holds none of the process's secrets.
    let recorded = redacted(&agent.calls.gateway.redactor, recorded);
    run.record_step(Step::Tool(recorded.clone())).await?;
    Ok(ControlFlow::Continue(ToolOutcome::of(&recorded)))
}

/// A tool call's record without the secrets its arguments, result or error held.
fn redacted(redactor: &crate::secrets::Redactor, mut record: ToolCallRecord) -> ToolCallRecord {
    redactor.redact_json(&mut record.arguments);
    redactor.redact_json(&mut record.result);
    if let Some(error) = &mut record.error {
        redactor.redact_string(error);
    }
    record
}

/// Why a call past [`TOOL_CALLS_PER_STEP_MAX`] in one answer is refused.
pub(super) fn past_answer_limit() -> ToolError {
    ToolError::Refused(format!("at most {TOOL_CALLS_PER_STEP_MAX} tool calls per answer"))
}

/// The `spawn_missions` call's result once the children it waited for have all ended.
fn waited(mode: Mode, wait: &Wait) -> Result<ControlFlow<Ended, Value>, Failure> {
    match (wait.finished(), mode) {
        (Some(outcomes), _) => Ok(ControlFlow::Continue(json!({ "children": summary(&outcomes) }))),
        (None, Mode::Live) => Err(Failure::retryable("resumed before all its children ended")),
        (None, Mode::Check) => Ok(ControlFlow::Break(check::ended_waiting())),
    }
}

/// The children a `spawn_missions` call asks for, or why they are refused.
fn spawned(
    spawn: &SpawnMissions,
    record_mode: RecordMode,
    answer: &ChatAnswer,
    call: &ToolCall,
    record: &Record,
) -> Result<Vec<ChildRequest>, ToolError> {
    resumable(record_mode, answer)?;
    spawn.requests(&call.arguments, record.children_spawned, record.depth)
}

/// Whether a run that waits after `answer` can go on when resumed: only if that answer
/// (and every one before, checked when the record is read) is in the record whole.
fn resumable(record_mode: RecordMode, answer: &ChatAnswer) -> Result<(), ToolError> {
    if record_mode == RecordMode::Usage {
        return Err(ToolError::Refused(
            "sub-missions need the model's answers recorded whole (BRAIN_LLM_RECORD=full)".into(),
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
