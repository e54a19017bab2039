//! Identity: who is calling, and what they may do. Keys are `api_key` aggregates in the log
//! (`domain::api_key`): created, rotated and revoked by command, each with who and why. Every
//! process keeps a [`cache::KeyCache`] built from those events and kept current by following
//! the log, so a revocation reaches every process without a restart; a request's token is
//! checked against that cache alone, with no database round trip.
//!
//! This folder knows no HTTP: `api` turns a request's `Authorization` header or session into
//! a token and asks [`cache::KeyCache::authenticate`] for the [`Principal`], then
//! [`rate::KeyRates::admit`] whether the key is within its request rate.

pub mod cache;
pub mod cli;
pub mod keys;
pub mod rate;
pub mod session;
pub mod token;

use std::collections::BTreeSet;

use domain::api_key::{KeyGrant, KeyLimits, Permission, Role};

/// An authenticated caller: the key it presented and what that key grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub owner: String,
    pub role: Option<Role>,
    pub permissions: BTreeSet<Permission>,
    /// The agent kinds an agent key may serve; empty: any.
    pub kinds: Vec<String>,
    pub limits: KeyLimits,
}

impl Principal {
    pub fn of(key_id: &str, grant: &KeyGrant) -> Principal {
        Principal {
            key_id: key_id.to_owned(),
            name: grant.name.clone(),
            owner: grant.owner.clone(),
            role: grant.role,
            permissions: grant.effective(),
            kinds: grant.kinds.clone(),
            limits: grant.limits.clone(),
        }
    }

    /// The actor of the events this principal's commands produce.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Whether the key may register, claim and report for agents of `kind`.
    pub fn may_serve(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|allowed| allowed == kind)
    }
}
