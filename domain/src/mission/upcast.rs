//! The mission events' layout history: every schema version bump of a mission event type, and
//! the pure step that reads the older layout as the newer one (see [`crate::upcast`]).
//!
//! | event type | version | what changed |
//! |---|---|---|
//! | `MissionStarted` | 2 | `lease_ms` added: the length of the lease granted, which the holder renews by. Version 1 held only its end, so the step takes the difference from the start |
//!
//! Each version ever written keeps a golden file under `tests/golden/events/mission/`.

use serde_json::Value;

use crate::aggregate::Upcaster;

pub(super) const UPCASTERS: &[Upcaster] =
    &[Upcaster { event_type: "MissionStarted", from: 1, step: started_v1_to_v2 }];

/// `MissionStarted` v1 → v2: `lease_ms` is what the start granted, `lease_expires_at_ms −
/// at_ms` (the aggregate set the expiry as the start's time plus the lease, saturating).
fn started_v1_to_v2(mut payload: Value) -> Result<Value, String> {
    let field = |name: &str| payload[name].as_i64().ok_or_else(|| format!("no integer {name}"));
    let lease_ms = field("lease_expires_at_ms")?.saturating_sub(field("at_ms")?).max(0);
    let object = payload.as_object_mut().ok_or("the payload is not an object")?;
    object.insert("lease_ms".into(), Value::from(lease_ms));
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::aggregate::DomainEvent;
    use crate::mission::MissionEvent;

    #[test]
    fn a_version_1_start_loads_with_the_lease_it_granted() {
        let v1 = json!({
            "worker_id": "w1",
            "attempt": 2,
            "lease_expires_at_ms": 1_700_000_030_000_i64,
            "at_ms": 1_700_000_000_000_i64,
        });
        let event = MissionEvent::upcast("MissionStarted", 1, v1).unwrap();
        assert_eq!(
            event,
            MissionEvent::MissionStarted {
                worker_id: "w1".into(),
                attempt: 2,
                lease_ms: 30_000,
                lease_expires_at_ms: 1_700_000_030_000,
                at_ms: 1_700_000_000_000,
            }
        );
        assert_eq!(event.schema_version(), 2, "new starts are written at version 2");
    }

    #[test]
    fn a_version_1_start_without_its_times_is_an_error_not_a_guess() {
        let broken = json!({ "worker_id": "w1", "attempt": 1, "at_ms": 5 });
        let error = MissionEvent::upcast("MissionStarted", 1, broken).unwrap_err();
        assert!(error.message.contains("lease_expires_at_ms"), "{error}");
    }

    #[test]
    fn a_version_2_start_without_its_lease_is_not_read_as_version_1() {
        let v2_missing = json!({
            "worker_id": "w1", "attempt": 1, "lease_expires_at_ms": 30_005, "at_ms": 5,
        });
        assert!(MissionEvent::upcast("MissionStarted", 2, v2_missing).is_err());
    }
}
