//! Agents: the registry's live side (heartbeats and the agent view in Redis), the silence
//! watchdog and the restart policy, and the agents built into `brain` with the `kind[=implementation],...` lists
//! that say which of them serves which agent kind (`coder=echo` serves the `coder` kind with
//! the built-in `echo` agent until a real one is configured). Built-in agents implement
//! [`crate::missions::agent::Agent`], the trait workers call.

pub mod agent_loop;
pub mod conversations;
pub mod echo;
pub mod heartbeat;
pub mod host;
pub mod plain;
pub mod record;
pub mod replay;
pub mod restart;
pub mod tools;
pub mod view;
pub mod watchdog;

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
    /// Seconds after which an unchanged heartbeat is recorded in the log again; 0: never (only
    /// heartbeats that change something are recorded).
    #[arg(long, env = "BRAIN_HEARTBEAT_RECORD_EVERY_S", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub heartbeat_record_every_s: u64,
    /// Lease an external agent's claim grants, in seconds, when the claim names none.
    #[arg(long, env = "BRAIN_AGENT_LEASE_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub lease_s: u64,
}

/// How often a built-in agent may die before it stays down.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RestartSettings {
    /// Restarts a built-in agent gets within the window; one more death marks it failed.
    #[arg(long, env = "BRAIN_AGENT_RESTARTS_MAX", default_value_t = 3)]
    pub restarts_max: u32,
    /// The window restarts are counted in, in seconds.
    #[arg(long, env = "BRAIN_AGENT_RESTARTS_WINDOW_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub restarts_window_s: u64,
}

impl RestartSettings {
    pub fn intensity(&self) -> restart::Intensity {
        restart::Intensity {
            restarts_max: self.restarts_max,
            window: Duration::from_secs(self.restarts_window_s),
            ..Default::default()
        }
    }
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
    pub fn watchdog(&self) -> watchdog::WatchdogConfig {
        watchdog::WatchdogConfig {
            interval: Duration::from_secs(self.supervisor_interval_s),
            unresponsive_after: Duration::from_secs(self.unresponsive_after_s),
            ..Default::default()
        }
    }

    pub fn record_every(&self) -> Duration {
        Duration::from_secs(self.heartbeat_record_every_s)
    }
}

/// Derives agent ids from owner and name (UUID v5 namespace).
const AGENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2d7e_91a4_0c3b_4f6e_8a15_7b9c_e4d2_1f08);

/// The id of the agent `name` of `owner` when it chooses none: the same agent registering
/// again finds itself.
pub fn agent_id(owner: &str, name: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&AGENT_NAMESPACE, format!("agent:{owner}/{name}").as_bytes())
}

/// What a built-in agent may use, given by the process that hosts it (none when the agent
/// list is parsed, before anything is connected).
#[derive(Clone, Default)]
pub struct Context {
    /// The event store: the LLM gateway's runtime configuration is read from it.
    pub store: Option<crate::eventlog::store::EventStore>,
    /// Where answers stream as they are generated (`<ns>.tokens.<mission id>`).
    pub tokens: Option<(async_nats::Client, crate::config::Namespace)>,
    /// Where the LLM gateway's shared limits and budgets are kept.
    pub shared: Option<(redis::aio::ConnectionManager, crate::config::Namespace)>,
}

impl Context {
    /// The LLM calls of an agent hosted here: the shared limits and budgets, recorded in
    /// the log, when the process has connected them.
    pub fn calls(&self) -> crate::llm::calls::Calls {
        let mut gateway = crate::llm::gateway::Gateway::from_env();
        if let (Some(store), Some((redis, namespace))) = (&self.store, &self.shared) {
            gateway = gateway.shared(redis.clone(), namespace, store.pool().clone());
        }
        crate::llm::calls::Calls::new(gateway, self.store.clone())
    }
}

/// An implementation built into `brain`.
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    /// A fresh instance (a restart makes a new one).
    pub make: fn(&Context) -> Arc<dyn Agent>,
}

