//! `GET /ws/events`: the live event feed over WebSocket, one JSON text message per event,
//! optionally filtered and resumed from a position.
//!
//! `from` is the last global position the client has seen. A session sends every selected
//! event with a greater position, in position order, each once: first what it missed, read
//! from PostgreSQL, then live events from the process's shared feed (`crate::eventlog::feed`). The two
//! join without a gap or a duplicate because a session subscribes to the feed *before* it
//! reads how far the feed has got (P): everything after P then arrives through the
//! subscription, everything up to P comes from the store, and whatever arrives twice is
//! recognised by its position, which only ever grows. A long replay is done before
//! subscribing, so that it cannot overflow the live buffer; only its last stretch (at most a
//! page) overlaps the subscription.
//!
//! The server pings every client each `ping_interval` (the feed's configuration, 15 s by
//! default) and drops one that has answered none of the last [`PINGS_UNANSWERED_MAX`] pings
//! when the next is due: a peer that vanished without a word (a laptop closed, a NAT that
//! forgot the connection) holds its place, its buffer and its descriptor for at most
//! `(PINGS_UNANSWERED_MAX + 1) * ping_interval`, then the close timeout.
//!
//! The session ends with a close frame whose reason says why and where to resume: a slow
//! consumer (more than the buffer behind, or one write taking longer than the send timeout)
//! gets code 4000, a client answering no ping 4001, server shutdown 1001, a failed store
//! read 1011. The position in the reason
//! is the last one the session dealt with: every event up to it was either written before the
//! close frame or not selected, so a client that receives the frame resumes from there without
//! loss.

use crate::api::auth::Access;
use domain::api_key::Permission;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{StreamId, StreamType};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use uuid::Uuid;

use super::error::{ErrorCode, errors, refused};
use super::{ApiError, ApiQuery, ApiRoutes, AppState};
use crate::eventlog::feed::{FeedEvent, FeedHandle};
use crate::eventlog::store::{self, Selection};

/// Close code of a client dropped for being slow (the 4000-4999 range is the application's).
pub const CLOSE_SLOW_CONSUMER: u16 = 4000;
/// Close code of a client dropped for answering no ping.
pub const CLOSE_NO_PONG: u16 = 4001;
/// Pings in a row a client may leave unanswered; when the next is due, it is dropped.
pub const PINGS_UNANSWERED_MAX: u32 = 2;
/// Close code when the server shuts down or its feed stops.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code when the store could not be read for a replay.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Longest close reason a close frame can carry.
const CLOSE_REASON_BYTES_MAX: usize = 123;
/// Most live events written to a client before one flush.
const WRITE_BATCH_EVENTS_MAX: usize = 64;
/// Bytes of live events after which a batch is flushed: a client's write buffer keeps its
/// largest batch's size, and ten thousand behind at once would each keep 64 events' worth.
const WRITE_BATCH_BYTES_MAX: usize = 16 * 1024;
/// What a client may send: it has nothing to say beyond control frames.
const CLIENT_MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// The socket's read buffer. Small, because every read attempt zero-fills it first, and a
/// session attempts one per event it sends.
const READ_BUFFER_BYTES: usize = 512;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(Access::needs(Permission::EventsRead), utoipa_axum::routes!(events))
}

/// Every parameter as text, so that each bad one is refused naming its field.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    /// The last global position the client has seen: events after it are replayed from the
    /// store, then the feed goes on live. Absent: live from now.
    from: Option<String>,
    /// Stream types to receive, comma-separated (e.g. `mission`).
    stream_type: Option<String>,
    /// One mission's events only.
    mission_id: Option<String>,
    /// One stream's events only (any stream type).
    stream_id: Option<String>,
    /// `true` (with `mission_id`): the mission's answer pieces too, as `{"token": {...}}`
    /// messages between its events while its agent calls the model.
    tokens: Option<String>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField { field, message: message.into() }
}

