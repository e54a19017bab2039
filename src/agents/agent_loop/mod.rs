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
//!
//! Where a step's answer comes from (the record, else the model) is `source`; running it
//! (answering, tool calls, spawning children) is `act`; how check mode holds a played-back
//! run against today's code is `check`; what a run keeps between steps is `run`.

mod act;
mod check;
mod run;
mod source;

#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::agents::record::{self, Record};
use crate::agents::tools::Registry;
use crate::agents::tools::delegate::SpawnMissions;
use crate::llm::ToolSpec;
use crate::llm::calls::Calls;
use crate::missions::agent::{Agent, ChildRequest, Failure, Outcome, Task};

use run::Run;

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
    /// The MCP servers of this process: a run is offered the tools of those configured for
    /// its mission's agent kind, as they are when it starts.
    pub mcp: Option<crate::agents::tools::mcp::McpHub>,
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
#[derive(Debug, PartialEq)]
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

impl Agent for Loop {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let this = self.equipped(&task);
        async move {
            let record = this.starting_record(&task).await?;
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

impl Loop {
    /// Plays `record` back against today's prompt and tools without calling anything.
    pub async fn check(&self, task: &Task, record: &Record) -> Result<Ended, Failure> {
        self.equipped(task).drive(task, record, Mode::Check).await
    }

    /// This agent with the MCP tools `task`'s agent kind is offered now.
    fn equipped(&self, task: &Task) -> Loop {
        let mut this = self.clone();
        if let Some(hub) = &self.mcp {
            this.tools = this.tools.with_all(hub.tools_for(&task.agent));
        }
        this
    }

    /// What an attempt starts from: its steps so far when it has some to play back (read
    /// from the mission's history), else nothing but the mission's fan-out so far.
    async fn starting_record(&self, task: &Task) -> Result<Record, Failure> {
        match &self.calls.store {
            Some(store) if task.playback => {
                record::for_attempt(store, &task.mission_id, task.attempt)
                    .await
                    .map_err(Failure::retryable)
            }
            _ => Ok(Record {
                children_spawned: task.children_spawned,
                depth: task.depth,
                ..Record::default()
            }),
        }
    }

    /// The tools offered to the model.
    fn offered(&self) -> Vec<ToolSpec> {
        let mut specs = self.tools.specs();
        specs.extend(self.spawn.as_ref().map(SpawnMissions::spec));
        specs
    }

    /// Takes steps until one ends the run: each step's answer from `source`, run by `act`.
    async fn drive(&self, task: &Task, record: &Record, mode: Mode) -> Result<Ended, Failure> {
        let mut run = Run::start(self, task, record, mode);
        for step in 1..=self.steps_max {
            let answer = match source::next(&mut run, step).await? {
                ControlFlow::Continue(answer) => answer,
                ControlFlow::Break(ended) => return Ok(ended),
            };
            if let ControlFlow::Break(ended) = act::step(&mut run, step, answer).await? {
                return Ok(ended);
            }
        }
        run.finish_tokens().await;
        Err(Failure::permanent(format!(
            "step limit: {} model calls without a final answer ({} tool calls made)",
            self.steps_max, run.tally.tool_calls
        )))
    }
}
