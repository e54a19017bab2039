//! `brain`: the process side of BRAiN. The event store and its group committer, the relay to
//! JetStream, the projector runtime, the HTTP API, and the CLI's subcommands.
//!
//! `domain` (pure decisions) and `projections` (pure read-model transitions) hold no I/O;
//! everything that talks to PostgreSQL, NATS or Redis lives here.

pub mod agents;
pub mod api;
pub mod bench;
pub mod bus;
pub mod clock;
pub mod command;
pub mod config;
pub mod db;
pub mod event_store;
pub mod feed;
pub mod leader;
pub mod projector;
pub mod projectors;
pub mod queue;
pub mod relay;
pub mod serve;
pub mod supervisor;
pub mod telemetry;
pub mod worker;
