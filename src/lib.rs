//! `brain`: the process side of BRAiN, one folder per capability. Arrows point down this
//! list, never up:
//!
//! - [`api`]: HTTP and WebSocket routes, the one error shape, the OpenAPI route list;
//! - [`agents`]: the agents built into `brain`;
//! - [`missions`]: the Redis queue, workers, the mission supervisor;
//! - [`eventlog`]: the event store, its group committer, the command handler, the relay,
//!   the bus, the projector runtime, leadership and the live feed.
//!
//! [`bench`] measures through the public API of the others; [`serve`] and [`worker`] wire
//! them into a process, and [`cli`] parses the command line into the typed [`config`] and
//! hands over to one of them. [`config`], [`clock`], [`telemetry`] and [`secrets`] (what no
//! record may hold, and its redactor) are leaves any of them may use.
//! `domain` (pure decisions) and `projections` (pure read-model transitions) hold no I/O;
//! everything that talks to PostgreSQL, NATS or Redis lives here.

pub mod agents;
pub mod api;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod eventlog;
pub mod identity;
pub mod kv;
pub mod llm;
pub mod missions;
pub mod secrets;
pub mod serve;
pub mod telemetry;
pub mod worker;
