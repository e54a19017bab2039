//! `event_type_stats`: how many events of each type each stream type has recorded, and when
//! the latest arrived. A dashboard's view of what the system is doing, and the smallest
//! projector that exercises the whole runtime.

use std::collections::BTreeMap;

use crate::Unreadable;
use domain::RecordedEvent;
use time::OffsetDateTime;

use crate::{Projector, Reads};

pub const NAME: &str = "event_type_stats";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub stream_type: String,
    pub event_type: String,
    pub events: u64,
    pub last_position: u64,
    pub last_recorded_at: OffsetDateTime,
}

/// Reads every stream type.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventTypeStats;

impl Projector for EventTypeStats {
    type Change = Counted;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        Reads::All
    }

    fn apply(&self, event: &RecordedEvent, changes: &mut Vec<Counted>) -> Result<(), Unreadable> {
        changes.push(Counted {
            stream_type: event.stream_type.as_str().to_owned(),
            event_type: event.event_type.clone(),
            events: 1,
            last_position: event.global_position,
            last_recorded_at: event.recorded_at,
        });
        Ok(())
    }
}

/// Sums a batch's changes per (stream type, event type), so a store writes each row once.
pub fn merge(changes: Vec<Counted>) -> Vec<Counted> {
    let mut merged: BTreeMap<(String, String), Counted> = BTreeMap::new();
    for change in changes {
        let key = (change.stream_type.clone(), change.event_type.clone());
        merged
            .entry(key)
            .and_modify(|total| {
                total.events += change.events;
                if change.last_position > total.last_position {
                    total.last_position = change.last_position;
                    total.last_recorded_at = change.last_recorded_at;
                }
            })
            .or_insert(change);
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(event_type: &str, last_position: u64) -> Counted {
        Counted {
            stream_type: "mission".into(),
            event_type: event_type.into(),
            events: 1,
            last_position,
            last_recorded_at: OffsetDateTime::from_unix_timestamp(last_position as i64).unwrap(),
        }
    }

    #[test]
    fn merging_sums_counts_and_keeps_the_latest_position_per_type() {
        let merged =
            merge(vec![counted("A", 3), counted("B", 4), counted("A", 7), counted("A", 5)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].event_type, "A");
        assert_eq!((merged[0].events, merged[0].last_position), (3, 7));
        assert_eq!(merged[0].last_recorded_at.unix_timestamp(), 7);
        assert_eq!((merged[1].events, merged[1].last_position), (1, 4));
    }
}
