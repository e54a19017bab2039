//! A run as a mission's history recorded it: each step's model answer (and the request it
//! answered), each tool call's outcome, each wait for children with what they did. The agent
//! loop plays a record back instead of asking the model or running a tool, which is what
//! lets a suspended mission go on where it stopped, a fork start from another run's steps, and
//! `brain missions replay` check today's code against a past run without side effects.

use std::collections::{HashMap, HashSet};

use domain::RecordedEvent;
use domain::StreamId;
use domain::aggregate::DomainEvent;
use domain::mission::{ChildOutcome, ForkLink, LlmCall, Mission, MissionEvent, ToolCallRecord};
use serde_json::Value;

use crate::eventlog::command;
use crate::eventlog::store::EventStore;
use crate::llm::{ChatAnswer, ToolCall, Usage};

/// One step's model call as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedAnswer {
    pub call: LlmCall,
    /// The answer, read back from the record; `None` with why when the record cannot give it
    /// (only the usage was recorded, or the answer was cut to the record's bound).
    pub answer: Result<ChatAnswer, String>,
}

/// A wait for children, at a tool call.
#[derive(Debug, Clone, Default)]
pub struct Wait {
    pub children: Vec<String>,
    pub outcomes: Vec<ChildOutcome>,
}

impl Wait {
    /// What the children did, in the order they were spawned, once all of them ended.
    pub fn finished(&self) -> Option<Vec<&ChildOutcome>> {
        let ordered: Vec<&ChildOutcome> = self
            .children
            .iter()
            .filter_map(|child| self.outcomes.iter().find(|outcome| outcome.mission_id == *child))
            .collect();
        (ordered.len() == self.children.len()).then_some(ordered)
    }
}

/// The steps of one attempt of a mission.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The model calls that answered, in order: step `n` is `answers[n - 1]`.
    pub answers: Vec<RecordedAnswer>,
    /// Tool calls by step and call id.
    pub tools: HashMap<(u32, String), ToolCallRecord>,
    /// Waits for children by the step and call id that spawned them.
    pub waits: HashMap<(u32, String), Wait>,
    /// Copied from another run (a fork's origin): the loop records each step it plays back
    /// in this mission's history, marked replayed, unless it is there already.
    pub copied: bool,
    /// The steps (`None`) and tool calls (`Some(call id)`) already in this mission's own
    /// history.
    pub here: HashSet<(u32, Option<String>)>,
    /// Children the mission spawned over its whole life, every attempt counted.
    pub children_spawned: usize,
    /// How deep the mission nests (0 for one nobody spawned).
    pub depth: u32,
    /// The attempt's result, when it completed.
    pub result: Option<Value>,
}

/// The answer a call record holds, if it holds one whole.
fn answer_of(call: &LlmCall) -> Result<ChatAnswer, String> {
    if call.response.is_null() {
        return Err("the record holds only the call's usage (BRAIN_LLM_RECORD=usage)".into());
    }
    if call.response.get("truncated").and_then(Value::as_bool) == Some(true) {
        return Err("the answer was cut to the record's bound".into());
    }
    let tool_calls: Vec<ToolCall> =
        serde_json::from_value(call.response["tool_calls"].clone()).unwrap_or_default();
    Ok(ChatAnswer {
        content: call.response["content"].as_str().unwrap_or_default().to_owned(),
        tool_calls,
        usage: Usage {
            input_tokens: call.input_tokens,
            output_tokens: call.output_tokens,
            estimate: call.usage_estimate,
        },
        finish_reason: call.response["finish_reason"].as_str().unwrap_or_default().to_owned(),
        model: call.response["model"].as_str().unwrap_or(&call.model).to_owned(),
    })
}

impl Record {
    /// The record of `attempt` in a mission's history. A manual retry counts attempts afresh,
    /// so only what follows the last one counts.
    pub fn of_attempt(events: &[RecordedEvent], attempt: u32) -> Result<Record, String> {
        let mut record = Record::default();
        let mut last_wait: Option<(u32, String)> = None;
        for stored in events {
            let event = MissionEvent::upcast(
                &stored.event_type,
                stored.schema_version,
                stored.payload.clone(),
            )
            .map_err(|error| error.to_string())?;
            use MissionEvent as E;
            match event {
                E::MissionEnqueued { spec, .. } => {
                    record.depth = spec.parent.map_or(0, |parent| parent.depth);
                }
                E::MissionRetried { .. } => {
                    let (spawned, depth) = (record.children_spawned, record.depth);
                    record = Record { children_spawned: spawned, depth, ..Record::default() };
                }
                E::MissionLlmCalled { attempt: at, call, .. }
                    if at == attempt && call.outcome == "ok" =>
                {
                    let answer = answer_of(&call);
                    record.answers.push(RecordedAnswer { call, answer });
                    record.here.insert((record.answers.len() as u32, None));
                }
                E::MissionToolCalled { attempt: at, call, .. } if at == attempt => {
                    record.here.insert((call.step, Some(call.call_id.clone())));
                    record.tools.insert((call.step, call.call_id.clone()), call);
                }
                E::MissionSuspended { attempt: at, step, call_id, children, .. } => {
                    record.children_spawned += children.len();
                    if at == attempt {
                        let key = (step, call_id);
                        record.waits.insert(key.clone(), Wait { children, outcomes: vec![] });
                        last_wait = Some(key);
                    }
                }
                E::MissionChildFinished { outcome, .. } => {
                    if let Some(wait) = last_wait.as_ref().and_then(|key| record.waits.get_mut(key))
                        && wait.children.contains(&outcome.mission_id)
                    {
                        wait.outcomes.push(outcome);
                    }
                }
                E::MissionCompleted { attempt: at, result, .. } if at == attempt => {
                    record.result = Some(result);
                }
                _ => {}
            }
        }
        Ok(record)
    }

