//! The message bus: the JetStream stream that mirrors the event log, its subjects, and the
//! envelope events travel in.
//!
//! Stream `<NS>_EVENTS` holds subjects `<ns>.events.<stream_type>.<stream_id>`; its sequence
//! number is the event's `global_position` (design invariant 3), kept so by the relay, the only
//! publisher. Its settings live in `nats/stream.json` and are applied at start-up.
//!
//! The message body is a postcard-encoded [`Envelope`]; layout, for outside subscribers:
//! a `u8` layout version (1), then the fields of `Envelope` in order, integers as LEB128
//! varints (signed ones zig-zag encoded), strings and byte vectors as a varint length followed
//! by the bytes, `event_id` as 16 raw bytes. Headers repeat what a router needs without
//! decoding: `Nats-Msg-Id` (event id), `Brain-Event-Type`, `Brain-Schema-Version`,
//! `Brain-Stream-Type`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use domain::{RecordedEvent, StreamId, StreamType};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Namespace;
use crate::eventlog::store::StoredEvent;

/// The stream definition applied at start-up; name and subjects come from the namespace.
const STREAM_DEFINITION: &str = include_str!("../../nats/stream.json");

pub const HEADER_EVENT_TYPE: &str = "Brain-Event-Type";
pub const HEADER_SCHEMA_VERSION: &str = "Brain-Schema-Version";
pub const HEADER_STREAM_TYPE: &str = "Brain-Stream-Type";

/// Envelope layout version written today.
pub const ENVELOPE_VERSION: u8 = 1;

/// Deadline for one JetStream API request or publish acknowledgement.
pub const REQUEST_TIMEOUT_S: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("nats/stream.json is not a valid stream definition: {0}")]
    Definition(String),
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("event envelope: {0}")]
    Envelope(String),
}

/// Connects with the options every `brain` process uses: unbounded reconnects (the relay
/// and projectors ride out a NATS restart) and a fixed request timeout. A user and password
/// in the URL (`nats://brain:<password>@host:4222`) log in: async-nats reads only the address
/// from a URL, so they are passed on here.
pub async fn connect(url: &str) -> Result<async_nats::Client, BusError> {
    let refused = |message: String| BusError::Connect {
        url: crate::config::redacted_url(url),
        message: message.replace(url, &crate::config::redacted_url(url)),
    };
    let parse = |url: &str| {
        url.parse::<async_nats::ServerAddr>().map_err(|error| refused(error.to_string()))
    };
    let mut options = async_nats::ConnectOptions::new();
    let with_login = parse(url)?;
    if let Some(user) = with_login.username() {
        let password = with_login.password().unwrap_or_default();
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    // The address without the login: the client logs its address (design invariant 7).
    let address = parse(&without_login(url))?;
    options
        .name("brain")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(REQUEST_TIMEOUT_S))
        .request_timeout(Some(Duration::from_secs(REQUEST_TIMEOUT_S)))
        .connect(address)
        .await
        .map_err(|error| refused(error.to_string()))
}

/// `url` without its `user:password@`, if it has one.
fn without_login(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let Some((_, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
}

/// A JetStream context whose publishes may have many acknowledgements outstanding.
pub fn jetstream(client: async_nats::Client, inflight_max: usize) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(REQUEST_TIMEOUT_S))
        .max_ack_inflight(inflight_max.max(1))
        .backpressure_on_inflight(true)
        .build(client)
}

pub fn stream_name(namespace: &Namespace) -> String {
    format!("{}_EVENTS", namespace.as_str().to_ascii_uppercase())
}

/// Every subject of the namespace's events.
pub fn subjects_all(namespace: &Namespace) -> String {
    format!("{namespace}.events.>")
}

/// The stream's configuration for a namespace: `nats/stream.json` plus name and subjects.
pub fn stream_config(namespace: &Namespace) -> Result<stream::Config, BusError> {
    let mut definition: serde_json::Value = serde_json::from_str(STREAM_DEFINITION)
        .map_err(|error| BusError::Definition(error.to_string()))?;
    let object = definition
        .as_object_mut()
        .ok_or_else(|| BusError::Definition("not a JSON object".to_owned()))?;
    object.insert("name".into(), stream_name(namespace).into());
    object.insert("subjects".into(), serde_json::json!([subjects_all(namespace)]));
    serde_json::from_value(definition).map_err(|error| BusError::Definition(error.to_string()))
}

/// Creates the namespace's stream, or brings an existing one's settings in line with
/// `nats/stream.json`. Idempotent; every `brain` process runs it at start-up.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
) -> Result<stream::Stream, BusError> {
    let config = stream_config(namespace)?;
    let name = config.name.clone();
    let failed = |message: String| BusError::Stream { stream: name.clone(), message };
    let stream = jetstream
        .get_or_create_stream(config.clone())
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !same_settings(&stream.cached_info().config, &config) {
        jetstream.update_stream(&config).await.map_err(|error| failed(error.to_string()))?;
        tracing::info!(stream = %name, "stream settings updated from nats/stream.json");
    }
    Ok(stream)
}

/// Compares what we set; the server fills in fields we leave at their defaults.
fn same_settings(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects == wanted.subjects
        && current.max_bytes == wanted.max_bytes
        && current.max_messages == wanted.max_messages
        && current.max_age == wanted.max_age
        && current.max_message_size == wanted.max_message_size
        && current.duplicate_window == wanted.duplicate_window
        && current.discard == wanted.discard
        && current.description == wanted.description
}

