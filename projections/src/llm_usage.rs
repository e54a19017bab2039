//! `llm_usage`: one row per recorded LLM call (a mission's `MissionLlmCalled`, or an
//! `LlmCalled` made outside any mission) with what usage reports group and sum on: when, the
//! mission and its agent kind, route, provider, model, tokens, cost, latency and outcome. The
//! request and answer stay in the log; the row keeps only the numbers.

use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::llm_call::LlmCallEvent;
use domain::mission::{LlmCall, MissionEvent};
use time::OffsetDateTime;

use crate::{Projector, Reads, StreamEvents, Unreadable};

pub const NAME: &str = "llm_usage";

#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// The event's global position: the row's key, so a redelivery writes nothing new.
    pub position: u64,
    pub at: OffsetDateTime,
    /// `None` for a call outside any mission.
    pub mission_id: Option<String>,
    /// The API key a call outside any mission was made with (`by` is `key:<id>`).
    pub key_id: Option<String>,
    pub call: LlmCall,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LlmUsage;

impl Projector for LlmUsage {
    type Change = CallRow;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads = Reads::Streams(&[
            StreamEvents::only("mission", &["MissionLlmCalled"]),
            StreamEvents::all("llm_call"),
        ]);
        READS
    }

    fn apply(&self, event: &RecordedEvent, changes: &mut Vec<CallRow>) -> Result<(), Unreadable> {
        let (mission_id, key_id, call) = match event.stream_type.as_str() {
            "mission" => {
                if event.event_type != "MissionLlmCalled" {
                    return Ok(());
                }
                let MissionEvent::MissionLlmCalled { call, .. } = MissionEvent::upcast(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                )
                .map_err(|error| Unreadable::of(event, error))?
                else {
                    return Err(Unreadable::of(event, "not a MissionLlmCalled"));
                };
                (Some(event.stream_id.as_str().to_owned()), None, call)
            }
            _ => {
                let LlmCallEvent::LlmCalled { call, by, .. } = LlmCallEvent::upcast(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                )
                .map_err(|error| Unreadable::of(event, error))?;
                (None, by.strip_prefix("key:").map(str::to_owned), call)
            }
        };
        // A fork's copy of its origin's call was paid for, and counted, in the origin.
        if call.replayed {
            return Ok(());
        }
        changes.push(CallRow {
            position: event.global_position,
            at: event.recorded_at,
            mission_id,
            key_id,
            call,
        });
        Ok(())
    }
}
