//! BRAiN's domain: the vocabulary every other part speaks (stream names, event envelopes,
//! expected versions) and the contract aggregates implement.
//!
//! This crate is pure by design: no I/O, no async runtime, no database, bus or cache client.
//! Time arrives as data (a timestamp inside a command or an event's metadata), never from a
//! clock read here, so every decision can be replayed and tested as a plain function.

pub mod agent;
pub mod agent_kind;
pub mod aggregate;
pub mod api_key;
pub mod base_url;
pub mod budget;
pub mod catalogue;
pub mod conversation;
pub mod event;
pub mod heartbeat;
pub mod llm_call;
pub mod llm_config;
pub mod mcp_config;
pub mod mission;
pub mod names;
pub mod text;
pub mod upcast;

pub use aggregate::Aggregate;
pub use event::{EventMetadata, ExpectedVersion, NewEvent, RecordedEvent};
pub use names::{NameError, StreamId, StreamType};
