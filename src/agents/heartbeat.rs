//! Taking a heartbeat: the ping that says the agent is alive this moment, its recording on the
//! agent's heartbeat stream when it is worth recording (`domain::heartbeat`), and its effect on
//! the agent's life (an unresponsive agent recovers).
//!
//! The decision to record is taken against the agent view, not by loading the heartbeat
//! stream (which grows): a view a moment behind only records one heartbeat too many, which
//! is harmless. Heartbeat streams take appends at any version (`ExpectedVersion::Any`): one
//! agent's heartbeats racing each other need no order beyond the log's.

use std::time::Duration;

use domain::agent::{Agent, AgentCommand, AgentError, AgentState};
use domain::heartbeat::{self, Beat, HeartbeatEvent, InvalidBeat, Recorded};
use domain::{EventMetadata, ExpectedVersion, StreamId};

use crate::agents::view::{AgentRecord, AgentViewStore};
use crate::clock::LeaseClock;
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::{Append, AppendError, EventStore};

/// A heartbeat unchanged since the last recorded one is recorded again after this long; zero:
/// never (only changes are recorded).
pub const RECORD_EVERY_DEFAULT: Duration = Duration::ZERO;

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Invalid(#[from] InvalidBeat),
    #[error(transparent)]
    Agent(#[from] CommandError<AgentError>),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("agent view: {0}")]
    View(#[from] redis::RedisError),
    /// The sender is not the key the agent is bound to.
    #[error("the agent {agent_id} was registered by another key")]
    NotYours { agent_id: String },
}

/// What a heartbeat's sender is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub state: AgentState,
    /// A restart was asked for: the agent should restart and say so.
    pub restart_requested: bool,
    /// Whether this heartbeat went into the log.
    pub recorded: bool,
}

#[derive(Clone)]
pub struct Heartbeats {
    pub store: EventStore,
    pub view: AgentViewStore,
    pub clock: LeaseClock,
    pub record_every: Duration,
}

impl Heartbeats {
    /// Takes one heartbeat of `agent_id`.
    /// `sender`: the key the heartbeat came with, when it may only speak for agents that key
    /// registered (`None`: a process's own agents, or a key that controls every agent).
    pub async fn beat(
        &self,
        agent_id: &StreamId,
        beat: Beat,
        metadata: EventMetadata,
        sender: Option<&str>,
    ) -> Result<Answer, HeartbeatError> {
        let beat = beat.normalised()?;
        let now = self.clock.now_ms_synced().await;
        let known = self.view.get(agent_id.as_str()).await?;
        let (mut state, mut restart_requested, last, bound) = match &known {
            Some(record) => (
                record.state,
                record.restart_requested,
                last_recorded(record),
                record.key_id.clone(),
            ),
            // Not in the view (yet): the log decides whether the agent exists.
            None => {
                let (agent, _) = command::load::<Agent>(&self.store, agent_id).await?;
                let bound = agent.registration.as_ref().and_then(|r| r.key_id.clone());
                (agent.state, agent.restart_requested, None, bound)
            }
        };
        if let Some(sender) = sender
            && state != AgentState::New
            && bound.as_deref() != Some(sender)
        {
            return Err(HeartbeatError::NotYours { agent_id: agent_id.to_string() });
        }
        // An answer that makes the agent act (stop, restart) is confirmed by the log: a view
        // being refilled shows old states for a while.
        if known.is_some()
            && (restart_requested
                || matches!(
                    state,
                    AgentState::Stopped | AgentState::Failed | AgentState::Deregistered
                ))
        {
            let (agent, _) = command::load::<Agent>(&self.store, agent_id).await?;
            (state, restart_requested) = (agent.state, agent.restart_requested);
        }
        match state {
            AgentState::New => return Err(CommandError::Rejected(AgentError::NotFound).into()),
            AgentState::Deregistered => {
                return Err(CommandError::Rejected(AgentError::Deregistered).into());
            }
            AgentState::Unresponsive => {
                let executed =
                    command::execute::<Agent>(&self.store, agent_id, metadata.clone(), || {
                        AgentCommand::Heartbeat { now_ms: now }
                    })
                    .await?;
                state = executed.state.state;
            }
            _ => {}
        }
        let every_ms = self.record_every.as_millis() as i64;
        // A recovery always records the heartbeat that brought it.
        let recorded = known.is_none()
            || known.as_ref().is_some_and(|record| record.state == AgentState::Unresponsive)
            || heartbeat::worth_recording(last.as_ref(), &beat, now, every_ms);
        if recorded {
            let event = HeartbeatEvent::AgentHeartbeat { beat, at_ms: now };
            let append = Append {
                stream_type: heartbeat::stream_type(),
                stream_id: agent_id.clone(),
                expected: ExpectedVersion::Any,
                events: vec![command::new_event(&event)],
                metadata,
            };
            self.store.append(append).await?;
        }
        self.view.ping(agent_id.as_str(), now).await?;
        Ok(Answer { state, restart_requested, recorded })
    }
}

fn last_recorded(record: &AgentRecord) -> Option<Recorded> {
    let at_ms = record.last_recorded_heartbeat_ms?;
    let beat =
        Beat { status: record.status.clone(), load: record.load, running: record.running.clone() };
    Some(Recorded { beat, at_ms })
}
