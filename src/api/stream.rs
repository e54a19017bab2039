//! `GET /api/missions/{id}/stream`: a mission's answer as it is generated, as server-sent
//! events, from the NATS core subject its agent publishes on. Ephemeral: a client sees the
//! pieces published while it is connected; the whole answer is in the mission once it
//! completes. The stream ends at the call's last piece, when the mission is found finished
//! (checked every [`FINISHED_CHECK`] while quiet), after [`IDLE_MAX`] without a piece, or after
//! [`STREAM_MAX`].

use crate::api::auth::Access;
use domain::api_key::Permission;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use utoipa_axum::routes;

use super::error::{ErrorCode, errors, refused};
use super::extract::MissionId;
use super::missions::load_view;
use super::{ApiError, ApiRoutes, AppState};
use crate::llm::tokens::{TokenMessage, subject};

/// Longest wait for the next piece before the stream ends.
pub const IDLE_MAX: Duration = Duration::from_secs(600);
/// Longest one stream lasts.
pub const STREAM_MAX: Duration = Duration::from_secs(3_600);
/// How often a quiet stream checks whether its mission finished (then it ends).
pub const FINISHED_CHECK: Duration = Duration::from_secs(2);

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(Access::needs(Permission::MissionsRead), routes!(mission_stream))
}

errors! { StreamErrors = READ + PATH_ID + [MissionNotFound, BusUnavailable] }

/// `GET /api/missions/{mission_id}/stream`: `token` events (`{mission_id, attempt, seq,
/// text}`), then `done` when the call ends.
#[utoipa::path(get, path = "/api/missions/{mission_id}/stream", tag = "missions",
    params(MissionId),
    responses(
        (status = 200, description = "`text/event-stream`: `token` events as the answer is generated, then `done`"),
        StreamErrors,
    ))]
async fn mission_stream(
    State(app): State<AppState>,
    MissionId(stream_id): MissionId,
) -> Result<Response, ApiError> {
    load_view(&app, &stream_id).await?;
    let subscriber = subscribe_tokens(&app, stream_id.as_str()).await?;
    let deadline = tokio::time::Instant::now() + STREAM_MAX;
    let state = (subscriber, false, app, stream_id);
    let events =
        futures::stream::unfold(state, move |(mut subscriber, done, app, stream_id)| async move {
            if done {
                return None;
            }
            let end = |why: String| {
                Event::default().event("done").data(serde_json::json!({ "ended": why }).to_string())
            };
            let idle_until = deadline.min(tokio::time::Instant::now() + IDLE_MAX);
            loop {
                let next = tokio::time::timeout(FINISHED_CHECK, subscriber.next());
                match tokio::time::timeout_at(idle_until, next).await {
                    // Idle for too long, or past the longest stream.
                    Err(_) => {
                        return Some((end("idle".into()), (subscriber, true, app, stream_id)));
                    }
                    Ok(Ok(None)) => {
                        return Some((
                            end("unsubscribed".into()),
                            (subscriber, true, app, stream_id),
                        ));
                    }
                    Ok(Ok(Some(message))) => {
                        let Ok(token) = serde_json::from_slice::<TokenMessage>(&message.payload)
                        else {
                            continue;
                        };
                        let data = serde_json::to_string(&token).unwrap_or_default();
                        let name = if token.done { "done" } else { "token" };
                        return Some((
                            Event::default().event(name).data(data),
                            (subscriber, token.done, app, stream_id),
                        ));
                    }
                    // Nothing for a while: a mission that finished will say nothing more.
                    Ok(Err(_)) => {
                        if let Ok(view) = load_view(&app, &stream_id).await
                            && view.status.is_finished()
                        {
                            let status = serde_json::to_value(view.status).unwrap_or_default();
                            let why = status.as_str().unwrap_or("finished").to_owned();
                            return Some((end(why), (subscriber, true, app, stream_id)));
                        }
                    }
                }
            }
        })
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// A subscription to a mission's token subject, or `503 bus_unavailable`.
pub(super) async fn subscribe_tokens(
    app: &AppState,
    mission_id: &str,
) -> Result<async_nats::Subscriber, ApiError> {
    app.nats
        .subscribe(subject(&app.namespace, mission_id))
        .await
        .map_err(|error| refused(ErrorCode::BusUnavailable, None, format!("NATS: {error}")))
}

/// A channel's receiving end as a stream (the SSE answers of `/v1` and chat).
pub(super) fn receiver_stream<T>(
    mut received: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |context| received.poll_recv(context))
}
