//! Running missions: the Redis priority queue (its projection store and Lua scripts), the
//! workers that claim and run missions under a lease, and the lease reaper that expires
//! leases and brings due missions back; re-enqueue ([`copy`]); the `mission_list` read
//! model's writer and its search.
//!
//! Workers run agents without knowing them: the [`agent::Agent`] trait a worker calls lives
//! here, the built-in agents in `crate::agents` implement it, and `serve`/`brain worker` wire
//! the two together. This folder uses `eventlog` and nothing above it.

pub mod agent;
pub mod claim;
pub mod copy;
pub mod list;
pub mod queue;
pub mod reaper;
pub mod search;
pub mod status;
pub mod tree;
pub mod tree_store;
pub mod worker;
