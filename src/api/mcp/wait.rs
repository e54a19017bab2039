//! `wait_for_mission`: the mission read again and again until it has finished or the wait
//! is over, with an MCP progress notification at each change of status or attempt (and at
//! least every [`PROGRESS_EVERY_S`]) when the client gave a progress token. The wait is
//! bounded ([`WAIT_TIMEOUT_S_MAX`]); past it the answer is the mission as it still runs,
//! `finished: false`, and the client waits again if it wants to.

use std::time::Duration;

use domain::mission::MissionStatus;
use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorCode, refused};
use crate::api::extract::parse_id;
use crate::api::missions::{self, MissionView};

/// The wait when the call names none.
pub const WAIT_TIMEOUT_S_DEFAULT: u64 = 60;
/// Longest wait one call may ask for (longer is refused, not clamped): a call holds one of
/// the serve's MCP calls in flight while it waits.
pub const WAIT_TIMEOUT_S_MAX: u64 = 300;
/// First pause between two reads of the mission; each pause doubles up to
/// [`POLL_MS_MAX`], so a short mission is seen finished soon and a long one costs a read a
/// second.
pub const POLL_MS_MIN: u64 = 10;
pub const POLL_MS_MAX: u64 = 1_000;
/// A progress notification at least this often while the mission runs unchanged, so a
/// client sees the wait is alive.
pub const PROGRESS_EVERY_S: u64 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitArgs {
    mission_id: String,
    #[serde(default)]
    timeout_s: Option<u64>,
}

fn finished(status: MissionStatus) -> bool {
    matches!(status, MissionStatus::Completed | MissionStatus::Failed | MissionStatus::Cancelled)
}

/// Waits for the mission; `{"finished", "mission"}`.
pub(super) async fn wait(
    app: &AppState,
    args: WaitArgs,
    context: &RequestContext<RoleServer>,
) -> Result<Value, ApiError> {
    let mission_id = parse_id("mission_id", &args.mission_id)?;
    let timeout_s = args.timeout_s.unwrap_or(WAIT_TIMEOUT_S_DEFAULT);
    if !(1..=WAIT_TIMEOUT_S_MAX).contains(&timeout_s) {
        let message = format!("must be 1 to {WAIT_TIMEOUT_S_MAX} seconds, got {timeout_s}");
        return Err(refused(ErrorCode::InvalidField, Some("timeout_s"), message));
    }
    let token = context.meta.get_progress_token();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(timeout_s);
    let mut pause = Duration::from_millis(POLL_MS_MIN);
    let mut last: Option<(MissionStatus, u32)> = None;
    let mut last_sent = start;
    loop {
        let view: MissionView = missions::load_view(app, &mission_id).await?;
        let done = finished(view.status);
        let now = Instant::now();
        if done || now >= deadline {
            return Ok(json!({ "finished": done, "mission": view }));
        }
        let seen = (view.status, view.attempt);
        let heartbeat = now - last_sent >= Duration::from_secs(PROGRESS_EVERY_S);
        if let Some(token) = &token
            && (last != Some(seen) || heartbeat)
        {
            let elapsed = now - start;
            let message = format!("{} (attempt {})", view.status, view.attempt);
            // The elapsed time is the progress: it only grows, as the protocol asks.
            let progress = ProgressNotificationParam::new(token.clone(), elapsed.as_secs_f64())
                .with_total(timeout_s as f64)
                .with_message(message);
            // A client gone stops the wait through the request's cancellation below.
            let _ = context.peer.notify_progress(progress).await;
            last_sent = now;
        }
        last = Some(seen);
        let sleep = pause.min(deadline.saturating_duration_since(now));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = context.ct.cancelled() => {
                let message = "the client cancelled the wait".to_owned();
                return Err(refused(ErrorCode::RequestTimeout, None, message));
            }
        }
        pause = (pause * 2).min(Duration::from_millis(POLL_MS_MAX));
    }
}
