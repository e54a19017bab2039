//! Stored events outlive the code that wrote them: this is how an old layout is read today.
//!
//! Every stored event carries its `event_type` and the `schema_version` of its payload's
//! layout. When the layout of an event type changes in a way that old payloads would no
//! longer deserialise into (a field renamed, a required field added, a value reshaped), the
//! change bumps that type's version and adds one [`Upcaster`]: a pure function from the
//! payload at version N to the payload at N + 1, on plain JSON. Loading applies the steps in
//! a chain, from the stored version up to the current one, and only then deserialises, so
//! the enum in the code only ever knows today's layout.
//!
//! An event enum lists its steps in [`DomainEvent::UPCASTERS`](crate::aggregate::DomainEvent),
//! and that list is the single source of its versions: an event type's current version is one
//! past its last step (1 when it has none), which is also the version new events are written
//! at. Nothing here reads or writes anything: the store, the bus and the projectors hand the
//! stored JSON in, and get the current layout back.
//!
//! A payload from a *newer* version than the code knows (written by a newer release during a
//! rolling deploy) is an [`UpcastError`], never guessed at.

use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::Value;

/// One step of one event type's layout: turns a payload stored at version `from` into the
/// payload at `from + 1`. It must be pure and total over what version `from` ever wrote; a
/// payload it cannot convert is an `Err` with the reason.
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: u32,
    pub step: fn(Value) -> Result<Value, String>,
}

impl std::fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{} -> v{}", self.event_type, self.from, self.from + 1)
    }
}

/// A stored event that no longer matches any layout the code knows: a bug or a missing
/// upcaster, or an event written by a newer release, never user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {event_type} event cannot be read: {message}")]
pub struct UpcastError {
    pub event_type: String,
    pub message: String,
}

impl UpcastError {
    fn new(event_type: &str, message: impl Into<String>) -> UpcastError {
        UpcastError { event_type: event_type.to_owned(), message: message.into() }
    }
}

/// The layout version of `event_type` written today: one past its last step, 1 without any.
pub fn current_version(upcasters: &[Upcaster], event_type: &str) -> u32 {
    upcasters
        .iter()
        .filter(|upcaster| upcaster.event_type == event_type)
        .map(|upcaster| upcaster.from + 1)
        .max()
        .unwrap_or(1)
}

/// Brings a payload stored at `schema_version` to the current layout of `event_type`, one
/// step at a time.
pub fn to_current(
    upcasters: &[Upcaster],
    event_type: &str,
    schema_version: u32,
    mut payload: Value,
) -> Result<Value, UpcastError> {
    let current = current_version(upcasters, event_type);
    if schema_version == 0 {
        return Err(UpcastError::new(event_type, "schema version 0 was never written"));
    }
    if schema_version > current {
        return Err(UpcastError::new(
            event_type,
            format!(
                "it is at schema version {schema_version}, a newer release's; this one reads up \
                 to {current}"
            ),
        ));
    }
    for from in schema_version..current {
        let upcaster = upcasters
            .iter()
            .find(|upcaster| upcaster.event_type == event_type && upcaster.from == from)
            .ok_or_else(|| {
                UpcastError::new(event_type, format!("no upcaster from schema version {from}"))
            })?;
        payload = (upcaster.step)(payload).map_err(|reason| {
            UpcastError::new(event_type, format!("upcasting from schema version {from}: {reason}"))
        })?;
    }
    Ok(payload)
}

/// Checks a list of steps: each event type's steps go from 1, one version at a time, with
/// none named twice, and only for types the enum has. A list that fails this would leave
/// some stored version unreadable.
pub fn check_upcasters(upcasters: &[Upcaster], event_types: &[&str]) -> Result<(), String> {
    for upcaster in upcasters {
        if !event_types.contains(&upcaster.event_type) {
            return Err(format!("{upcaster:?}: the enum has no such event type"));
        }
        let current = current_version(upcasters, upcaster.event_type);
        for from in 1..current {
            let steps = upcasters
                .iter()
                .filter(|other| other.event_type == upcaster.event_type && other.from == from)
                .count();
            if steps != 1 {
                return Err(format!(
                    "{} has {steps} upcasters from schema version {from}, not one",
                    upcaster.event_type
                ));
            }
        }
    }
    Ok(())
}