/// The implementations built into `brain`.
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "echo",
        description: "answers with the mission's payload; its payload can ask it to fail, hang, wait or die",
        make: |_| Arc::new(echo::Echo),
    },
    Builtin {
        name: "plain",
        description: "sends the mission's task (payload.prompt, else its description, else its name) to the LLM gateway's route (payload.route, else the default) and answers with the model's answer",
        make: |context| {
            Arc::new(plain::Plain { calls: context.calls(), tokens: context.tokens.clone() })
        },
    },
    Builtin {
        name: "coder",
        description: "thinks in steps through the LLM gateway with tools (read_file, list_dir, search_text under BRAIN_AGENT_ROOT; run_command for BRAIN_AGENT_COMMANDS), every model and tool call recorded in the mission's history",
        make: |context| Arc::new(thinking_agent(context, "coder").expect("thinks")),
    },
    Builtin {
        name: "ops",
        description: "looks after how software runs: thinks in steps with the same tools as coder (commands included), with an operator's prompt",
        make: |context| Arc::new(thinking_agent(context, "ops").expect("thinks")),
    },
    Builtin {
        name: "supervisor",
        description: "splits a mission into sub-missions for the agent kinds in BRAIN_SUPERVISOR_KINDS (spawn_missions), waits for them suspended (no worker slot held), and completes with their combined result; reads files under BRAIN_AGENT_ROOT, runs nothing",
        make: |context| Arc::new(thinking_agent(context, "supervisor").expect("thinks")),
    },
    Builtin {
        name: "architect",
        description: "answers questions of design: thinks in steps with the file tools only (read_file, list_dir, search_text), never a command",
        make: |context| Arc::new(thinking_agent(context, "architect").expect("thinks")),
    },
];

/// What each thinking agent is told before its task.
const CODER_PROMPT: &str = "You are the coder agent of BRAiN. Work on the task you are given; \
use the tools to look at the files of the working folder (and to run the commands allowed) \
instead of guessing, then answer with the result: what you found or what should change, \
precisely and briefly.";
const OPS_PROMPT: &str = "You are the ops agent of BRAiN. You look after how software runs: \
check its state with the commands allowed and the files of the working folder, say what is \
wrong and what to do about it, step by step, and never guess at what a command would show.";
const ARCHITECT_PROMPT: &str = "You are the architect agent of BRAiN. Read the code and the \
documents of the working folder and answer questions of design: the parts, how they depend on \
each other, the trade-offs of a change. You can read but not run anything.";

const SUPERVISOR_PROMPT: &str = "You are the supervisor agent of BRAiN. Split the task you \
are given into self-contained sub-missions for the other agents with spawn_missions (one call \
with all of them when they can run at once), wait for what they did, and answer with the \
combined result. When a sub-mission failed, decide: spawn it again (differently), carry on \
without it, or say the task failed and why.";

/// The built-in system prompt of the thinking agent `kind` (`coder`, `ops`, `architect`,
/// `supervisor`).
pub fn builtin_prompt(kind: &str) -> Option<&'static str> {
    match kind {
        "coder" => Some(CODER_PROMPT),
        "ops" => Some(OPS_PROMPT),
        "architect" => Some(ARCHITECT_PROMPT),
        "supervisor" => Some(SUPERVISOR_PROMPT),
        _ => None,
    }
}

/// The system prompt of the thinking agent `kind`: the file `<kind>.md` in the folder
/// `BRAIN_AGENT_PROMPTS` when there is one (so a deployment tunes its prompts without a
/// build, and `brain missions replay` checks a changed prompt against past runs), else the
/// built-in one.
pub fn prompt_of(kind: &str) -> Option<String> {
    let builtin = builtin_prompt(kind)?;
    let folder = std::env::var("BRAIN_AGENT_PROMPTS").ok().filter(|folder| !folder.is_empty());
    let custom = folder.and_then(|folder| {
        match std::fs::read_to_string(std::path::Path::new(&folder).join(format!("{kind}.md"))) {
            Ok(prompt) if !prompt.trim().is_empty() => Some(prompt),
            Ok(_) => None,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(folder, kind, %error, "cannot read the prompt; the built-in one is used");
                None
            }
        }
    });
    Some(custom.unwrap_or_else(|| builtin.to_owned()))
}

/// The agent kinds the supervisor may hand work to (`BRAIN_SUPERVISOR_KINDS`, default
/// `coder,ops,architect`).
pub fn supervisor_kinds() -> Vec<String> {
    let listed = std::env::var("BRAIN_SUPERVISOR_KINDS").unwrap_or_default();
    let kinds: Vec<String> = listed
        .split(',')
        .map(|kind| kind.trim().to_owned())
        .filter(|kind| domain::mission::check_agent(kind).is_ok())
        .collect();
    if kinds.is_empty() { vec!["coder".into(), "ops".into(), "architect".into()] } else { kinds }
}

