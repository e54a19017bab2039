//! Agent aggregate: an agent's life (registered, unresponsive, recovered, control requested,
//! stopped, started, restarted, failed, deregistered), each event with who and why. `decide`
//! turns a command into events, `apply` folds them into state. Pure: time arrives inside the
//! command as `now_ms`; heartbeats themselves live on a stream of their own, so that this
//! stream stays short, and only their effect on the agent's life (a recovery) comes here.
//!
//! | from | event | to |
//! |---|---|---|
//! | (none) | `AgentRegistered` | `active` |
//! | `active` | `AgentUnresponsive` | `unresponsive` |
//! | `unresponsive` | `AgentRecovered` (its next heartbeat) | `active` |
//! | `active`, `unresponsive`, `failed` | `AgentControlRequested` stop, then `AgentStopped` | `stopped` |
//! | `stopped`, `failed` | `AgentControlRequested` start, then `AgentStarted` | `active` |
//! | any but `deregistered` | `AgentControlRequested` restart | same, restart pending |
//! | any but `deregistered` | `AgentRestarted` | `active`, restart done |
//! | `active`, `unresponsive` | `AgentFailed` (past its restart intensity) | `failed` |
//! | any but `deregistered` | `AgentDeregistered` | `deregistered` |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::{Aggregate, DomainEvent, Snapshots};

/// Longest name, kind, version or owner.
pub const NAME_LEN_MAX: usize = 200;
/// Most capabilities and labels an agent may declare.
pub const CAPABILITIES_MAX: usize = 64;
pub const LABELS_MAX: usize = 64;
/// Longest capability, label key or label value.
pub const TAG_LEN_MAX: usize = 200;
/// Longest reason recorded with a control, a stop, a failure or a deregistration.
pub const REASON_LEN_MAX: usize = 2_000;

/// Events between two snapshots of an agent: a load folds at most this many past one.
pub const SNAPSHOT_EVERY: u64 = 100;

