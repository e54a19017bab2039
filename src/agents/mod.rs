//! Agents: the registry's live side (heartbeats and the agent view in Redis), the agent
//! supervisor, and the agents built into `brain` with the `kind[=implementation],...` lists
//! that say which of them serves which agent kind (`coder=echo` serves the `coder` kind with
//! the built-in `echo` agent until a real one is configured). Built-in agents implement
//! [`crate::missions::agent::Agent`], the trait workers call.

pub mod echo;
pub mod heartbeat;
pub mod supervisor;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use crate::missions::agent::{Agent, Agents};

/// Settings of the agent registry's live side: supervision, heartbeat recording, and the
/// leases external agents get.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentSettings {
    /// Seconds between the agent supervisor's sweeps.
    #[arg(long, env = "BRAIN_SUPERVISOR_INTERVAL_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub supervisor_interval_s: u64,
    /// Seconds of silence after which an active agent is marked unresponsive.
    #[arg(long, env = "BRAIN_AGENT_UNRESPONSIVE_AFTER_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub unresponsive_after_s: u64,
    /// Seconds after which an unchanged heartbeat is recorded in the log again.
    #[arg(long, env = "BRAIN_HEARTBEAT_RECORD_EVERY_S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub heartbeat_record_every_s: u64,
    /// Lease an external agent's claim grants, in seconds, when the claim names none.
    #[arg(long, env = "BRAIN_AGENT_LEASE_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub lease_s: u64,
}

impl Default for AgentSettings {
    fn default() -> AgentSettings {
        AgentSettings {
            supervisor_interval_s: 30,
            unresponsive_after_s: 60,
            heartbeat_record_every_s: heartbeat::RECORD_EVERY_DEFAULT.as_secs(),
            lease_s: 60,
        }
    }
}

impl AgentSettings {
    pub fn supervisor(&self) -> supervisor::AgentSupervisorConfig {
        supervisor::AgentSupervisorConfig {
            interval: Duration::from_secs(self.supervisor_interval_s),
            unresponsive_after: Duration::from_secs(self.unresponsive_after_s),
            ..Default::default()
        }
    }

    pub fn record_every(&self) -> Duration {
        Duration::from_secs(self.heartbeat_record_every_s)
    }
}

/// The implementations built into `brain`: name and what it does.
pub const BUILTIN: &[(&str, &str)] =
    &[("echo", "answers with the mission's payload; its payload can ask it to fail, hang or wait")];

/// The implementations built into `brain`, by name.
pub fn builtin(name: &str) -> Option<Arc<dyn Agent>> {
    match name {
        "echo" => Some(Arc::new(echo::Echo)),
        _ => None,
    }
}

/// Parses `kind[=implementation],...`: `echo` serves kind `echo` with the echo agent;
/// `coder=echo` serves kind `coder` with it.
pub fn parse(spec: &str) -> Result<Agents, String> {
    let mut agents = Agents::default();
    for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (kind, implementation) = item.split_once('=').unwrap_or((item, item));
        domain::mission::check_agent(kind).map_err(|error| format!("{item}: {error}"))?;
        let agent = builtin(implementation).ok_or_else(|| {
            format!("{item}: no built-in agent {implementation:?} (built in: echo)")
        })?;
        agents.insert(kind.to_owned(), agent);
    }
    Ok(agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lists_map_kinds_to_built_in_implementations() {
        let agents = parse("echo, coder=echo").unwrap();
        assert_eq!(agents.kinds(), ["coder", "echo"]);
        assert!(parse("coder").unwrap_err().contains("no built-in agent"));
        assert!(parse("Bad=echo").unwrap_err().contains("agent"));
        assert!(parse("").unwrap().is_empty());
    }
}