    /// The first `steps` steps of this record: what a fork plays back.
    pub fn first_steps(mut self, steps: u32) -> Record {
        self.answers.truncate(steps as usize);
        self.tools.retain(|(step, _), _| *step <= steps);
        self.waits.retain(|(step, _), _| *step <= steps);
        self.result = None;
        self.copied = true;
        self
    }

    /// What every child of the record's finished waits did, in the order they were spawned.
    pub fn child_outcomes(&self) -> Vec<&ChildOutcome> {
        let mut waits: Vec<(&(u32, String), &Wait)> = self.waits.iter().collect();
        waits.sort_by_key(|(key, _)| (*key).clone());
        waits.into_iter().filter_map(|(_, wait)| wait.finished()).flatten().collect()
    }
}

/// A mission's history with its state.
pub async fn history(
    store: &EventStore,
    mission_id: &str,
) -> Result<(Mission, Vec<RecordedEvent>), String> {
    let stream_id = StreamId::parse(mission_id).map_err(|error| error.to_string())?;
    command::load_with_events::<Mission>(store, &stream_id)
        .await
        .map_err(|error| format!("cannot read mission {mission_id}: {error}"))
}

/// The last attempt that ran, by its last start (a suspension or a release uncounts the
/// attempt in the state, not in the history).
pub fn last_attempt(events: &[RecordedEvent]) -> Option<u32> {
    let stored = events.iter().rev().find(|event| event.event_type == "MissionStarted")?;
    match MissionEvent::upcast(&stored.event_type, stored.schema_version, stored.payload.clone()) {
        Ok(MissionEvent::MissionStarted { attempt, .. }) => Some(attempt),
        _ => None,
    }
}

/// What an attempt of a mission starts from: its own record so far (a resumed or handed back
/// run goes on where it stopped), or for a fork the first steps of its origin's run (those not
/// copied yet are copied as they are played back). A record that cannot be played back (only
/// usage recorded, an answer cut to the bound) is not used: the attempt starts over, unless it
/// waits on children, whose results only the record can place.
pub async fn for_attempt(
    store: &EventStore,
    mission_id: &str,
    attempt: u32,
) -> Result<Record, String> {
    let (mission, events) = history(store, mission_id).await?;
    let own = Record::of_attempt(&events, attempt)?;
    let fork = mission.spec.and_then(|spec| spec.forked_from);
    match fork {
        Some(ForkLink { mission_id: origin, attempt: origin_attempt, steps })
            if own.answers.len() < steps as usize =>
        {
            let (_, events) = history(store, &origin).await?;
            let copied = Record::of_attempt(&events, origin_attempt)?.first_steps(steps);
            Ok(Record {
                children_spawned: own.children_spawned,
                depth: own.depth,
                here: own.here,
                ..copied
            })
        }
        _ if own.answers.iter().any(|answer| answer.answer.is_err()) && own.waits.is_empty() => {
            Ok(Record {
                children_spawned: own.children_spawned,
                depth: own.depth,
                ..Record::default()
            })
        }
        _ => Ok(own),
    }
}

#[cfg(test)]
mod tests {
    use domain::mission::MissionStatus;
    use domain::{EventMetadata, StreamType};
    use serde_json::json;

    use super::*;

    /// `events` as a mission's stream holds them.
    fn history(events: &[MissionEvent]) -> Vec<RecordedEvent> {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        (1..)
            .zip(events)
            .map(|(version, event)| RecordedEvent {
                global_position: version,
                stream_type: StreamType::parse("mission").expect("a stream type"),
                stream_id: StreamId::parse("m1").expect("a stream id"),
                version,
                event_id: uuid::Uuid::nil(),
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                payload: event.payload(),
                metadata: EventMetadata::new("test", at),
                recorded_at: at,
            })
            .collect()
    }