fn parse(query: FeedQuery) -> Result<(Option<u64>, Selection), ApiError> {
    let from = match query.from {
        None => None,
        Some(from) => Some(from.parse::<u64>().map_err(|_| {
            invalid(
                "from",
                format!("must be the last global position seen (0 or more), got {from:?}"),
            )
        })?),
    };
    let mut stream_types = Vec::new();
    if let Some(list) = query.stream_type {
        for name in list.split(',') {
            let stream_type = StreamType::parse(name)
                .map_err(|error| invalid("stream_type", error.to_string()))?;
            if !stream_types.contains(&stream_type) {
                stream_types.push(stream_type);
            }
        }
    }
    let stream_id = match (query.mission_id, query.stream_id) {
        (Some(_), Some(_)) => {
            return Err(invalid("stream_id", "give mission_id or stream_id, not both"));
        }
        (Some(mission_id), None) => {
            let id = Uuid::parse_str(&mission_id).map_err(|_| {
                invalid("mission_id", format!("must be a UUID, got {mission_id:?}"))
            })?;
            let mission = StreamType::parse("mission").expect("a valid stream type");
            if stream_types.is_empty() {
                stream_types.push(mission);
            } else if !stream_types.contains(&mission) {
                return Err(invalid(
                    "mission_id",
                    "selects a mission stream, which stream_type leaves out",
                ));
            }
            Some(StreamId::from(id))
        }
        // No index leads to a stream id without its type: such a replay would scan the log.
        (None, Some(_)) if stream_types.is_empty() => {
            return Err(invalid(
                "stream_id",
                "needs a stream_type: no index serves a stream id alone",
            ));
        }
        (None, Some(stream_id)) => Some(
            StreamId::parse(stream_id).map_err(|error| invalid("stream_id", error.to_string()))?,
        ),
        (None, None) => None,
    };
    Ok((from, Selection { stream_types, stream_id }))
}

errors! {
    FeedErrors = READ + QUERY + [
        NotWebsocket, NotWebsocketUpgrade, TooManyClients, BusUnavailable
    ]
}

/// Checks the query (a bad one gets a plain 400 before any upgrade), then hands the
/// connection to a session.
#[utoipa::path(get, path = "/ws/events", tag = "events", params(FeedQuery),
    responses(
        (status = 101, description = "WebSocket: one JSON text message per event (the shape of `GET /api/events`), in position order; closed with 4000 and a reason naming the position to resume from when the client falls behind, 4001 when it answers no ping, 1001 at shutdown"),
        FeedErrors,
    ))]
async fn events(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<FeedQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let tokens = match (query.tokens.as_deref(), query.mission_id.as_deref()) {
        (None | Some("false"), _) => None,
        (Some("true"), Some(mission_id)) => Some(mission_id.to_owned()),
        (Some("true"), None) => return Err(invalid("tokens", "needs a mission_id")),
        (Some(other), _) => return Err(invalid("tokens", format!("true or false, got {other:?}"))),
    };
    let (from, selection) = parse(query)?;
    // Subscribed before the upgrade: a piece published once the client is connected is not
    // missed, and a NATS that cannot subscribe is a clear refusal.
    let tokens = match tokens {
        None => None,
        Some(mission_id) => Some(super::stream::subscribe_tokens(&app, &mission_id).await?),
    };
    if let Some(from) = from {
        // A position beyond the head was never handed out: resuming there would wait in
        // silence for events the client believes it has (say, from another store).
        let head = app.feed.head().await?;
        if from > head {
            let message = format!("is beyond the last position of the log ({head})");
            return Err(invalid("from", message));
        }
    }
    let upgrade = upgrade.map_err(|rejection| {
        // Only an upgrade of another protocol is 426; the route answers GET alone, so every
        // other refusal is of the request's headers, a 400.
        let code = if rejection.status() == StatusCode::UPGRADE_REQUIRED {
            ErrorCode::NotWebsocketUpgrade
        } else {
            ErrorCode::NotWebsocket
        };
        let message =
            format!("GET /ws/events takes a WebSocket upgrade: {}", rejection.body_text());
        refused(code, None, message)
    })?;
    let feed = app.feed.clone();
    let Some(admission) = feed.admit() else {
        let max = feed.config().clients_max;
        let message = format!(
            "this server holds its most WebSocket clients ({max}); retry later or elsewhere"
        );
        return Err(refused(ErrorCode::TooManyClients, None, message));
    };
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_frame_size(CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| async move {
            let _admission = admission;
            session(socket, feed, selection, from, tokens).await
        }))
}

