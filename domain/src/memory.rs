//! A memory as an aggregate: one stream per memory (`memory/<id>`), holding what was
//! remembered (text, scope, metadata, its embedding), and whether it was later replaced or
//! forgotten. The vector index built from these events is a read model: every memory it holds
//! can be found again here, and a memory forgotten here leaves it.
//!
//! | from | event | to |
//! |---|---|---|
//! | (none) | `MemoryRecorded` (scope, text, metadata, expiry, embedding, who, which mission) | live |
//! | live | `MemorySuperseded` (the memory replacing it, why, who) | superseded |
//! | live, superseded | `MemoryForgotten` (why, who) | forgotten |
//!
//! A superseded memory stays in its stream (and so in history and replay) but leaves search;
//! the one that replaces it names it in `supersedes`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::StreamType;
use crate::aggregate::{Aggregate, DomainEvent};

mod rules;

pub use rules::{
    METADATA_BYTES_MAX, METADATA_KEY_LEN_MAX, METADATA_KEYS_MAX, METADATA_LIST_MAX,
    METADATA_STRING_LEN_MAX, REASON_LEN_MAX, SCOPE_DEPTH_MAX, SCOPE_LEN_MAX, SCOPE_SEGMENT_LEN_MAX,
    Scope, TEXT_LEN_MAX, TTL_S_MAX, VECTOR_DIMS_MAX, check_metadata, check_reason, check_text,
};

pub fn stream_type() -> StreamType {
    StreamType::parse("memory").expect("a valid stream type")
}

/// The embedding a memory was indexed with: kept in the event, so that a rebuilt index holds
/// the same vectors as the live one without asking a provider again (whose model may have
/// changed, or be gone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Who made it: `offline`, `ollama`, `openai`.
    pub provider: String,
    pub model: String,
    /// `true` for the offline provider's hashed word and character n-grams: they match
    /// shared words, not meaning.
    #[serde(default)]
    pub lexical: bool,
    /// L2-normalised. Each number is written as the shortest decimal that reads back as the
    /// same `f32`, so a stored vector loads bit for bit and takes about half the room of
    /// the `f64` a plain conversion would write.
    #[serde(with = "short_f32")]
    pub vector: Vec<f32>,
}