/// One event as it travels on the bus. Field order is the wire layout: only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub layout_version: u8,
    pub global_position: u64,
    pub stream_type: String,
    pub stream_id: String,
    pub version: u64,
    pub event_id: [u8; 16],
    pub event_type: String,
    pub schema_version: u32,
    /// The event's payload as JSON text.
    pub payload_json: String,
    /// The event's metadata (actor, correlation, causation, command id, time) as JSON text.
    pub metadata_json: String,
    pub recorded_at_unix_ns: i128,
}

impl Envelope {
    pub fn from_event(event: &RecordedEvent) -> Envelope {
        Envelope {
            layout_version: ENVELOPE_VERSION,
            global_position: event.global_position,
            stream_type: event.stream_type.as_str().to_owned(),
            stream_id: event.stream_id.as_str().to_owned(),
            version: event.version,
            event_id: event.event_id.into_bytes(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            payload_json: event.payload.to_string(),
            metadata_json: serde_json::to_string(&event.metadata)
                .expect("metadata always serialises"),
            recorded_at_unix_ns: event.recorded_at.unix_timestamp_nanos(),
        }
    }

    /// The same envelope from a row read as text, with no JSON parsing.
    pub fn from_stored(event: &StoredEvent) -> Envelope {
        Envelope {
            layout_version: ENVELOPE_VERSION,
            global_position: event.global_position as u64,
            stream_type: event.stream_type.clone(),
            stream_id: event.stream_id.clone(),
            version: event.version as u64,
            event_id: event.event_id.into_bytes(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version as u32,
            payload_json: event.payload_json.clone(),
            metadata_json: event.metadata_json.clone(),
            recorded_at_unix_ns: event.recorded_at.unix_timestamp_nanos(),
        }
    }

    /// The subject this event is published on.
    pub fn subject(&self, namespace: &Namespace) -> String {
        format!("{namespace}.events.{}.{}", self.stream_type, self.stream_id)
    }

    /// The headers the relay puts on the event's message.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let event_id = Uuid::from_bytes(self.event_id).to_string();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.as_str());
        headers.insert(HEADER_EVENT_TYPE, self.event_type.as_str());
        headers.insert(HEADER_SCHEMA_VERSION, HeaderValue::from(u64::from(self.schema_version)));
        headers.insert(HEADER_STREAM_TYPE, self.stream_type.as_str());
        headers
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).expect("an envelope always serialises"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, BusError> {
        let envelope: Envelope =
            postcard::from_bytes(bytes).map_err(|error| BusError::Envelope(error.to_string()))?;
        if envelope.layout_version != ENVELOPE_VERSION {
            return Err(BusError::Envelope(format!(
                "layout version {} is not known",
                envelope.layout_version
            )));
        }
        Ok(envelope)
    }

    pub fn into_event(self) -> Result<RecordedEvent, BusError> {
        let bad = |what: &str, error: &dyn std::fmt::Display| {
            BusError::Envelope(format!("event {}: {what}: {error}", self.global_position))
        };
        Ok(RecordedEvent {
            global_position: self.global_position,
            stream_type: StreamType::parse(self.stream_type.as_str())
                .map_err(|e| bad("stream type", &e))?,
            stream_id: StreamId::parse(self.stream_id.as_str())
                .map_err(|e| bad("stream id", &e))?,
            version: self.version,
            event_id: Uuid::from_bytes(self.event_id),
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: serde_json::from_str(&self.payload_json).map_err(|e| bad("payload", &e))?,
            metadata: serde_json::from_str(&self.metadata_json).map_err(|e| bad("metadata", &e))?,
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(self.recorded_at_unix_ns)
                .map_err(|e| bad("recorded_at", &e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use domain::EventMetadata;

    use super::*;

    fn event() -> RecordedEvent {
        RecordedEvent {
            global_position: 42,
            stream_type: StreamType::parse("mission").unwrap(),
            stream_id: StreamId::parse("m-1").unwrap(),
            version: 3,
            event_id: Uuid::now_v7(),
            event_type: "MissionStarted".into(),
            schema_version: 2,
            payload: serde_json::json!({ "worker": "w1", "nested": { "n": [1, 2.5, null] } }),
            metadata: EventMetadata::new("user:alice", OffsetDateTime::UNIX_EPOCH),
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
                .unwrap(),
        }
    }

    #[test]
    fn an_event_survives_the_trip_through_the_envelope_unchanged() {
        let original = event();
        let bytes = Envelope::from_event(&original).encode();
        let back = Envelope::decode(&bytes).unwrap().into_event().unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn the_envelope_starts_with_its_layout_version_and_the_position_as_a_varint() {
        let bytes = Envelope::from_event(&event()).encode();
        assert_eq!(bytes[0], ENVELOPE_VERSION);
        assert_eq!(bytes[1], 42, "42 fits one LEB128 byte");
    }

    #[test]
    fn an_unknown_layout_version_is_refused_rather_than_misread() {
        let mut bytes = Envelope::from_event(&event()).encode().to_vec();
        bytes[0] = 9;
        let error = Envelope::decode(&bytes).unwrap_err();
        assert!(error.to_string().contains("layout version 9"), "{error}");
    }

    #[test]
    fn the_login_is_taken_out_of_the_address_the_client_keeps() {
        assert_eq!(without_login("nats://brain:s3cret@nats:4222"), "nats://nats:4222");
        assert_eq!(without_login("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(without_login("tls://u:p@a:1/x"), "tls://a:1/x");
    }

    #[test]
    fn the_stream_definition_parses_and_takes_the_namespace() {
        let namespace = Namespace::parse("t_abc").unwrap();
        let config = stream_config(&namespace).unwrap();
        assert_eq!(config.name, "T_ABC_EVENTS");
        assert_eq!(config.subjects, ["t_abc.events.>"]);
        assert_eq!(config.storage, stream::StorageType::File);
        assert_eq!(config.duplicate_window, Duration::from_secs(120));
    }
}
