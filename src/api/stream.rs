//! `GET /api/missions/{id}/stream`: a mission's answer as it is generated, as server-sent
//! events, from the NATS core subject its agent publishes on. Ephemeral: a client sees the
//! pieces published while it is connected; the whole answer is in the mission once it
//! completes. The stream ends at the call's last piece, after [`IDLE_MAX`] without one, or
//! after [`STREAM_MAX`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use utoipa_axum::routes;

use super::missions::{load_view, parse_mission_id};
use super::{ApiError, ApiRoutes, AppState, ErrorBody};
use crate::llm::tokens::{TokenMessage, subject};

/// Longest wait for the next piece before the stream ends.
pub const IDLE_MAX: Duration = Duration::from_secs(600);
/// Longest one stream lasts.
pub const STREAM_MAX: Duration = Duration::from_secs(3_600);

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(mission_stream))
}

/// `GET /api/missions/{mission_id}/stream`: `token` events (`{mission_id, attempt, seq,
/// text}`), then `done` when the call ends.
#[utoipa::path(get, path = "/api/missions/{mission_id}/stream", tag = "missions",
    params(("mission_id" = uuid::Uuid, Path, description = "The mission")),
    responses(
        (status = 200, description = "`text/event-stream`: `token` events as the answer is generated, then `done`"),
        (status = 400, description = "`invalid_field` (`mission_id`)", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`", body = ErrorBody),
    ))]
async fn mission_stream(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
) -> Result<Response, ApiError> {
    let stream_id = parse_mission_id(&mission_id)?;
    load_view(&app, &stream_id).await?;
    let subscriber =
        app.nats.subscribe(subject(&app.namespace, stream_id.as_str())).await.map_err(|error| {
            super::refused(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                None,
                format!("NATS: {error}"),
            )
        })?;
    let deadline = tokio::time::Instant::now() + STREAM_MAX;
    let events =
        futures::stream::unfold((subscriber, false), move |(mut subscriber, done)| async move {
            if done {
                return None;
            }
            let next = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + IDLE_MAX),
                subscriber.next(),
            )
            .await;
            let message = match next {
                Ok(Some(message)) => message,
                // Idle, past the longest stream, or the subscription ended: the stream ends.
                _ => {
                    return Some((
                        Event::default().event("done").data("{\"ended\":\"idle\"}"),
                        (subscriber, true),
                    ));
                }
            };
            let Ok(token) = serde_json::from_slice::<TokenMessage>(&message.payload) else {
                return Some((
                    Event::default().comment("unreadable piece skipped"),
                    (subscriber, false),
                ));
            };
            let data = serde_json::to_string(&token).unwrap_or_default();
            if token.done {
                return Some((Event::default().event("done").data(data), (subscriber, true)));
            }
            Some((Event::default().event("token").data(data), (subscriber, false)))
        })
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
