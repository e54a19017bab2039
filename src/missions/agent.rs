//! The contract between a worker and whatever runs a mission: a worker holds an [`Agents`]
//! map from agent kind to an [`Agent`] and calls it without knowing what it is. The
//! implementations live in `crate::agents`; `serve` and `brain worker` fill the map.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

/// What an agent is given.
#[derive(Debug, Clone)]
pub struct Task {
    pub mission_id: String,
    pub name: String,
    pub description: String,
    pub agent: String,
    pub payload: serde_json::Value,
    /// 1 for the first try.
    pub attempt: u32,
    /// The lease holder: with `attempt`, what an agent's own reports on the mission (its LLM
    /// calls) are fenced by.
    pub worker_id: String,
    /// What the mission's LLM calls may spend.
    pub budget: Option<domain::budget::Budget>,
    /// Whose budget that is: the mission's own, or for a sub-mission its tree's root's (the
    /// tree shares one).
    pub budget_scope: String,
    /// Whether the attempt has steps to play back (it was suspended or handed back, or the
    /// mission is a fork); a fresh one starts from nothing, without reading its history.
    pub playback: bool,
    /// Children the mission spawned so far, and how deep it nests: the limits of a fan-out.
    pub children_spawned: usize,
    pub depth: u32,
}

#[cfg(test)]
impl Task {
    /// An echo task for unit tests: attempt `attempt` of mission `m` with `payload`.
    pub fn example(payload: serde_json::Value, attempt: u32) -> Task {
        Task {
            mission_id: "m".into(),
            name: "n".into(),
            description: String::new(),
            worker_id: "w".into(),
            budget: None,
            budget_scope: "m1".into(),
            playback: false,
            children_spawned: 0,
            depth: 0,
            agent: "echo".into(),
            payload,
            attempt,
        }
    }
}

/// Why an attempt failed; `retryable` decides whether another attempt is scheduled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
    /// The agent itself is broken, not just this attempt (its process exited, it lost its
    /// model): whoever hosts it restarts it.
    pub down: bool,
}

impl Failure {
    /// Another attempt may succeed.
    pub fn retryable(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), retryable: true, down: false }
    }

    /// No attempt will succeed: the mission fails for good.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), retryable: false, down: false }
    }

    /// The agent died under this attempt; the attempt may run again once it is back.
    pub fn down(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), retryable: true, down: true }
    }
}

/// A sub-mission an agent asks for: the parent's spec fills in the rest (see
/// [`crate::missions::tree::child_spec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildRequest {
    pub agent: String,
    pub name: String,
    /// What the child is to do: its description, and its payload's `prompt`.
    pub task: String,
}

/// How an attempt that did not fail ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished, with this result.
    Done(serde_json::Value),
    /// Spawned children at the tool call `call_id` of step `step`, and waits for them: the
    /// worker enqueues them and suspends the mission in one atomic group, and the attempt
    /// goes on, on any worker, once the last of them has ended.
    Wait { step: u32, call_id: String, children: Vec<ChildRequest> },
}

impl From<serde_json::Value> for Outcome {
    fn from(result: serde_json::Value) -> Outcome {
        Outcome::Done(result)
    }
}

pub trait Agent: Send + Sync + 'static {
    /// Runs one attempt. The worker enforces the mission's timeout by dropping the future,
    /// so an agent needs no clock of its own.
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>>;

    /// Whether it takes missions now: a stopped agent, or one waiting to be restarted, does
    /// not. Asked before every claim, so it must be cheap.
    fn available(&self) -> bool {
        true
    }
}

/// Agent kinds a worker serves and what runs each.
#[derive(Clone, Default)]
pub struct Agents(BTreeMap<String, Arc<dyn Agent>>);

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Agents {
    /// Serves `kind` with `agent`, replacing what served it before.
    pub fn insert(&mut self, kind: String, agent: Arc<dyn Agent>) {
        self.0.insert(kind, agent);
    }

    pub fn kinds(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// The kinds whose agent takes missions now.
    pub fn available_kinds(&self) -> Vec<String> {
        self.0.iter().filter(|(_, agent)| agent.available()).map(|(kind, _)| kind.clone()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn Agent>)> {
        self.0.iter()
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Agent>> {
        self.0.get(kind)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
