//! `agent_view`: the supervisor's heartbeat view and the agent list, one record per agent:
//! what it is (name, kind, owner, version), its state, and its last recorded heartbeat
//! (status, load, running missions, when). The Redis adapter in `brain::agents::view`
//! applies the changes; the agent supervisor sweeps it and `GET /api/agents` lists it.

use domain::RecordedEvent;
use domain::agent::{AgentEvent, AgentState, ControlAction};
use domain::aggregate::DomainEvent;
use domain::heartbeat::{Beat, HeartbeatEvent};

use crate::{Projector, Reads, StreamEvents, Unreadable};

pub const NAME: &str = "agent_view";

/// One change to an agent's record. Only `Register` creates one; the others change a record
/// that exists and are ignored for one that does not.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentChange {
    Register {
        agent_id: String,
        name: String,
        kind: String,
        owner: String,
        version: String,
        /// The key that registered it (empty: none).
        key_id: String,
        at_ms: i64,
    },
    /// A new state (and, for a recovery, start or restart, a fresh "seen" time).
    State { agent_id: String, state: AgentState, seen_at_ms: Option<i64> },
    /// A restart was asked for (`true`) or carried out (`false`, one more restart counted,
    /// once per `version` of the agent's stream however often it is applied).
    Restart { agent_id: String, requested: bool, version: u64 },
    /// A recorded heartbeat.
    Seen { agent_id: String, beat: Beat, at_ms: i64 },
}

#[derive(Debug, Default, Clone, Copy)]
pub struct AgentView;

/// The stored name of a state, as the API spells it.
pub fn state_name(state: AgentState) -> &'static str {
    match state {
        AgentState::New => "new",
        AgentState::Active => "active",
        AgentState::Unresponsive => "unresponsive",
        AgentState::Stopped => "stopped",
        AgentState::Failed => "failed",
        AgentState::Deregistered => "deregistered",
    }
}

/// The inverse of [`state_name`].
pub fn parse_state(name: &str) -> Option<AgentState> {
    [
        AgentState::New,
        AgentState::Active,
        AgentState::Unresponsive,
        AgentState::Stopped,
        AgentState::Failed,
        AgentState::Deregistered,
    ]
    .into_iter()
    .find(|state| state_name(*state) == name)
}

impl Projector for AgentView {
    type Change = AgentChange;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads =
            Reads::Streams(&[StreamEvents::all("agent"), StreamEvents::all("agent_heartbeat")]);
        READS
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        changes: &mut Vec<AgentChange>,
    ) -> Result<(), Unreadable> {
        let agent_id = event.stream_id.to_string();
        if event.stream_type.as_str() == "agent_heartbeat" {
            let HeartbeatEvent::AgentHeartbeat { beat, at_ms } = HeartbeatEvent::upcast(
                &event.event_type,
                event.schema_version,
                event.payload.clone(),
            )
            .map_err(|error| Unreadable::of(event, error))?;
            changes.push(AgentChange::Seen { agent_id, beat, at_ms });
            return Ok(());
        }
        let agent =
            AgentEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| Unreadable::of(event, error))?;
        use AgentEvent as E;
        let state = |state, seen_at_ms| AgentChange::State {
            agent_id: agent_id.clone(),
            state,
            seen_at_ms,
        };
        let change = match agent {
            E::AgentRegistered { registration, at_ms } => AgentChange::Register {
                agent_id,
                name: registration.name,
                kind: registration.kind,
                owner: registration.owner,
                version: registration.version,
                key_id: registration.key_id.unwrap_or_default(),
                at_ms,
            },
            E::AgentUnresponsive { .. } => state(AgentState::Unresponsive, None),
            E::AgentRecovered { at_ms } | E::AgentStarted { at_ms } => {
                state(AgentState::Active, Some(at_ms))
            }
            E::AgentStopped { .. } => state(AgentState::Stopped, None),
            E::AgentFailed { .. } => state(AgentState::Failed, None),
            E::AgentDeregistered { .. } => state(AgentState::Deregistered, None),
            E::AgentControlRequested { action: ControlAction::Restart, .. } => {
                AgentChange::Restart { agent_id, requested: true, version: event.version }
            }
            // A stop or a start is followed by its `AgentStopped` / `AgentStarted`.
            E::AgentControlRequested { .. } => return Ok(()),
            E::AgentRestarted { at_ms, .. } => {
                changes.push(AgentChange::Restart {
                    agent_id: agent_id.clone(),
                    requested: false,
                    version: event.version,
                });
                state(AgentState::Active, Some(at_ms))
            }
        };
        changes.push(change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::agent::Registration;
    use domain::{EventMetadata, StreamId, StreamType};

    fn recorded(stream_type: &str, event_type: &str, payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            stream_type: StreamType::parse(stream_type).unwrap(),
            stream_id: StreamId::parse("a1").unwrap(),
            version: 1,
            event_id: uuid::Uuid::nil(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: EventMetadata::new("test", time::OffsetDateTime::UNIX_EPOCH),
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn changes(event: RecordedEvent) -> Vec<AgentChange> {
        let mut changes = Vec::new();
        AgentView.apply(&event, &mut changes).unwrap();
        changes
    }

    #[test]
    fn registration_heartbeat_and_restart_become_changes() {
        let registration = Registration {
            name: "n".into(),
            kind: "coder".into(),
            capabilities: vec![],
            version: "1".into(),
            owner: "o".into(),
            labels: Default::default(),
            key_id: Some("0123456789abcdef".into()),
        };
        let registered = AgentEvent::AgentRegistered { registration, at_ms: 5 };
        let got = changes(recorded("agent", registered.event_type(), registered.payload()));
        assert!(matches!(&got[..], [AgentChange::Register { kind, key_id, at_ms: 5, .. }]
                if kind == "coder" && key_id == "0123456789abcdef"));

        let beat = Beat { status: "idle".into(), load: 0.5, running: vec![] };
        let event = HeartbeatEvent::AgentHeartbeat { beat: beat.clone(), at_ms: 9 };
        let got = changes(recorded("agent_heartbeat", event.event_type(), event.payload()));
        assert_eq!(got, vec![AgentChange::Seen { agent_id: "a1".into(), beat, at_ms: 9 }]);

        let restarted = AgentEvent::AgentRestarted { reason: "r".into(), at_ms: 11 };
        let got = changes(recorded("agent", restarted.event_type(), restarted.payload()));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            AgentChange::State {
                agent_id: "a1".into(),
                state: AgentState::Active,
                seen_at_ms: Some(11)
            }
        );
    }

    #[test]
    fn an_unknown_event_is_unreadable_not_skipped() {
        let mut changes = Vec::new();
        let error = AgentView
            .apply(&recorded("agent", "AgentTeleported", serde_json::json!({})), &mut changes)
            .unwrap_err();
        assert_eq!(error.event_type, "AgentTeleported");
    }

    #[test]
    fn state_names_round_trip() {
        for name in ["new", "active", "unresponsive", "stopped", "failed", "deregistered"] {
            assert_eq!(state_name(parse_state(name).unwrap()), name);
        }
        assert_eq!(parse_state("asleep"), None);
    }
}
