//! The agents built into `brain`, and the `kind[=implementation],...` lists that say which
//! of them serves which agent kind: `coder=echo` serves the `coder` kind with the built-in
//! `echo` agent until a real one is configured. They implement
//! [`crate::missions::agent::Agent`], the trait workers call.

pub mod echo;

use std::sync::Arc;

use crate::missions::agent::{Agent, Agents};

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
