//! Time travel in the API: `?at_position=N` or `?at=<RFC 3339>` on the routes that show one
//! aggregate (a mission, an agent) answer it as the log held it then, folded from its events
//! up to that moment ([`crate::eventlog::command::load_as_of`]), with `as_of` naming the last
//! of them.

use domain::RecordedEvent;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use crate::eventlog::store::AsOf;

/// A moment of the log to see the aggregate as it stood then; at most one.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// Right after the event at this global position was appended (1 or more).
    #[param(minimum = 1)]
    at_position: Option<u64>,
    /// At this time (RFC 3339): the events recorded at or before it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    at: Option<OffsetDateTime>,
}

impl AsOfQuery {
    /// The moment asked for, if one is; a position 0 or both parameters are refused.
    pub fn as_of(&self) -> Result<Option<AsOf>, ApiError> {
        match (self.at_position, self.at) {
            (None, None) => Ok(None),
            (Some(0), _) => Err(ApiError::InvalidField {
                field: "at_position",
                message: "positions start at 1".into(),
            }),
            (Some(position), None) => Ok(Some(AsOf::Position(position))),
            (None, Some(at)) => Ok(Some(AsOf::Time(at))),
            (Some(_), Some(_)) => Err(ApiError::InvalidField {
                field: "at",
                message: "give at_position or at, not both".into(),
            }),
        }
    }
}

/// The event a view of an earlier moment ends with.
#[derive(Debug, Serialize, ToSchema)]
pub struct AsOfView {
    /// Its global position.
    pub position: u64,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
}

impl AsOfView {
    /// The view of the last of `events`, if there is one.
    pub fn of(events: &[RecordedEvent]) -> Option<AsOfView> {
        events.last().map(|event| AsOfView {
            position: event.global_position,
            recorded_at: event
                .recorded_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        })
    }
}
