//! The typed configuration of a `brain` process, parsed once at start-up from flags or
//! environment variables, with defaults that work on a developer machine (the README's
//! Configuration table lists them, and a test keeps it equal to these definitions).
//!
//! One file per area: [`agents`] (the agents a process runs and what they may use), [`llm`]
//! (the LLM gateway's fallback route and provider keys), [`worker`] (leases and retries),
//! [`serve`] (what `brain serve` alone takes), and
//! here what every subcommand shares (where the services are, the namespace). A bad value
//! stops the process with a message naming the variable and what it accepts; nothing below
//! reads the environment or falls back silently. This module is a leaf: it depends on no other
//! part of `brain`, so every part may take its settings from here.

pub mod agents;
pub mod llm;
pub mod serve;
pub mod worker;

use std::fmt;
use std::str::FromStr;

/// Prefixes the JetStream stream, its subjects, Redis keys and PostgreSQL channels, so that
/// deployments and tests can share servers without touching each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

pub const NAMESPACE_LEN_MAX: usize = 40;

impl Namespace {
    /// Lowercase letters, digits and `_`, starting with a letter, at most 40 characters:
    /// valid as a subject token, in a stream name once uppercased, and in a channel name.
    pub fn parse(value: &str) -> Result<Namespace, String> {
        let starts_with_letter = value.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        let allowed =
            value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !allowed || value.len() > NAMESPACE_LEN_MAX {
            return Err(format!(
                "namespace {value:?} must be 1 to {NAMESPACE_LEN_MAX} characters of a-z, 0-9 \
                 and _, starting with a letter"
            ));
        }
        Ok(Namespace(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Namespace {
    type Err = String;
    fn from_str(value: &str) -> Result<Namespace, String> {
        Namespace::parse(value)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The agent kind missions run on when the request names none.
pub const DEFAULT_AGENT: &str = "coder";
/// Agent kinds a mission may name out of the box: the built-in agents' kinds.
pub const AGENT_KINDS_DEFAULT: &str = "coder,ops,architect,supervisor,echo";
/// Most agent kinds one deployment may have.
pub const AGENT_KINDS_MAX: usize = 256;
pub use self::agents::WORKER_AGENTS_DEFAULT;

pub const DATABASE_URL_DEFAULT: &str = "postgres://postgres:postgres@127.0.0.1:5432/brain";
/// The local NATS that `scripts/services.sh` runs, as BRAiN's user: its password is a fixed,
/// documented one for development (`nats/nats-server.local.conf`), never for a deployment,
/// which sets `NATS_URL` with its own.
pub const NATS_URL_DEFAULT: &str = "nats://brain:brain-local@127.0.0.1:4222";
pub const REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:6379";
pub const NAMESPACE_DEFAULT: &str = "brain";
pub const DB_CONNECTIONS_MAX_DEFAULT: u32 = 16;

/// Where the backing services are and which namespace this process works in.
#[derive(Debug, Clone, clap::Args)]
pub struct Services {
    /// PostgreSQL database holding the event store; created if missing.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DATABASE_URL_DEFAULT)]
    pub database_url: String,
    /// NATS server with JetStream enabled.
    #[arg(long, env = "NATS_URL", hide_env_values = true, default_value = NATS_URL_DEFAULT)]
    pub nats_url: String,
    /// Redis server for read models that live in Redis.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value = REDIS_URL_DEFAULT)]
    pub redis_url: String,
    /// Prefix of the JetStream stream, subjects and Redis keys.
    #[arg(long, env = "BRAIN_NAMESPACE", default_value = NAMESPACE_DEFAULT)]
    pub namespace: Namespace,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "BRAIN_DB_CONNECTIONS_MAX", default_value_t = DB_CONNECTIONS_MAX_DEFAULT, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_connections_max: u32,
}

/// Variables whose empty value is a choice, not an absence: `BRAIN_WORKER_AGENTS=` runs no
/// built-in agent (an API-only serve, a worker for external agents alone).
pub const EMPTY_MEANS_NONE: &[&str] = &["BRAIN_WORKER_AGENTS"];

/// `command` (and its subcommands) with the arguments whose environment variable is set but
/// empty reading it no more: an empty variable means unset, as a compose file's
/// `${BRAIN_AGENT_ROOT:-}` means it. The one place the process environment is consulted
/// besides clap itself.
pub fn unset_empty_variables(mut command: clap::Command) -> clap::Command {
    let empty: Vec<clap::Id> = command
        .get_arguments()
        .filter(|arg| {
            let named = arg.get_env();
            let means_none = named.is_some_and(|name| EMPTY_MEANS_NONE.iter().any(|n| name == *n));
            !means_none && named.and_then(std::env::var_os).is_some_and(|value| value.is_empty())
        })
        .map(|arg| arg.get_id().clone())
        .collect();
    for id in empty {
        command = command.mut_arg(id, |arg| arg.env(None));
    }
    let names: Vec<String> =
        command.get_subcommands().map(|sub| sub.get_name().to_owned()).collect();
    for name in names {
        command = command.mut_subcommand(name, unset_empty_variables);
    }
    command
}

/// A service URL fit for a log line or an error: the password, if any, replaced by `***`
/// (design invariant 7: secrets never enter a log).
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((credentials, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
    let path = path.map(|path| format!("/{path}")).unwrap_or_default();
    format!("{scheme}://{user}:***@{host}{path}")
}

#[cfg(test)]
mod tests;
