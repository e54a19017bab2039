//! The contract of an aggregate: `decide` turns a command into events or a refusal, `apply`
//! folds one event into state.
//!
//! This is our own thin trait rather than cqrs-es's `Aggregate`: that one's `handle` is async,
//! takes a `Services` value and writes through an `EventSink`, which would pull an async
//! runtime into this crate and mix I/O into decisions. Keeping `decide` a plain function
//! makes every aggregate testable as "given these events, when this command, then these
//! events", and lets the command handler in `brain` retry a stale decision by simply
//! re-folding and deciding again.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::names::StreamType;
pub use crate::upcast::{UpcastError, Upcaster};

/// A domain event enum of one aggregate. Its serialised form is the stored payload.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// How older stored layouts of this enum's event types become today's: one step per
    /// version bump (see [`crate::upcast`]). An event type's current version is one past its
    /// last step here, so bumping a version *is* adding its upcaster.
    const UPCASTERS: &'static [Upcaster] = &[];

    /// The stored `event_type` of this variant, past tense: `MissionEnqueued`.
    fn event_type(&self) -> &'static str;

    /// Every event type of the enum: its variants' names, from its own `Deserialize`.
    fn event_types() -> &'static [&'static str] {
        crate::upcast::variant_names::<Self>()
    }

    /// The payload layout version `event_type` is written at today.
    fn current_version(event_type: &str) -> u32 {
        crate::upcast::current_version(Self::UPCASTERS, event_type)
    }

    /// The payload layout version written today for this variant. Loading an older one
    /// goes through [`DomainEvent::upcast`].
    fn schema_version(&self) -> u32 {
        Self::current_version(self.event_type())
    }

    /// Rebuilds an event from what the store holds: the payload is brought from its stored
    /// `schema_version` to today's layout through [`DomainEvent::UPCASTERS`], then read
    /// tagged by `event_type`. Every path that reads stored events (loading an aggregate,
    /// projectors, views, replay) goes through here.
    fn upcast(
        event_type: &str,
        schema_version: u32,
        payload: serde_json::Value,
    ) -> Result<Self, UpcastError> {
        let payload =
            crate::upcast::to_current(Self::UPCASTERS, event_type, schema_version, payload)?;
        let tagged = serde_json::json!({ event_type: payload });
        serde_json::from_value(tagged).map_err(|source| UpcastError {
            event_type: event_type.to_owned(),
            message: source.to_string(),
        })
    }

    /// The payload to store: the variant's fields without the enum tag.
    fn payload(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
                map.into_iter().next().map(|(_, payload)| payload).unwrap_or_default()
            }
            Ok(other) => other,
            Err(error) => panic!("domain event {self:?} does not serialise: {error}"),
        }
    }
}

/// How an aggregate's state is kept as a snapshot (decision 0049): its state folded up to
/// some version, stored so that a load reads it and only the events after it. An aggregate
/// opts in through [`Aggregate::SNAPSHOTS`], usually with [`Snapshots::json`].
pub struct Snapshots<A> {
    /// A snapshot is taken each time the stream's version crosses a multiple of this, and
    /// whenever a load had to fold at least this many events past the snapshot it found.
    pub every: u64,
    /// The layout of the stored state. Bump it whenever the state's fields change, or what
    /// `apply` makes of an event (a new upcaster included): a stored snapshot of another
    /// version is ignored, and replaced, never loaded.
    pub version: u32,
    pub encode: fn(&A) -> Result<serde_json::Value, serde_json::Error>,
    pub decode: fn(serde_json::Value) -> Result<A, serde_json::Error>,
}

impl<A: Serialize + DeserializeOwned> Snapshots<A> {
    /// Snapshots of the state as its own serde JSON.
    pub const fn json(every: u64, version: u32) -> Snapshots<A> {
        assert!(every > 0, "a snapshot every 0 events");
        Snapshots { every, version, encode: encode_json::<A>, decode: decode_json::<A> }
    }
}

fn encode_json<A: Serialize>(state: &A) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(state)
}

fn decode_json<A: DeserializeOwned>(state: serde_json::Value) -> Result<A, serde_json::Error> {
    serde_json::from_value(state)
}

pub trait Aggregate: Default {
    type Command;
    type Event: DomainEvent;
    type Error: std::error::Error + PartialEq;

    /// Whether (and how) this aggregate's state is kept in snapshots. `None`, the default,
    /// folds every load from the stream's first event: right for short streams (a mission).
    const SNAPSHOTS: Option<Snapshots<Self>> = None;

    /// The stream type all instances of this aggregate are stored under.
    fn stream_type() -> StreamType;

    /// Decides what a command means given the current state. Never mutates.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into state. Events are facts: this never refuses one, and it asserts
    /// the invariants `decide` promised to keep.
    fn apply(&mut self, event: &Self::Event);

    /// The state after a sequence of events.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// The smallest aggregate worth having: a counter that refuses to go below zero.
    #[derive(Default, Debug)]
    struct Counter {
        value: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum CounterEvent {
        Incremented { by: u64 },
        Decremented { by: u64 },
    }

    impl DomainEvent for CounterEvent {
        fn event_type(&self) -> &'static str {
            match self {
                CounterEvent::Incremented { .. } => "Incremented",
                CounterEvent::Decremented { .. } => "Decremented",
            }
        }
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("counter is at {value}, cannot take away {by}")]
    struct Underflow {
        value: u64,
        by: u64,
    }

    impl Aggregate for Counter {
        type Command = i64;
        type Event = CounterEvent;
        type Error = Underflow;

        fn stream_type() -> StreamType {
            StreamType::parse("counter").unwrap()
        }

        fn decide(&self, delta: i64) -> Result<Vec<CounterEvent>, Underflow> {
            let by = delta.unsigned_abs();
            match delta {
                0 => Ok(vec![]),
                1.. => Ok(vec![CounterEvent::Incremented { by }]),
                _ if by > self.value => Err(Underflow { value: self.value, by }),
                _ => Ok(vec![CounterEvent::Decremented { by }]),
            }
        }

        fn apply(&mut self, event: &CounterEvent) {
            match event {
                CounterEvent::Incremented { by } => self.value += by,
                CounterEvent::Decremented { by } => {
                    self.value = self.value.checked_sub(*by).expect("decide refused underflow")
                }
            }
        }
    }

    fn check(given: &[CounterEvent], when: i64, then: Result<Vec<CounterEvent>, Underflow>) {
        assert_eq!(Counter::fold(given).decide(when), then);
    }

    #[test]
    fn deciding_against_folded_state_refuses_what_the_history_forbids() {
        let given = [CounterEvent::Incremented { by: 2 }];
        check(&given, -1, Ok(vec![CounterEvent::Decremented { by: 1 }]));
        check(&given, -3, Err(Underflow { value: 2, by: 3 }));
    }

    #[test]
    fn a_payload_round_trips_through_upcast_without_its_enum_tag() {
        let event = CounterEvent::Decremented { by: 7 };
        let payload = event.payload();
        assert_eq!(payload, serde_json::json!({ "by": 7 }));
        let back = CounterEvent::upcast(event.event_type(), 1, payload).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn an_unknown_stored_layout_is_a_typed_error_naming_the_event() {
        let err = CounterEvent::upcast("Incremented", 1, serde_json::json!({ "by": "x" }));
        assert_eq!(err.unwrap_err().event_type, "Incremented");
    }
}