    /// A model call of `attempt` that answered `response` (`null`: only its usage recorded).
    fn called(attempt: u32, response: Value) -> MissionEvent {
        let call = LlmCall {
            route: "default".into(),
            kind: "supervisor".into(),
            provider: "offline".into(),
            model: "offline".into(),
            tries: 1,
            request: json!([]),
            response,
            input_tokens: 4,
            output_tokens: 2,
            cost_usd: 0.0,
            latency_ms: 1,
            outcome: "ok".into(),
            replayed: false,
            usage_estimate: None,
        };
        MissionEvent::MissionLlmCalled { attempt, call, at_ms: 0 }
    }

    fn child_finished(mission_id: &str) -> MissionEvent {
        let outcome = ChildOutcome {
            mission_id: mission_id.into(),
            status: MissionStatus::Completed,
            result: Some(json!(mission_id)),
            error: None,
        };
        MissionEvent::MissionChildFinished { outcome, at_ms: 0 }
    }

    fn suspended(children: &[&str]) -> MissionEvent {
        MissionEvent::MissionSuspended {
            attempt: 1,
            step: 1,
            call_id: "c1".into(),
            children: children.iter().map(|child| (*child).to_owned()).collect(),
            at_ms: 0,
        }
    }

    #[test]
    fn a_suspended_attempt_reads_back_its_answer_its_wait_and_its_children_in_spawn_order() {
        // Given an attempt that asked for two children, suspended, and saw them end in reverse.
        let asked = json!({ "content": "", "finish_reason": "tool_calls", "model": "offline",
            "tool_calls": [{ "id": "c1", "name": "spawn_missions", "arguments": {} }] });
        let events = history(&[
            called(1, asked),
            suspended(&["k1", "k2"]),
            child_finished("k2"),
            child_finished("k1"),
        ]);

        // When its record is read.
        let record = Record::of_attempt(&events, 1).unwrap();

        // Then its answer plays back whole, and the wait gives the children in spawn order.
        let answer = record.answers[0].answer.as_ref().unwrap();
        assert_eq!(answer.tool_calls[0].name, "spawn_missions");
        assert_eq!(answer.usage, Usage::reported(4, 2));
        assert!(record.here.contains(&(1, None)));
        assert_eq!(record.children_spawned, 2);
        let order: Vec<&str> =
            record.child_outcomes().iter().map(|child| child.mission_id.as_str()).collect();
        assert_eq!(order, ["k1", "k2"]);
    }

    #[test]
    fn a_wait_is_not_finished_until_every_child_has_ended() {
        // Given a wait for two children, one of which has ended.
        let events =
            history(&[called(1, json!({})), suspended(&["k1", "k2"]), child_finished("k1")]);

        // When its record is read, then the wait has no result yet.
        let record = Record::of_attempt(&events, 1).unwrap();
        assert_eq!(record.waits[&(1, "c1".to_owned())].finished(), None);
        assert!(record.child_outcomes().is_empty());
    }

    #[test]
    fn a_usage_only_call_cannot_be_played_back_and_a_manual_retry_starts_the_record_afresh() {
        // Given a first run with a usage-only call and two children, retried by hand, then a
        // new attempt 1 that answered whole.
        let events = history(&[
            called(1, Value::Null),
            suspended(&["k1", "k2"]),
            MissionEvent::MissionRetried { by: "ops".into(), reason: String::new(), at_ms: 0 },
            called(1, json!({ "content": "done" })),
        ]);

        // When the record of attempt 1 is read.
        let record = Record::of_attempt(&events, 1).unwrap();

        // Then only the new run's step is in it, but the children spawned still count.
        assert_eq!(record.answers.len(), 1);
        assert_eq!(record.answers[0].answer.as_ref().unwrap().content, "done");
        assert!(record.waits.is_empty());
        assert_eq!(record.children_spawned, 2);

        // And the usage-only call, read alone, says why it cannot be played back.
        let before = Record::of_attempt(&events[..1], 1).unwrap();
        assert!(before.answers[0].answer.as_ref().unwrap_err().contains("BRAIN_LLM_RECORD=usage"));
    }

    #[test]
    fn a_fork_keeps_the_first_steps_copied_and_without_the_origins_result() {
        // Given a completed run of two steps.
        let events = history(&[
            called(1, json!({ "content": "one" })),
            called(1, json!({ "content": "two" })),
            MissionEvent::MissionCompleted { attempt: 1, result: json!("two"), at_ms: 0 },
        ]);
        let record = Record::of_attempt(&events, 1).unwrap();
        assert_eq!(record.result, Some(json!("two")));

        // When a fork takes its first step.
        let fork = record.first_steps(1);

        // Then it plays back that step only, marked as copied, with no result to end on.
        assert_eq!(fork.answers.len(), 1);
        assert!(fork.copied);
        assert_eq!(fork.result, None);
    }
}
