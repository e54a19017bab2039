//! Agents: what runs a mission once a worker holds it. A worker serves the agent kinds it
//! has an [`Agent`] for; [`Agents`] maps kinds to implementations, so `coder=echo` serves
//! the `coder` kind with the built-in `echo` agent until a real one is configured.

pub mod echo;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

/// What an agent is given.
#[derive(Debug, Clone)]
pub struct Task {
    pub mission_id: String,
    pub name: String,
    pub agent: String,
    pub payload: serde_json::Value,
    /// 1 for the first try.
    pub attempt: u32,
}

/// Why an attempt failed; `retryable` decides whether another attempt is scheduled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
}

pub trait Agent: Send + Sync + 'static {
    /// Runs one attempt. The worker enforces the mission's timeout by dropping the future,
    /// so an agent needs no clock of its own.
    fn run(&self, task: Task) -> BoxFuture<'static, Result<serde_json::Value, Failure>>;
}

/// The implementations built into `brain`, by name.
pub fn builtin(name: &str) -> Option<Arc<dyn Agent>> {
    match name {
        "echo" => Some(Arc::new(echo::Echo)),
        _ => None,
    }
}

/// Agent kinds a worker serves and what runs each.
#[derive(Clone, Default)]
pub struct Agents(BTreeMap<String, Arc<dyn Agent>>);

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Agents {
    /// Parses `kind[=implementation],...`: `echo` serves kind `echo` with the echo agent;
    /// `coder=echo` serves kind `coder` with it.
    pub fn parse(spec: &str) -> Result<Agents, String> {
        let mut agents = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (kind, implementation) = item.split_once('=').unwrap_or((item, item));
            domain::mission::check_agent(kind).map_err(|error| format!("{item}: {error}"))?;
            let agent = builtin(implementation).ok_or_else(|| {
                format!("{item}: no built-in agent {implementation:?} (built in: echo)")
            })?;
            agents.insert(kind.to_owned(), agent);
        }
        Ok(Agents(agents))
    }

    pub fn kinds(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Agent>> {
        self.0.get(kind)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for Agents {
    type Err = String;
    fn from_str(spec: &str) -> Result<Agents, String> {
        Agents::parse(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lists_map_kinds_to_built_in_implementations() {
        let agents = Agents::parse("echo, coder=echo").unwrap();
        assert_eq!(agents.kinds(), ["coder", "echo"]);
        assert!(Agents::parse("coder").unwrap_err().contains("no built-in agent"));
        assert!(Agents::parse("Bad=echo").unwrap_err().contains("agent"));
        assert!(Agents::parse("").unwrap().is_empty());
    }
}