/// A thinking agent's tools, from the environment: the file tools under `BRAIN_AGENT_ROOT`,
/// with `commands` `run_command` for the programs in `BRAIN_AGENT_COMMANDS`, and `fetch_url`
/// for the hosts in `BRAIN_AGENT_FETCH_HOSTS`; none without a root.
pub fn tools_from_env(commands: bool) -> tools::Registry {
    let var = |name| std::env::var(name).ok().filter(|value: &String| !value.trim().is_empty());
    let Some(root) = var("BRAIN_AGENT_ROOT") else { return tools::Registry::default() };
    let root = match tools::files::Root::new(&root) {
        Ok(root) => root,
        Err(error) => {
            tracing::warn!(root, %error, "BRAIN_AGENT_ROOT cannot be used: the agent has no tools");
            return tools::Registry::default();
        }
    };
    let mut registry = tools::Registry::default()
        .with(tools::files::ReadFile(root.clone()))
        .with(tools::files::ListDir(root.clone()))
        .with(tools::files::SearchText(root.clone()));
    let allowed: Vec<String> = var("BRAIN_AGENT_COMMANDS")
        .unwrap_or_default()
        .split(',')
        .map(|program| program.trim().to_owned())
        .filter(|program| !program.is_empty())
        .collect();
    if commands && !allowed.is_empty() {
        let timeout = tools::command::TIMEOUT_DEFAULT;
        registry = registry.with(tools::command::RunCommand { root, allowed, timeout });
    }
    let hosts: Vec<String> = var("BRAIN_AGENT_FETCH_HOSTS")
        .unwrap_or_default()
        .split(',')
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .collect();
    if !hosts.is_empty() {
        registry = registry.with(tools::fetch::FetchUrl::new(hosts));
    }
    registry
}

/// The built-in agent `implementation` if it thinks in steps (`coder`, `ops`, `architect`,
/// `supervisor`): its prompt, and its tools from the environment (commands for `coder` and
/// `ops` only; sub-missions for `supervisor` only).
pub fn thinking_agent(context: &Context, implementation: &str) -> Option<agent_loop::Loop> {
    let (system_prompt, tools, spawn) = equipment(implementation)?;
    Some(agent_loop::Loop {
        calls: context.calls(),
        system_prompt,
        tools,
        spawn,
        steps_max: steps_max(),
        tokens: context.tokens.clone(),
    })
}

type Equipment = (String, tools::Registry, Option<tools::delegate::SpawnMissions>);

/// A thinking built-in agent's prompt and tools, as this process's environment gives them.
fn equipment(implementation: &str) -> Option<Equipment> {
    let prompt = prompt_of(implementation)?;
    let commands = matches!(implementation, "coder" | "ops");
    let spawn = (implementation == "supervisor")
        .then(|| tools::delegate::SpawnMissions { kinds: supervisor_kinds() });
    Some((prompt, tools_from_env(commands), spawn))
}

/// What `GET /api/agents/info` shows of a built-in agent: its system prompt and the names of
/// the tools it offers the model here (none for one that does not think in steps).
pub fn described(implementation: &str) -> (Option<String>, Vec<String>) {
    match equipment(implementation) {
        None => (None, Vec::new()),
        Some((prompt, tools, spawn)) => {
            let mut names = tools.names();
            names.extend(spawn.map(|_| tools::delegate::NAME.to_owned()));
            (Some(prompt), names)
        }
    }
}

/// Model calls one attempt of a thinking agent may make (`BRAIN_AGENT_STEPS_MAX`, 1 to 100).
fn steps_max() -> u32 {
    std::env::var("BRAIN_AGENT_STEPS_MAX")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|steps| (1..=100).contains(steps))
        .unwrap_or(agent_loop::STEPS_MAX_DEFAULT)
}

/// The implementation built into `brain` under `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|builtin| builtin.name == name)
}

/// Parses `kind[=implementation],...`: `echo` serves kind `echo` with the echo agent;
/// `coder=echo` serves kind `coder` with it. Each is supervised (restarted when it dies,
/// within its intensity; see [`supervised`]).
pub fn parse(spec: &str) -> Result<Agents, String> {
    let mut agents = Agents::default();
    for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (kind, implementation) = item.split_once('=').unwrap_or((item, item));
        domain::mission::check_agent(kind).map_err(|error| format!("{item}: {error}"))?;
        let known: Vec<&str> = BUILTIN.iter().map(|builtin| builtin.name).collect();
        let builtin = builtin(implementation).ok_or_else(|| {
            format!("{item}: no built-in agent {implementation:?} (built in: {})", known.join(", "))
        })?;
        let shared = restart::Restarting::new(kind, builtin.name, builtin.make);
        agents.insert(kind.to_owned(), Arc::new(restart::RestartingAgent(shared)));
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
        assert_eq!(parse("coder").unwrap().kinds(), ["coder"]);
        assert!(parse("reviewer").unwrap_err().contains("no built-in agent"));
        assert!(parse("Bad=echo").unwrap_err().contains("agent"));
        assert!(parse("").unwrap().is_empty());
    }
}