/// The event types of an event enum, read from its own `Deserialize`: the names of its
/// variants, which are the stored `event_type`s (an event is stored as its variant's fields
/// and read back tagged by its type). Derived from the code, so no list can fall behind it.
///
/// Panics if `E` is not an enum deserialised by name, which every event enum is.
pub fn variant_names<E: DeserializeOwned>() -> &'static [&'static str] {
    let mut names = None;
    // The probe refuses to produce a value once it has the names: the error is expected.
    let _ = E::deserialize(VariantProbe { names: &mut names });
    names.expect("an event enum is deserialised as an enum by variant name")
}

/// A deserialiser that only answers "which variants do you have?".
struct VariantProbe<'a> {
    names: &'a mut Option<&'static [&'static str]>,
}

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probed for variant names only")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: std::fmt::Display>(_: T) -> Probed {
        Probed
    }
}

impl<'de> de::Deserializer<'de> for VariantProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.names = Some(variants);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Shapes {
        Circle { r: f64 },
        Square { side: f64 },
        Dot,
    }

    fn renamed(mut payload: Value) -> Result<Value, String> {
        let object = payload.as_object_mut().ok_or("not an object")?;
        let r = object.remove("radius").ok_or("no radius")?;
        object.insert("r".into(), r);
        Ok(payload)
    }

    fn doubled(mut payload: Value) -> Result<Value, String> {
        let r = payload["r"].as_f64().ok_or("no r")?;
        payload["r"] = json!(r * 2.0);
        Ok(payload)
    }

    const STEPS: &[Upcaster] = &[
        Upcaster { event_type: "Circle", from: 2, step: doubled },
        Upcaster { event_type: "Circle", from: 1, step: renamed },
    ];

    #[test]
    fn an_enums_variants_are_its_event_types() {
        assert_eq!(variant_names::<Shapes>(), ["Circle", "Square", "Dot"]);
    }

    #[test]
    fn the_current_version_is_one_past_the_last_step() {
        assert_eq!(current_version(STEPS, "Circle"), 3);
        assert_eq!(current_version(STEPS, "Square"), 1);
    }

    #[test]
    fn steps_apply_in_a_chain_from_the_stored_version() {
        let from_1 = to_current(STEPS, "Circle", 1, json!({ "radius": 1.5 })).unwrap();
        assert_eq!(from_1, json!({ "r": 3.0 }));
        let from_2 = to_current(STEPS, "Circle", 2, json!({ "r": 1.5 })).unwrap();
        assert_eq!(from_2, json!({ "r": 3.0 }));
        let current = to_current(STEPS, "Circle", 3, json!({ "r": 1.5 })).unwrap();
        assert_eq!(current, json!({ "r": 1.5 }));
    }

    #[test]
    fn a_newer_version_or_a_failing_step_is_an_error_naming_the_type() {
        let newer = to_current(STEPS, "Square", 2, json!({})).unwrap_err();
        assert!(newer.message.contains("newer release"), "{newer}");
        let broken = to_current(STEPS, "Circle", 1, json!({ "r": 1.0 })).unwrap_err();
        assert_eq!(broken.event_type, "Circle");
        assert!(broken.message.contains("from schema version 1: no radius"), "{broken}");
        assert!(to_current(STEPS, "Dot", 0, json!(null)).is_err());
    }

    #[test]
    fn a_gap_a_duplicate_or_an_unknown_type_in_the_steps_is_refused() {
        let types = variant_names::<Shapes>();
        assert_eq!(check_upcasters(STEPS, types), Ok(()));
        let gap = [Upcaster { event_type: "Circle", from: 2, step: doubled }];
        assert!(
            check_upcasters(&gap, types).unwrap_err().contains("0 upcasters from schema version 1")
        );
        let twice = [
            Upcaster { event_type: "Dot", from: 1, step: doubled },
            Upcaster { event_type: "Dot", from: 1, step: renamed },
        ];
        assert!(check_upcasters(&twice, types).is_err());
        let unknown = [Upcaster { event_type: "Triangle", from: 1, step: doubled }];
        assert!(check_upcasters(&unknown, types).unwrap_err().contains("no such event type"));
    }
}