/// What an agent says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    /// The agent kind whose missions it runs (`coder`, `ops`, ...).
    pub kind: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub version: String,
    /// Who runs it: a person, a team, a host.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The API key that registered it: only that key (or one that controls agents) may
    /// heartbeat, claim and report for it. None for a process's own built-in agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Not registered (yet).
    #[default]
    New,
    Active,
    Unresponsive,
    Stopped,
    /// Restarted too often: down until an operator starts it.
    Failed,
    Deregistered,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AgentCommand {
    Register {
        registration: Registration,
        now_ms: i64,
    },
    /// The supervisor's verdict: not seen since `last_seen_ms`, which is at least
    /// `silent_after_ms` before `now_ms` (both from the supervisor's one clock).
    MarkUnresponsive {
        last_seen_ms: i64,
        silent_after_ms: i64,
        now_ms: i64,
    },
    /// A heartbeat's effect on the agent's life: a recovery when it was unresponsive.
    Heartbeat {
        now_ms: i64,
    },
    RequestControl {
        action: ControlAction,
        by: String,
        reason: String,
        now_ms: i64,
    },
    /// The agent (or its worker's supervisor) carried out a restart.
    ReportRestarted {
        reason: String,
        now_ms: i64,
    },
    /// Past its restart intensity: the agent stays down with the reason.
    MarkFailed {
        reason: String,
        now_ms: i64,
    },
    Deregister {
        by: String,
        reason: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentEvent {
    AgentRegistered {
        registration: Registration,
        at_ms: i64,
    },
    AgentUnresponsive {
        last_seen_ms: i64,
        at_ms: i64,
    },
    AgentRecovered {
        at_ms: i64,
    },
    AgentControlRequested {
        action: ControlAction,
        by: String,
        reason: String,
        at_ms: i64,
    },
    /// A stop carried out: the agent takes no missions until started.
    AgentStopped {
        at_ms: i64,
    },
    AgentStarted {
        at_ms: i64,
    },
    AgentRestarted {
        reason: String,
        at_ms: i64,
    },
    AgentFailed {
        reason: String,
        at_ms: i64,
    },
    AgentDeregistered {
        by: String,
        reason: String,
        at_ms: i64,
    },
}

impl DomainEvent for AgentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AgentEvent::AgentRegistered { .. } => "AgentRegistered",
            AgentEvent::AgentUnresponsive { .. } => "AgentUnresponsive",
            AgentEvent::AgentRecovered { .. } => "AgentRecovered",
            AgentEvent::AgentControlRequested { .. } => "AgentControlRequested",
            AgentEvent::AgentStopped { .. } => "AgentStopped",
            AgentEvent::AgentStarted { .. } => "AgentStarted",
            AgentEvent::AgentRestarted { .. } => "AgentRestarted",
            AgentEvent::AgentFailed { .. } => "AgentFailed",
            AgentEvent::AgentDeregistered { .. } => "AgentDeregistered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("agent is registered already with another registration")]
    RegisteredOtherwise,
    #[error("agent is not registered")]
    NotFound,
    #[error("agent is deregistered")]
    Deregistered,
    #[error("agent is {state:?}, not active")]
    NotActive { state: AgentState },
    #[error("agent was seen at {last_seen_ms}, not silent for {silent_after_ms} ms at {now_ms}")]
    NotSilent { last_seen_ms: i64, silent_after_ms: i64, now_ms: i64 },
    #[error("agent is {state:?}: {action:?} does not apply")]
    ControlNotApplicable { state: AgentState, action: ControlAction },
}

pub type Decision = Result<Vec<AgentEvent>, AgentError>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub state: AgentState,
    pub registration: Option<Registration>,
    /// A restart was asked for and not yet carried out (an external agent sees it in its
    /// next heartbeat answer).
    pub restart_requested: bool,
    pub restarts: u32,
    pub registered_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AgentError {
    AgentError::Invalid { field, reason: reason.into() }
}

fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    required: bool,
) -> Result<(), AgentError> {
    if required && text.trim().is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    if text.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// The rules a registration must meet (the kind: those of a mission's agent kind).
pub fn validate_registration(registration: &Registration) -> Result<(), AgentError> {
    check_text("name", &registration.name, NAME_LEN_MAX, true)?;
    crate::mission::check_agent(&registration.kind)
        .map_err(|error| invalid("kind", error.to_string()))?;
    check_text("version", &registration.version, NAME_LEN_MAX, false)?;
    check_text("owner", &registration.owner, NAME_LEN_MAX, false)?;
    if registration.capabilities.len() > CAPABILITIES_MAX {
        return Err(invalid("capabilities", format!("at most {CAPABILITIES_MAX}")));
    }
    for capability in &registration.capabilities {
        check_text("capabilities", capability, TAG_LEN_MAX, true)?;
    }
    if registration.labels.len() > LABELS_MAX {
        return Err(invalid("labels", format!("at most {LABELS_MAX}")));
    }
    for (key, value) in &registration.labels {
        check_text("labels", key, TAG_LEN_MAX, true)?;
        check_text("labels", value, TAG_LEN_MAX, false)?;
    }
    Ok(())
}

impl Aggregate for Agent {
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentError;

    /// An agent's stream grows for as long as it lives (every unresponsive spell and recovery,
    /// every control); its state stays a few hundred bytes, so a snapshot is cheap to take.
    const SNAPSHOTS: Option<Snapshots<Self>> = Some(Snapshots::json(SNAPSHOT_EVERY, 1));

    fn stream_type() -> StreamType {
        StreamType::parse("agent").expect("a valid stream type")
    }

    fn decide(&self, command: AgentCommand) -> Decision {
        use AgentCommand as C;
        use AgentEvent as E;
        use AgentState as S;
        if let C::Register { registration, now_ms } = command {
            validate_registration(&registration)?;
            return match (&self.state, &self.registration) {
                (S::New, _) => Ok(vec![E::AgentRegistered { registration, at_ms: now_ms }]),
                (S::Deregistered, _) => Err(AgentError::Deregistered),
                // The same registration again (a restarted agent, a retried request): nothing.
                (_, Some(known)) if *known == registration => Ok(vec![]),
                _ => Err(AgentError::RegisteredOtherwise),
            };
        }
        match self.state {
            S::New => return Err(AgentError::NotFound),
            S::Deregistered => return Err(AgentError::Deregistered),
            _ => {}
        }
        match command {
            C::Register { .. } => unreachable!("handled above"),
            C::MarkUnresponsive { last_seen_ms, silent_after_ms, now_ms } => {
                if self.state != S::Active {
                    return Err(AgentError::NotActive { state: self.state });
                }
                if now_ms - last_seen_ms < silent_after_ms {
                    return Err(AgentError::NotSilent { last_seen_ms, silent_after_ms, now_ms });
                }
                Ok(vec![E::AgentUnresponsive { last_seen_ms, at_ms: now_ms }])
            }
            C::Heartbeat { now_ms } => Ok(match self.state {
                S::Unresponsive => vec![E::AgentRecovered { at_ms: now_ms }],
                _ => vec![],
            }),
            C::RequestControl { action, by, reason, now_ms } => {
                check_text("reason", &reason, REASON_LEN_MAX, false)?;
                let applies = match action {
                    ControlAction::Stop => {
                        matches!(self.state, S::Active | S::Unresponsive | S::Failed)
                    }
                    ControlAction::Start => matches!(self.state, S::Stopped | S::Failed),
                    ControlAction::Restart => true,
                };
                if !applies {
                    return Err(AgentError::ControlNotApplicable { state: self.state, action });
                }
                let requested = E::AgentControlRequested { action, by, reason, at_ms: now_ms };
                // A stop or a start takes effect at once (claims check the state); a restart
                // is carried out by whoever runs the agent, and recorded when it is.
                Ok(match action {
                    ControlAction::Stop => vec![requested, E::AgentStopped { at_ms: now_ms }],
                    ControlAction::Start => vec![requested, E::AgentStarted { at_ms: now_ms }],
                    ControlAction::Restart => vec![requested],
                })
            }
            C::ReportRestarted { reason, now_ms } => {
                check_text("reason", &reason, REASON_LEN_MAX, false)?;
                Ok(vec![E::AgentRestarted { reason, at_ms: now_ms }])
            }
            C::MarkFailed { reason, now_ms } => {
                check_text("reason", &reason, REASON_LEN_MAX, false)?;
                if !matches!(self.state, S::Active | S::Unresponsive) {
                    return Err(AgentError::NotActive { state: self.state });
                }
                Ok(vec![E::AgentFailed { reason, at_ms: now_ms }])
            }
            C::Deregister { by, reason, now_ms } => {
                check_text("reason", &reason, REASON_LEN_MAX, false)?;
                Ok(vec![E::AgentDeregistered { by, reason, at_ms: now_ms }])
            }
        }
    }

    fn apply(&mut self, event: &AgentEvent) {
        use AgentEvent as E;
        use AgentState as S;
        let at_ms = match event {
            E::AgentRegistered { registration, at_ms } => {
                assert_eq!(self.state, S::New, "an agent registers once");
                self.state = S::Active;
                self.registration = Some(registration.clone());
                self.registered_at_ms = Some(*at_ms);
                *at_ms
            }
            E::AgentUnresponsive { at_ms, .. } => {
                self.state = S::Unresponsive;
                *at_ms
            }
            E::AgentRecovered { at_ms } => {
                self.state = S::Active;
                *at_ms
            }
            E::AgentControlRequested { action, at_ms, .. } => {
                if *action == ControlAction::Restart {
                    self.restart_requested = true;
                }
                *at_ms
            }
            E::AgentStopped { at_ms } => {
                self.state = S::Stopped;
                *at_ms
            }
            E::AgentStarted { at_ms } => {
                self.state = S::Active;
                *at_ms
            }
            E::AgentRestarted { at_ms, .. } => {
                self.state = S::Active;
                self.restart_requested = false;
                self.restarts += 1;
                *at_ms
            }
            E::AgentFailed { at_ms, .. } => {
                self.state = S::Failed;
                *at_ms
            }
            E::AgentDeregistered { at_ms, .. } => {
                self.state = S::Deregistered;
                *at_ms
            }
        };
        self.updated_at_ms = Some(at_ms);
        assert!(
            self.state == S::New || self.registration.is_some(),
            "a live agent has a registration"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            name: "reviewer".into(),
            kind: "coder".into(),
            capabilities: vec!["rust".into()],
            version: "1.2.0".into(),
            owner: "team-a".into(),
            labels: BTreeMap::from([("zone".into(), "eu".into())]),
            key_id: Some("0123456789abcdef".into()),
        }
    }

    fn registered() -> AgentEvent {
        AgentEvent::AgentRegistered { registration: registration(), at_ms: 1_000 }
    }

    /// Given these past events, when this command is decided, then expect exactly this.
    fn check(given: &[AgentEvent], when: AgentCommand, then: Decision) {
        assert_eq!(Agent::fold(given).decide(when), then);
    }

    fn control(action: ControlAction) -> AgentCommand {
        AgentCommand::RequestControl {
            action,
            by: "user:ann".into(),
            reason: "deploy".into(),
            now_ms: 5_000,
        }
    }

    fn requested(action: ControlAction) -> AgentEvent {
        AgentEvent::AgentControlRequested {
            action,
            by: "user:ann".into(),
            reason: "deploy".into(),
            at_ms: 5_000,
        }
    }

    #[test]
    fn registering_makes_an_agent_active_and_the_same_registration_again_changes_nothing() {
        let register = |registration| AgentCommand::Register { registration, now_ms: 1_000 };
        check(&[], register(registration()), Ok(vec![registered()]));
        assert_eq!(Agent::fold(&[registered()]).state, AgentState::Active);
        check(&[registered()], register(registration()), Ok(vec![]));
        let other = Registration { version: "2.0.0".into(), ..registration() };
        check(&[registered()], register(other), Err(AgentError::RegisteredOtherwise));
    }

    #[test]
    fn a_registration_breaking_a_rule_is_refused_naming_the_field() {
        let refuse = |registration: Registration, field| {
            let when = AgentCommand::Register { registration, now_ms: 1 };
            match Agent::default().decide(when) {
                Err(AgentError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected {field} refused, got {other:?}"),
            }
        };
        refuse(Registration { name: " ".into(), ..registration() }, "name");
        refuse(Registration { kind: "Not A Kind".into(), ..registration() }, "kind");
        refuse(
            Registration { capabilities: vec!["x".into(); CAPABILITIES_MAX + 1], ..registration() },
            "capabilities",
        );
        refuse(Registration { owner: "o".repeat(NAME_LEN_MAX + 1), ..registration() }, "owner");
    }

    #[test]
    fn an_agent_silent_for_the_window_is_marked_unresponsive_and_its_next_heartbeat_recovers_it() {
        let mark = |now_ms| AgentCommand::MarkUnresponsive {
            last_seen_ms: 10_000,
            silent_after_ms: 60_000,
            now_ms,
        };
        let not_yet = Err(AgentError::NotSilent {
            last_seen_ms: 10_000,
            silent_after_ms: 60_000,
            now_ms: 69_999,
        });
        check(&[registered()], mark(69_999), not_yet);
        let unresponsive = AgentEvent::AgentUnresponsive { last_seen_ms: 10_000, at_ms: 70_000 };
        check(&[registered()], mark(70_000), Ok(vec![unresponsive.clone()]));
        let given = [registered(), unresponsive];
        check(&given, mark(90_000), Err(AgentError::NotActive { state: AgentState::Unresponsive }));
        check(
            &given,
            AgentCommand::Heartbeat { now_ms: 95_000 },
            Ok(vec![AgentEvent::AgentRecovered { at_ms: 95_000 }]),
        );
        check(&[registered()], AgentCommand::Heartbeat { now_ms: 95_000 }, Ok(vec![]));
    }

    #[test]
    fn stop_and_start_carry_who_and_why_and_apply_only_where_they_mean_something() {
        let stop = AgentEvent::AgentStopped { at_ms: 5_000 };
        check(
            &[registered()],
            control(ControlAction::Stop),
            Ok(vec![requested(ControlAction::Stop), stop.clone()]),
        );
        let stopped = [registered(), requested(ControlAction::Stop), stop];
        assert_eq!(Agent::fold(&stopped).state, AgentState::Stopped);
        check(
            &stopped,
            control(ControlAction::Stop),
            Err(AgentError::ControlNotApplicable {
                state: AgentState::Stopped,
                action: ControlAction::Stop,
            }),
        );
        let start = AgentEvent::AgentStarted { at_ms: 5_000 };
        check(
            &stopped,
            control(ControlAction::Start),
            Ok(vec![requested(ControlAction::Start), start]),
        );
        check(
            &[registered()],
            control(ControlAction::Start),
            Err(AgentError::ControlNotApplicable {
                state: AgentState::Active,
                action: ControlAction::Start,
            }),
        );
    }

    #[test]
    fn a_restart_is_pending_until_carried_out_and_a_failed_agent_stays_down_until_started() {
        let given = [registered(), requested(ControlAction::Restart)];
        assert!(Agent::fold(&given).restart_requested);
        let restarted = AgentEvent::AgentRestarted { reason: "asked".into(), at_ms: 6_000 };
        let done = Agent::fold(&[registered(), requested(ControlAction::Restart), restarted]);
        assert_eq!(
            (done.state, done.restart_requested, done.restarts),
            (AgentState::Active, false, 1)
        );

        let failed = AgentEvent::AgentFailed { reason: "5 restarts in 60 s".into(), at_ms: 7_000 };
        check(
            &[registered()],
            AgentCommand::MarkFailed { reason: "5 restarts in 60 s".into(), now_ms: 7_000 },
            Ok(vec![failed.clone()]),
        );
        let down = [registered(), failed];
        assert_eq!(Agent::fold(&down).state, AgentState::Failed);
        check(&down, AgentCommand::Heartbeat { now_ms: 8_000 }, Ok(vec![]));
        let start = AgentEvent::AgentStarted { at_ms: 5_000 };
        check(
            &down,
            control(ControlAction::Start),
            Ok(vec![requested(ControlAction::Start), start]),
        );
    }

    #[test]
    fn a_deregistered_agent_takes_no_command_and_its_id_is_not_reused() {
        let gone = AgentEvent::AgentDeregistered {
            by: "user:ann".into(),
            reason: String::new(),
            at_ms: 9_000,
        };
        let given = [registered(), gone];
        check(&given, AgentCommand::Heartbeat { now_ms: 10_000 }, Err(AgentError::Deregistered));
        check(
            &given,
            AgentCommand::Register { registration: registration(), now_ms: 10_000 },
            Err(AgentError::Deregistered),
        );
        check(&[], AgentCommand::Heartbeat { now_ms: 1 }, Err(AgentError::NotFound));
    }

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        let events = [
            registered(),
            AgentEvent::AgentUnresponsive { last_seen_ms: 1, at_ms: 2 },
            AgentEvent::AgentRecovered { at_ms: 3 },
            requested(ControlAction::Restart),
            AgentEvent::AgentStopped { at_ms: 7 },
            AgentEvent::AgentStarted { at_ms: 8 },
            AgentEvent::AgentRestarted { reason: "r".into(), at_ms: 4 },
            AgentEvent::AgentFailed { reason: "f".into(), at_ms: 5 },
            AgentEvent::AgentDeregistered { by: "b".into(), reason: "d".into(), at_ms: 6 },
        ];
        for event in events {
            let back =
                AgentEvent::upcast(event.event_type(), event.schema_version(), event.payload())
                    .unwrap();
            assert_eq!(back, event);
        }
    }
}
