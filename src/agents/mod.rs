//! Agents: the registry's live side (heartbeats and the agent view in Redis), the silence
//! watchdog and the restart policy, and the agents built into `brain`. Which of them serves
//! which agent kind is plain configuration (`crate::config::agents::AgentSpec`: `coder=echo`
//! serves the `coder` kind with the built-in `echo` agent); the worker host makes them with
//! [`build`] and the [`Context`] it owns. Built-in agents implement
//! [`crate::missions::agent::Agent`], the trait workers call.

pub mod agent_loop;
pub mod conversations;
pub mod echo;
pub mod heartbeat;
pub mod host;
pub mod kinds;
pub mod plain;
pub mod record;
pub mod replay;
pub mod restart;
pub mod tools;
pub mod view;
pub mod view_check;
pub mod view_rebuild;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

pub use crate::config::agents::{AgentSettings, BuiltinSettings, Implementation, RestartSettings};
use crate::config::agents::{AgentSpec, ToolSettings};
use crate::config::llm::LlmSettings;
use crate::missions::agent::{Agent, Agents};

impl RestartSettings {
    pub fn intensity(&self) -> restart::Intensity {
        restart::Intensity {
            restarts_max: self.restarts_max,
            window: Duration::from_secs(self.restarts_window_s),
            ..Default::default()
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

    /// What the API's replays make their agents with.
    pub fn context(&self) -> Context {
        Context::unconnected(self.builtin.clone(), self.llm.clone())
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

/// What a built-in agent is made with: the settings of its process, and what the process
/// that hosts it has connected (nothing, in a tool such as `brain missions replay`).
#[derive(Clone, Default)]
pub struct Context {
    /// Prompts, tools and limits of the thinking agents.
    pub builtin: Arc<BuiltinSettings>,
    /// The LLM gateway's start-up settings: its route until one is configured, its keys.
    pub llm: Arc<LlmSettings>,
    /// The event store: the LLM gateway's runtime configuration is read from it.
    pub store: Option<crate::eventlog::store::EventStore>,
    /// Where answers stream as they are generated (`<ns>.tokens.<mission id>`).
    pub tokens: Option<(async_nats::Client, crate::config::Namespace)>,
    /// Where the LLM gateway's shared limits and budgets are kept.
    pub shared: Option<(redis::aio::ConnectionManager, crate::config::Namespace)>,
    /// The MCP servers whose tools the thinking agents are offered.
    pub mcp: Option<tools::mcp::McpHub>,
}

impl Context {
    /// What agents are made with in a process that connects nothing for them.
    pub fn unconnected(builtin: BuiltinSettings, llm: LlmSettings) -> Context {
        Context { builtin: Arc::new(builtin), llm: Arc::new(llm), ..Context::default() }
    }

    /// The LLM calls of an agent hosted here: the shared limits and budgets, recorded in
    /// the log, when the process has connected them.
    pub fn calls(&self) -> crate::llm::calls::Calls {
        let mut gateway = crate::llm::gateway::Gateway::configured(&self.llm);
        if let (Some(store), Some((redis, namespace))) = (&self.store, &self.shared) {
            gateway = gateway.shared(redis.clone(), namespace, store.pool().clone());
        }
        crate::llm::calls::Calls::new(&self.llm, gateway, self.store.clone())
    }
}

/// An implementation built into `brain`.
pub struct Builtin {
    pub implementation: Implementation,
    pub name: &'static str,
    pub description: &'static str,
    /// A fresh instance (a restart makes a new one).
    pub make: fn(&Context) -> Arc<dyn Agent>,
}

/// The implementations built into `brain`, in the order of [`Implementation::ALL`].
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        implementation: Implementation::Echo,
        name: "echo",
        description: "answers with the mission's payload; its payload can ask it to fail, hang, wait or die",
        make: |context| Arc::new(echo::Echo { faults: context.builtin.echo_faults }),
    },
    Builtin {
        implementation: Implementation::Plain,
        name: "plain",
        description: "sends the mission's task (payload.prompt, else its description, else its name) to the LLM gateway's route (payload.route, else the default) and answers with the model's answer",
        make: |context| {
            Arc::new(plain::Plain { calls: context.calls(), tokens: context.tokens.clone() })
        },
    },
    Builtin {
        implementation: Implementation::Coder,
        name: "coder",
        description: "thinks in steps through the LLM gateway with tools (read_file, list_dir, search_text under BRAIN_AGENT_ROOT; run_command for BRAIN_AGENT_COMMANDS), every model and tool call recorded in the mission's history",
        make: |context| Arc::new(thinking_agent(context, Implementation::Coder).expect("thinks")),
    },
    Builtin {
        implementation: Implementation::Ops,
        name: "ops",
        description: "looks after how software runs: thinks in steps with the same tools as coder (commands included), with an operator's prompt",
        make: |context| Arc::new(thinking_agent(context, Implementation::Ops).expect("thinks")),
    },
    Builtin {
        implementation: Implementation::Supervisor,
        name: "supervisor",
        description: "splits a mission into sub-missions for the agent kinds in BRAIN_SUPERVISOR_KINDS (spawn_missions), waits for them suspended (no worker slot held), and completes with their combined result; reads files under BRAIN_AGENT_ROOT, runs nothing",
        make: |context| {
            Arc::new(thinking_agent(context, Implementation::Supervisor).expect("thinks"))
        },
    },
    Builtin {
        implementation: Implementation::Architect,
        name: "architect",
        description: "answers questions of design: thinks in steps with the file tools only (read_file, list_dir, search_text), never a command",
        make: |context| {
            Arc::new(thinking_agent(context, Implementation::Architect).expect("thinks"))
        },
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

/// The system prompt of the thinking agent `kind`: the file `<kind>.md` in the prompts
/// folder when there is one (so a deployment tunes its prompts without a build, and
/// `brain missions replay` checks a changed prompt against past runs), else the built-in one.
pub fn prompt_of(settings: &BuiltinSettings, kind: &str) -> Option<String> {
    let builtin = builtin_prompt(kind)?;
    let custom = settings.prompts.as_ref().and_then(|folder| {
        match std::fs::read_to_string(folder.join(format!("{kind}.md"))) {
            Ok(prompt) if !prompt.trim().is_empty() => Some(prompt),
            Ok(_) => None,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                let folder = folder.display();
                tracing::warn!(%folder, kind, %error, "cannot read the prompt; the built-in one is used");
                None
            }
        }
    });
    Some(custom.unwrap_or_else(|| builtin.to_owned()))
}

/// A thinking agent's tools: the file tools under the root, with `commands` `run_command`
/// for the programs allowed, and `fetch_url` for the hosts allowed; none without a root.
pub fn tools_of(settings: &ToolSettings, commands: bool) -> tools::Registry {
    let Some(root) = &settings.root else { return tools::Registry::default() };
    let root = match tools::files::Root::new(root) {
        Ok(root) => root,
        Err(error) => {
            // Checked at start-up; a root removed since leaves the agent without tools.
            let root = root.display();
            tracing::warn!(%root, %error, "the agent root cannot be used: the agent has no tools");
            return tools::Registry::default();
        }
    };
    let mut registry = tools::Registry::default()
        .with(tools::files::ReadFile(root.clone()))
        .with(tools::files::ListDir(root.clone()))
        .with(tools::files::SearchText(root.clone()));
    if commands && !settings.commands.is_empty() {
        let allowed = settings.commands.clone();
        let sandbox = tools::sandbox::Sandbox::shared(&settings.sandbox);
        registry = registry.with(tools::command::RunCommand { root, allowed, sandbox });
    }
    if !settings.fetch_hosts.is_empty() {
        registry = registry.with(tools::fetch::FetchUrl::new(settings.fetch_hosts.clone()));
    }
    registry
}

/// The built-in agent `implementation` if it thinks in steps (`coder`, `ops`, `architect`,
/// `supervisor`): its prompt, and its tools (commands for `coder` and `ops` only;
/// sub-missions for `supervisor` only).
pub fn thinking_agent(
    context: &Context,
    implementation: Implementation,
) -> Option<agent_loop::Loop> {
    let (system_prompt, tools, spawn) = equipment(&context.builtin, implementation)?;
    Some(agent_loop::Loop {
        calls: context.calls(),
        system_prompt,
        tools,
        spawn,
        steps_max: context.builtin.steps_max,
        tokens: context.tokens.clone(),
        mcp: context.mcp.clone(),
    })
}

type Equipment = (String, tools::Registry, Option<tools::delegate::SpawnMissions>);

/// A thinking built-in agent's prompt and tools, as this process's settings give them.
fn equipment(settings: &BuiltinSettings, implementation: Implementation) -> Option<Equipment> {
    let prompt = prompt_of(settings, implementation.as_str())?;
    let commands = matches!(implementation, Implementation::Coder | Implementation::Ops);
    let spawn = (implementation == Implementation::Supervisor)
        .then(|| tools::delegate::SpawnMissions { kinds: settings.supervisor_kinds.clone() });
    Some((prompt, tools_of(&settings.tools, commands), spawn))
}

/// What `GET /api/agents/info` shows of a built-in agent: its system prompt and the names of
/// the tools it offers the model here (none for one that does not think in steps).
pub fn described(settings: &BuiltinSettings, name: &str) -> (Option<String>, Vec<String>) {
    match Implementation::parse(name).and_then(|implementation| equipment(settings, implementation))
    {
        None => (None, Vec::new()),
        Some((prompt, tools, spawn)) => {
            let mut names = tools.names();
            names.extend(spawn.map(|_| tools::delegate::NAME.to_owned()));
            (Some(prompt), names)
        }
    }
}

/// The implementation built into `brain` under `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|builtin| builtin.name == name)
}

/// The built-in `implementation`.
pub fn builtin_of(implementation: Implementation) -> &'static Builtin {
    BUILTIN
        .iter()
        .find(|builtin| builtin.implementation == implementation)
        .expect("every implementation is built in (checked by a test)")
}

/// The agents `spec` names, made with `context`: each supervised (restarted when it dies,
/// within `intensity`), for a worker to run and its host to tend.
pub fn build(
    spec: &AgentSpec,
    context: &Context,
    intensity: restart::Intensity,
) -> (Agents, Vec<Arc<restart::Restarting>>) {
    let mut agents = Agents::default();
    let mut supervised = Vec::new();
    for (kind, implementation) in spec.iter() {
        let builtin = builtin_of(implementation);
        let shared =
            restart::Restarting::new(kind, builtin.name, builtin.make, context.clone(), intensity);
        agents.insert(kind.to_owned(), Arc::new(restart::RestartingAgent(shared.clone())));
        supervised.push(shared);
    }
    (agents, supervised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_is_built_in_under_its_name() {
        for implementation in Implementation::ALL {
            assert_eq!(builtin_of(implementation).name, implementation.as_str());
            assert_eq!(builtin_prompt(implementation.as_str()).is_some(), implementation.thinks());
        }
        assert_eq!(BUILTIN.len(), Implementation::ALL.len());
    }

    #[test]
    fn agents_are_made_with_the_context_they_are_given() {
        let spec = AgentSpec::parse("echo, coder=echo, supervisor").unwrap();
        let (agents, supervised) = build(&spec, &Context::default(), Default::default());
        assert_eq!(agents.kinds(), ["coder", "echo", "supervisor"]);
        let implementations: Vec<&str> =
            supervised.iter().map(|shared| shared.implementation.as_str()).collect();
        assert_eq!(implementations, ["echo", "echo", "supervisor"]);
    }
}