mod short_f32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(vector: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(vector.iter().map(|x| {
            // `Display` of an `f32` is its shortest round-tripping decimal.
            x.to_string().parse::<f64>().unwrap_or(f64::from(*x))
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        // Narrowing is the point: the nearest f32 of the stored decimal is the one written.
        Ok(Vec::<f64>::deserialize(d)?.into_iter().map(|x| x as f32).collect())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemoryEvent {
    /// `by`: the principal that recorded it; `mission`: the mission whose agent did, if any;
    /// `supersedes`: the memory this one replaces.
    MemoryRecorded {
        scope: Scope,
        text: String,
        #[serde(default)]
        metadata: BTreeMap<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<i64>,
        embedding: Embedding,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mission: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        supersedes: Option<Uuid>,
        at_ms: i64,
    },
    /// Replaced by `replacement` (recorded first, naming this one in `supersedes`).
    MemorySuperseded { replacement: Uuid, reason: String, by: String, at_ms: i64 },
    /// Gone from search at once; this event and the recorded one stay.
    MemoryForgotten { reason: String, by: String, at_ms: i64 },
}

impl DomainEvent for MemoryEvent {
    fn event_type(&self) -> &'static str {
        match self {
            MemoryEvent::MemoryRecorded { .. } => "MemoryRecorded",
            MemoryEvent::MemorySuperseded { .. } => "MemorySuperseded",
            MemoryEvent::MemoryForgotten { .. } => "MemoryForgotten",
        }
    }
}

/// What a new memory holds, checked by [`Aggregate::decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub scope: Scope,
    pub text: String,
    pub metadata: BTreeMap<String, Value>,
    pub expires_at_ms: Option<i64>,
    pub embedding: Embedding,
    pub by: String,
    pub mission: Option<Uuid>,
    pub supersedes: Option<Uuid>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MemoryCommand {
    Record(Box<NewMemory>),
    Supersede { replacement: Uuid, reason: String, by: String, at_ms: i64 },
    Forget { reason: String, by: String, at_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no such memory")]
    NotFound,
    #[error("this memory is already recorded")]
    AlreadyRecorded,
    #[error("this memory was already superseded by {0}")]
    AlreadySuperseded(Uuid),
    #[error("this memory was forgotten")]
    Forgotten,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryStatus {
    /// Not recorded yet.
    #[default]
    Absent,
    Live,
    Superseded,
    Forgotten,
}

/// A memory's state: enough to decide, and to answer `GET /api/memories/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub status: MemoryStatus,
    pub scope: Option<Scope>,
    pub text: String,
    pub metadata: BTreeMap<String, Value>,
    pub expires_at_ms: Option<i64>,
    pub provider: String,
    pub model: String,
    pub lexical: bool,
    pub recorded_by: String,
    pub recorded_at_ms: i64,
    pub mission: Option<Uuid>,
    pub supersedes: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    /// Why it was superseded or forgotten, by whom and when.
    pub ended_reason: Option<String>,
    pub ended_by: Option<String>,
    pub ended_at_ms: Option<i64>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> MemoryError {
    MemoryError::Invalid { field, reason: reason.into() }
}

impl Memory {
    fn check_new(memory: &NewMemory) -> Result<(), MemoryError> {
        check_text(&memory.text).map_err(|reason| invalid("text", reason))?;
        check_metadata(&memory.metadata).map_err(|reason| invalid("metadata", reason))?;
        let dims = memory.embedding.vector.len();
        if dims == 0 || dims > VECTOR_DIMS_MAX {
            return Err(invalid("embedding", format!("1 to {VECTOR_DIMS_MAX} dimensions")));
        }
        if memory.embedding.vector.iter().any(|x| !x.is_finite()) {
            return Err(invalid("embedding", "finite numbers only"));
        }
        if let Some(expires) = memory.expires_at_ms
            && expires <= memory.at_ms
        {
            return Err(invalid("ttl_s", "a positive duration"));
        }
        Ok(())
    }
}

impl Aggregate for Memory {
    type Command = MemoryCommand;
    type Event = MemoryEvent;
    type Error = MemoryError;

    fn stream_type() -> StreamType {
        stream_type()
    }

    fn decide(&self, command: MemoryCommand) -> Result<Vec<MemoryEvent>, MemoryError> {
        match command {
            MemoryCommand::Record(memory) => {
                if self.status != MemoryStatus::Absent {
                    return Err(MemoryError::AlreadyRecorded);
                }
                Memory::check_new(&memory)?;
                let NewMemory {
                    scope,
                    text,
                    metadata,
                    expires_at_ms,
                    embedding,
                    by,
                    mission,
                    supersedes,
                    at_ms,
                } = *memory;
                Ok(vec![MemoryEvent::MemoryRecorded {
                    scope,
                    text,
                    metadata,
                    expires_at_ms,
                    embedding,
                    by,
                    mission,
                    supersedes,
                    at_ms,
                }])
            }
            MemoryCommand::Supersede { replacement, reason, by, at_ms } => {
                check_reason(&reason).map_err(|why| invalid("reason", why))?;
                match self.status {
                    MemoryStatus::Absent => Err(MemoryError::NotFound),
                    MemoryStatus::Forgotten => Err(MemoryError::Forgotten),
                    MemoryStatus::Superseded => {
                        Err(MemoryError::AlreadySuperseded(self.superseded_by.unwrap_or_default()))
                    }
                    MemoryStatus::Live => {
                        Ok(vec![MemoryEvent::MemorySuperseded { replacement, reason, by, at_ms }])
                    }
                }
            }
            MemoryCommand::Forget { reason, by, at_ms } => {
                check_reason(&reason).map_err(|why| invalid("reason", why))?;
                match self.status {
                    MemoryStatus::Absent => Err(MemoryError::NotFound),
                    MemoryStatus::Forgotten => Err(MemoryError::Forgotten),
                    MemoryStatus::Live | MemoryStatus::Superseded => {
                        Ok(vec![MemoryEvent::MemoryForgotten { reason, by, at_ms }])
                    }
                }
            }
        }
    }

    fn apply(&mut self, event: &MemoryEvent) {
        match event {
            MemoryEvent::MemoryRecorded {
                scope,
                text,
                metadata,
                expires_at_ms,
                embedding,
                by,
                mission,
                supersedes,
                at_ms,
            } => {
                self.status = MemoryStatus::Live;
                self.scope = Some(scope.clone());
                self.text = text.clone();
                self.metadata = metadata.clone();
                self.expires_at_ms = *expires_at_ms;
                self.provider = embedding.provider.clone();
                self.model = embedding.model.clone();
                self.lexical = embedding.lexical;
                self.recorded_by = by.clone();
                self.recorded_at_ms = *at_ms;
                self.mission = *mission;
                self.supersedes = *supersedes;
            }
            MemoryEvent::MemorySuperseded { replacement, reason, by, at_ms } => {
                self.status = MemoryStatus::Superseded;
                self.superseded_by = Some(*replacement);
                self.ended(reason, by, *at_ms);
            }
            MemoryEvent::MemoryForgotten { reason, by, at_ms } => {
                self.status = MemoryStatus::Forgotten;
                self.ended(reason, by, *at_ms);
            }
        }
    }
}

impl Memory {
    fn ended(&mut self, reason: &str, by: &str, at_ms: i64) {
        self.ended_reason = Some(reason.to_owned());
        self.ended_by = Some(by.to_owned());
        self.ended_at_ms = Some(at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_memory(text: &str) -> NewMemory {
        NewMemory {
            scope: Scope::parse("kind/coder").unwrap(),
            text: text.into(),
            metadata: BTreeMap::from([("topic".to_owned(), Value::from("tests"))]),
            expires_at_ms: None,
            embedding: Embedding {
                provider: "offline".into(),
                model: "lexical-384".into(),
                lexical: true,
                vector: vec![0.6, 0.8],
            },
            by: "key:a".into(),
            mission: None,
            supersedes: None,
            at_ms: 10,
        }
    }

    #[test]
    fn a_memory_is_recorded_once_then_superseded_or_forgotten() {
        let recorded =
            Memory::default().decide(MemoryCommand::Record(Box::new(new_memory("x")))).unwrap();
        let memory = Memory::fold(&recorded);
        assert_eq!(memory.status, MemoryStatus::Live);
        assert_eq!(
            memory.decide(MemoryCommand::Record(Box::new(new_memory("y")))),
            Err(MemoryError::AlreadyRecorded)
        );
        let replacement = Uuid::nil();
        let supersede = |reason: &str| MemoryCommand::Supersede {
            replacement,
            reason: reason.into(),
            by: "key:a".into(),
            at_ms: 11,
        };
        let superseded = memory.decide(supersede("newer")).unwrap();
        let mut state = memory.clone();
        state.apply(&superseded[0]);
        assert_eq!(state.status, MemoryStatus::Superseded);
        assert!(matches!(state.decide(supersede("again")), Err(MemoryError::AlreadySuperseded(_))));
        let forget =
            MemoryCommand::Forget { reason: "wrong".into(), by: "key:a".into(), at_ms: 12 };
        let forgotten = state.decide(forget.clone()).unwrap();
        state.apply(&forgotten[0]);
        assert_eq!(state.status, MemoryStatus::Forgotten);
        assert_eq!(state.decide(forget), Err(MemoryError::Forgotten));
    }

    #[test]
    fn bad_text_vectors_and_expiry_are_refused_naming_the_field() {
        let refused = |memory: NewMemory| match Memory::default()
            .decide(MemoryCommand::Record(Box::new(memory)))
        {
            Err(MemoryError::Invalid { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(refused(new_memory(" ")), "text");
        let mut memory = new_memory("x");
        memory.embedding.vector = vec![f32::NAN];
        assert_eq!(refused(memory), "embedding");
        let mut memory = new_memory("x");
        memory.expires_at_ms = Some(10);
        assert_eq!(refused(memory), "ttl_s");
        let absent = Memory::default().decide(MemoryCommand::Forget {
            reason: "r".into(),
            by: "b".into(),
            at_ms: 1,
        });
        assert_eq!(absent, Err(MemoryError::NotFound));
    }
}
