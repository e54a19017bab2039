//! A mission's history as an MCP resource, `brain://missions/{mission_id}/history`: every
//! event of the mission, oldest first, as `GET /api/missions/{mission_id}/events` gives them
//! (and under its permission, `missions.read`). Listing shows the newest missions a page at
//! a time ([`HISTORIES_PAGE_MAX`]); a history larger than [`HISTORY_BYTES_MAX`] is cut at
//! an event's end and says so.

use domain::api_key::Permission;
use rmcp::model::{
    ListResourcesResult, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};
use serde_json::json;

use super::server::Call;
use super::tools::parse;
use crate::api::AppState;
use crate::api::auth::{self, Access};
use crate::api::error::{ApiError, ErrorCode, refused};
use crate::api::extract::parse_id;
use crate::api::missions::{self, MissionListQuery};

/// Missions one `resources/list` page names.
pub const HISTORIES_PAGE_MAX: u32 = 50;
/// Largest history one read returns, in bytes of JSON; past it, the events that fit and
/// `complete: false` (the HTTP route has them all).
pub const HISTORY_BYTES_MAX: usize = 4 * 1024 * 1024;

const PREFIX: &str = "brain://missions/";
const SUFFIX: &str = "/history";
const MIME: &str = "application/json";

fn uri_of(mission_id: &str) -> String {
    format!("{PREFIX}{mission_id}{SUFFIX}")
}

/// The resource template clients fill in with a mission's id.
pub(super) fn history_template() -> ResourceTemplate {
    ResourceTemplate::new(uri_of("{mission_id}"), "mission history")
        .with_description(
            "Every event of a mission, oldest first: who enqueued it, each attempt, its LLM and \
             tool calls, its result or errors (needs missions.read)",
        )
        .with_mime_type(MIME)
}

/// The newest missions' histories, a page at a time (`cursor`: the previous page's).
pub(super) async fn list_histories(
    app: &AppState,
    call: &Call,
    cursor: Option<String>,
) -> Result<ListResourcesResult, ApiError> {
    auth::check_access(Access::needs(Permission::MissionsRead), &call.principal)?;
    let query: MissionListQuery = parse(&json!({ "limit": HISTORIES_PAGE_MAX, "cursor": cursor }))?;
    let page = missions::mission_page(app, query).await?;
    let resources = page
        .missions
        .into_iter()
        .map(|row| {
            let name = row.name.unwrap_or_else(|| row.mission_id.clone());
            Resource::new(uri_of(&row.mission_id), format!("history of {name}"))
                .with_description(format!("mission {} ({})", row.mission_id, row.status))
                .with_mime_type(MIME)
        })
        .collect();
    let mut listed = ListResourcesResult::with_all_items(resources);
    listed.next_cursor = page.next_cursor;
    Ok(listed)
}

/// One mission's history.
pub(super) async fn read_history(
    app: &AppState,
    call: &Call,
    uri: &str,
) -> Result<ReadResourceResult, ApiError> {
    auth::check_access(Access::needs(Permission::MissionsRead), &call.principal)?;
    let Some(raw) = uri.strip_prefix(PREFIX).and_then(|rest| rest.strip_suffix(SUFFIX)) else {
        let message = format!("{uri:?} is no resource here; read {}", uri_of("{mission_id}"));
        return Err(refused(ErrorCode::InvalidField, Some("uri"), message));
    };
    let mission_id = parse_id("uri", raw)?;
    let events = missions::history(app, &mission_id).await?;
    let (mut kept, mut bytes) = (Vec::with_capacity(events.len()), 0usize);
    let total = events.len();
    for event in events {
        let size = serde_json::to_vec(&event).map_or(0, |text| text.len() + 1);
        if bytes + size > HISTORY_BYTES_MAX {
            break;
        }
        bytes += size;
        kept.push(event);
    }
    let complete = kept.len() == total;
    let body = json!({
        "mission_id": mission_id.to_string(),
        "complete": complete,
        "events_total": total,
        "events": kept,
    });
    let contents = ResourceContents::text(body.to_string(), uri).with_mime_type(MIME);
    Ok(ReadResourceResult::new(vec![contents]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_the_uri_of_a_mission_id_placeholder() {
        assert_eq!(history_template().uri_template, "brain://missions/{mission_id}/history");
        assert_eq!(uri_of("m1"), "brain://missions/m1/history");
    }
}
