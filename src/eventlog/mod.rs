//! The event log and everything that carries it: the PostgreSQL event store and its group
//! committer, the command handler, the relay to JetStream and the bus envelope, the checks of
//! bus messages against the store, the projector runtime with its PostgreSQL adapters,
//! leadership by advisory lock, the live feed, the event chain's check, and `brain events` (with export and import).
//!
//! It knows events, streams and positions, never what a mission or an agent is beyond the
//! `domain` and `projections` crates: the capabilities above (`missions`, `agents`, `llm`,
//! `api`) build on it, and nothing here reaches up to them.

pub mod audit;
pub mod bus;
pub mod chain;
pub mod cli;
pub mod command;
pub mod db;
pub mod feed;
pub mod follow;
pub mod leader;
pub mod mirror;
pub mod projector;
pub mod projectors;
pub mod relay;
pub mod snapshot;
pub mod store;
pub mod transfer;
pub mod verify;