async fn session(
    socket: WebSocket,
    feed: FeedHandle,
    selection: Selection,
    from: Option<u64>,
    tokens: Option<async_nats::Subscriber>,
) {
    // Without `from`, the session starts where the feed is now; subscribing before the client
    // counts as connected means that a counted client misses nothing broadcast after that.
    let start = match from {
        None => {
            let live = feed.subscribe();
            Start::Live(live, feed.position())
        }
        Some(from) => Start::From(from),
    };
    let _client = feed.client();
    let sent = metrics::counter!("brain_ws_messages_sent_total");
    let mut session = Session { socket, feed, selection, last: 0, sent, tokens };
    let stop = session.feed.stopping().clone();
    let end = tokio::select! {
        end = session.stream(start) => Some(end),
        _ = stop.cancelled() => None,
    };
    let end = end.unwrap_or_else(|| End::Close {
        code: CLOSE_GOING_AWAY,
        reason: format!("server shutting down; resume with ?from={}", session.last),
    });
    if let End::Close { code: CLOSE_SLOW_CONSUMER, reason } = &end {
        session.feed.slow_drop();
        tracing::info!(%reason, "dropped a slow WebSocket client");
    }
    session.close(end).await;
}

/// Where a session starts.
enum Start {
    /// Subscribed, at the feed's position of that moment.
    Live(broadcast::Receiver<Arc<FeedEvent>>, u64),
    /// After this position, replaying first.
    From(u64),
}

/// One step of delivering live events.
#[derive(Debug)]
enum Delivery {
    /// Write these selected events; then everything up to `through` has been dealt with.
    Write { events: Vec<Arc<FeedEvent>>, through: u64 },
    /// Replay from the store up to `to` (inclusive) first.
    Fill { to: u64 },
}

/// How to deliver live events (in broadcast order) after position `last`: events at or below
/// it were already sent (by the replay, which overlaps the subscription) and are skipped; a
/// hole before an event (which the feed never leaves, but a session does not rely on that) is
/// filled from the store; unselected events only move the position on.
fn plan(
    last: u64,
    batch: impl IntoIterator<Item = Arc<FeedEvent>>,
    selection: &Selection,
) -> Vec<Delivery> {
    let mut steps = Vec::new();
    let mut events = Vec::new();
    let mut through = last;
    for event in batch {
        if event.position <= through {
            continue;
        }
        if event.position > through + 1 {
            if through > last || !events.is_empty() {
                steps.push(Delivery::Write { events: std::mem::take(&mut events), through });
            }
            steps.push(Delivery::Fill { to: event.position - 1 });
        }
        through = event.position;
        if event.selected_by(selection) {
            events.push(event);
        }
    }
    if through > last {
        steps.push(Delivery::Write { events, through });
    }
    steps
}

/// How a session ends.
enum End {
    /// The client closed the connection, or it broke.
    ClientLeft,
    /// We close, and say why.
    Close { code: u16, reason: String },
}

struct Session {
    socket: WebSocket,
    feed: FeedHandle,
    selection: Selection,
    /// The last position dealt with: written to the socket, or not selected.
    last: u64,
    /// Events written, for the metrics.
    sent: metrics::Counter,
    /// A mission's token subject, when asked for.
    tokens: Option<async_nats::Subscriber>,
}

/// A step of the live loop, taken out of `select!` so that its handling may borrow freely.
enum Step {
    Live(Result<Arc<FeedEvent>, RecvError>),
    Client(Option<Result<Message, axum::Error>>),
    Token(Option<async_nats::Message>),
    Ping,
}

/// The next message on the token subject; never, without one.
async fn next_token(tokens: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match tokens {
        Some(subscriber) => subscriber.next().await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn stream(&mut self, start: Start) -> End {
        match self.replay_then_follow(start).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn replay_then_follow(&mut self, start: Start) -> Result<std::convert::Infallible, End> {
        let mut live = match start {
            Start::Live(live, position) => {
                self.last = position;
                live
            }
            Start::From(from) => {
                self.last = from;
                let page = u64::from(self.feed.config().page_events_max);
                while self.feed.position().saturating_sub(self.last) > page {
                    self.replay(self.feed.position()).await?;
                }
                let live = self.feed.subscribe();
                self.replay(self.feed.position()).await?;
                live
            }
        };
        let ping_every = self.feed.config().ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Pings sent since the client's last pong. The socket is read before a ping is sent
        // (the `select!` below polls it first), so a pong that arrived is always counted.
        let mut unanswered = 0u32;
        let mut batch = Vec::with_capacity(WRITE_BATCH_EVENTS_MAX);
        loop {
            // Live events first: a wake for an event then polls nothing else, which matters
            // at ten thousand wakes per event (reading the socket, a close frame included,
            // waits until events pause).
            let step = tokio::select! {
                biased;
                received = live.recv() => Step::Live(received),
                message = self.socket.recv() => Step::Client(message),
                token = next_token(&mut self.tokens) => Step::Token(token),
                _ = ping.tick() => Step::Ping,
            };
            match step {
                Step::Live(Ok(event)) => {
                    let mut bytes = event.json.len();
                    batch.push(event);
                    // Whatever else is waiting goes out in the same write.
                    while batch.len() < WRITE_BATCH_EVENTS_MAX && bytes < WRITE_BATCH_BYTES_MAX {
                        match live.try_recv() {
                            Ok(event) => {
                                bytes += event.json.len();
                                batch.push(event);
                            }
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                            Err(TryRecvError::Lagged(_)) => return Err(self.lagged()),
                        }
                    }
                    self.deliver(&mut batch).await?;
                }
                Step::Live(Err(RecvError::Lagged(_))) => return Err(self.lagged()),
                Step::Live(Err(RecvError::Closed)) => {
                    return Err(End::Close {
                        code: CLOSE_GOING_AWAY,
                        reason: format!("live feed stopped; resume with ?from={}", self.last),
                    });
                }
                Step::Client(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                    return Err(End::ClientLeft);
                }
                Step::Client(Some(Ok(Message::Pong(_)))) => unanswered = 0,
                Step::Client(Some(Ok(_))) => {}
                Step::Token(None) => self.tokens = None,
                Step::Token(Some(message)) => {
                    // A piece is not an event: it moves no position.
                    let Ok(token) = serde_json::from_slice::<serde_json::Value>(&message.payload)
                    else {
                        continue;
                    };
                    let text = serde_json::json!({ "token": token }).to_string();
                    self.write([(None, Message::Text(text.into()))], self.last).await?;
                }
                Step::Ping if unanswered >= PINGS_UNANSWERED_MAX => {
                    metrics::counter!("brain_ws_no_pong_drops_total").increment(1);
                    return Err(End::Close {
                        code: CLOSE_NO_PONG,
                        reason: format!(
                            "no pong to {unanswered} pings; resume with ?from={}",
                            self.last
                        ),
                    });
                }
                Step::Ping => {
                    self.write([(None, Message::Ping(Bytes::new()))], self.last).await?;
                    unanswered += 1;
                }
            }
        }
    }

    fn lagged(&self) -> End {
        let buffer = self.feed.config().buffer_events;
        End::Close {
            code: CLOSE_SLOW_CONSUMER,
            reason: format!(
                "slow consumer: over {buffer} events behind; resume with ?from={}",
                self.last
            ),
        }
    }

    /// Writes live events in order (see [`plan`]).
    async fn deliver(&mut self, batch: &mut Vec<Arc<FeedEvent>>) -> Result<(), End> {
        for step in plan(self.last, batch.drain(..), &self.selection) {
            match step {
                Delivery::Write { events, through } => {
                    let messages: Vec<_> = events
                        .iter()
                        .map(|event| (Some(event.position), text_message(event.json.clone())))
                        .collect();
                    self.write(messages, through).await?;
                }
                Delivery::Fill { to } => self.replay(to).await?,
            }
        }
        Ok(())
    }

    /// Sends the selected events in `last < position <= to` from the store, page by page.
    async fn replay(&mut self, to: u64) -> Result<(), End> {
        let page_max = self.feed.config().page_events_max.max(1) as usize;
        while self.last < to {
            let page = match self.feed.read(&self.selection, self.last, to).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "WebSocket replay could not read the store");
                    return Err(End::Close {
                        code: CLOSE_INTERNAL_ERROR,
                        reason: format!("cannot read the log; resume with ?from={}", self.last),
                    });
                }
            };
            // A short page is the last one (nothing else up to `to` is selected), unless the
            // store cut it at its byte bound.
            let bytes: usize =
                page.iter().map(|event| event.payload_json.len() + event.metadata_json.len()).sum();
            let through = match page.last() {
                Some(event) if page.len() >= page_max || bytes >= store::PAGE_BYTES_MAX => {
                    event.global_position as u64
                }
                _ => to,
            };
            let mut messages = Vec::with_capacity(page.len());
            for event in &page {
                let json = FeedEvent::encode_stored(event).map_err(|error| {
                    tracing::error!(%error, "WebSocket replay cannot encode an event");
                    End::Close {
                        code: CLOSE_INTERNAL_ERROR,
                        reason: format!("cannot encode an event; resume with ?from={}", self.last),
                    }
                })?;
                messages.push((Some(event.global_position as u64), text_message(json)));
            }
            self.write(messages, through).await?;
        }
        Ok(())
    }

    /// Writes messages (events carry their position) and flushes them, all within one send
    /// timeout; then everything up to `through` has been dealt with.
    async fn write(
        &mut self,
        messages: impl IntoIterator<Item = (Option<u64>, Message)>,
        through: u64,
    ) -> Result<(), End> {
        let timeout = self.feed.config().send_timeout();
        let deadline = Instant::now() + timeout;
        let (mut fed, mut events) = (0u64, 0u64);
        for (position, message) in messages {
            match tokio::time::timeout_at(deadline, self.socket.feed(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(End::ClientLeft),
                Err(_) => return Err(self.write_timed_out(timeout)),
            }
            fed += 1;
            // Handed to the socket: it goes out before any close frame written later.
            if let Some(position) = position {
                self.last = position;
                events += 1;
            }
        }
        self.last = self.last.max(through);
        self.sent.increment(events);
        if fed == 0 {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientLeft),
            Err(_) => Err(self.write_timed_out(timeout)),
        }
    }

    fn write_timed_out(&self, timeout: std::time::Duration) -> End {
        End::Close {
            code: CLOSE_SLOW_CONSUMER,
            reason: format!(
                "slow consumer: a write took over {} ms; resume with ?from={}",
                timeout.as_millis(),
                self.last
            ),
        }
    }

    /// Ends the connection within the close timeout: our close frame, then the client's
    /// answer; or, when the client closed, our answer to it.
    async fn close(mut self, end: End) {
        let timeout = self.feed.config().close_timeout;
        let goodbye = async {
            let End::Close { code, mut reason } = end else {
                return self.socket.flush().await;
            };
            // A close frame carries at most 123 bytes of reason.
            while reason.len() > CLOSE_REASON_BYTES_MAX {
                reason.pop();
            }
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            self.socket.send(Message::Close(Some(frame))).await?;
            // Closing the TCP connection before the client's own close frame arrives could
            // reset the connection and lose what the client has not read yet (our close
            // frame among it).
            while let Some(message) = self.socket.recv().await {
                if matches!(message?, Message::Close(_)) {
                    break;
                }
            }
            Ok::<_, axum::Error>(())
        };
        let _ = tokio::time::timeout(timeout, goodbye).await;
    }
}

#[cfg(test)]
mod tests;

/// The feed's JSON text as a WebSocket text frame, without copying it. The feed only ever
/// encodes `String`s, so the UTF-8 check cannot fail; a lossy copy is the safe answer if
/// it ever did.
fn text_message(json: bytes::Bytes) -> Message {
    match Utf8Bytes::try_from(json.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(String::from_utf8_lossy(&json).into_owned().into()),
    }
}
