//! Settings of the agents a process runs: which built-in agent serves which agent kind
//! ([`AgentSpec`]), what the thinking agents may use ([`BuiltinSettings`], [`ToolSettings`]),
//! how the registry's live side supervises them ([`AgentSettings`]) and how often a built-in
//! agent may die ([`RestartSettings`]). Plain data: the agents are made from it by the
//! process that hosts them (`crate::agents::host`), never while the arguments are parsed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::config::llm::LlmSettings;

/// Kinds the workers serve out of the box: `coder` (the default kind) runs on
/// the built-in `coder` agent, which thinks through the LLM gateway (offline until an LLM
/// is configured), so a first mission completes.
pub const WORKER_AGENTS_DEFAULT: &str = "echo,coder,ops,architect,supervisor";
/// The kinds the `supervisor` agent may hand sub-missions to out of the box.
pub const SUPERVISOR_KINDS_DEFAULT: &str = "coder,ops,architect";
/// Model calls one attempt of a thinking agent may make, out of the box and at most.
pub const AGENT_STEPS_MAX_DEFAULT: u32 = 12;
/// The echo agent refuses to die on request unless told otherwise.
pub const ECHO_FAULTS_DEFAULT: bool = false;
pub const AGENT_STEPS_MAX_MAX: u32 = 100;
pub const SUPERVISOR_INTERVAL_S_DEFAULT: u64 = 30;
pub const AGENT_UNRESPONSIVE_AFTER_S_DEFAULT: u64 = 60;
/// Zero: an unchanged heartbeat is never recorded again.
pub const HEARTBEAT_RECORD_EVERY_S_DEFAULT: u64 = 0;
pub const AGENT_LEASE_S_DEFAULT: u64 = 60;
pub const AGENT_RESTARTS_MAX_DEFAULT: u32 = 3;
pub const AGENT_RESTARTS_WINDOW_S_DEFAULT: u64 = 60;
/// The user `run_command` runs programs as: one of their own, owning nothing of the serve's.
pub const COMMAND_USER_DEFAULT: &str = "brain-cmd";
pub const COMMAND_TIMEOUT_S_DEFAULT: u64 = 30;
/// CPU seconds one process of a command may use (a build's compiler runs in many).
pub const COMMAND_CPU_S_DEFAULT: u64 = 60;
/// Data (heap) one process of a command may hold, in MiB: enough for a compiler.
pub const COMMAND_MEMORY_MB_DEFAULT: u64 = 4_096;
/// Processes and threads the command user may have at once, all commands together.
pub const COMMAND_PROCESSES_DEFAULT: u64 = 512;
/// Largest file a command may write, in MiB.
pub const COMMAND_FILE_MB_DEFAULT: u64 = 1_024;

/// An agent implementation built into `brain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Implementation {
    Echo,
    Plain,
    Coder,
    Ops,
    Supervisor,
    Architect,
}

impl Implementation {
    pub const ALL: [Implementation; 6] = [
        Implementation::Echo,
        Implementation::Plain,
        Implementation::Coder,
        Implementation::Ops,
        Implementation::Supervisor,
        Implementation::Architect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Implementation::Echo => "echo",
            Implementation::Plain => "plain",
            Implementation::Coder => "coder",
            Implementation::Ops => "ops",
            Implementation::Supervisor => "supervisor",
            Implementation::Architect => "architect",
        }
    }

    pub fn parse(name: &str) -> Option<Implementation> {
        Implementation::ALL.into_iter().find(|implementation| implementation.as_str() == name)
    }

    /// Whether it thinks in steps through the LLM gateway, with a prompt and tools.
    pub fn thinks(self) -> bool {
        !matches!(self, Implementation::Echo | Implementation::Plain)
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which built-in agent serves which agent kind: `kind[=implementation],...` (`echo` serves
/// kind `echo` with the echo agent; `coder=echo` serves kind `coder` with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSpec(BTreeMap<String, Implementation>);

impl AgentSpec {
    pub fn parse(spec: &str) -> Result<AgentSpec, String> {
        let mut kinds = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (kind, name) = item.split_once('=').unwrap_or((item, item));
            let (kind, name) = (kind.trim(), name.trim());
            domain::mission::check_agent(kind).map_err(|error| format!("{item}: {error}"))?;
            let implementation = Implementation::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Implementation::ALL.iter().map(|i| i.as_str()).collect();
                format!("{item}: no built-in agent {name:?} (built in: {})", known.join(", "))
            })?;
            kinds.insert(kind.to_owned(), implementation);
        }
        Ok(AgentSpec(kinds))
    }

    pub fn kinds(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Implementation)> {
        self.0.iter().map(|(kind, implementation)| (kind.as_str(), *implementation))
    }

    /// The implementation serving `kind`, if this spec names the kind.
    pub fn get(&self, kind: &str) -> Option<Implementation> {
        self.0.get(kind).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a thinking agent's tools may touch. Nothing by default: without a root there are no
/// file tools and no `run_command`; without hosts, no `fetch_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ToolSettings {
    /// Folder the thinking agents' file tools (`read_file`, `list_dir`, `search_text`) work
    /// under, and `run_command` runs in; it must exist. None: no tools.
    #[arg(long = "agent-root", env = "BRAIN_AGENT_ROOT", value_parser = existing_folder)]
    pub root: Option<PathBuf>,
    /// Programs `run_command` may run in that folder, comma-separated (`ls,wc,cargo`); none:
    /// no `run_command`. Only `coder` and `ops` get it.
    #[arg(long = "agent-commands", env = "BRAIN_AGENT_COMMANDS", value_delimiter = ',', value_parser = program)]
    pub commands: Vec<String>,
    /// Hosts (`host` or `host:port`) `fetch_url` may GET from, comma-separated; none: no
    /// `fetch_url`.
    #[arg(long = "agent-fetch-hosts", env = "BRAIN_AGENT_FETCH_HOSTS", value_delimiter = ',', value_parser = host)]
    pub fetch_hosts: Vec<String>,
    #[command(flatten)]
    pub sandbox: CommandSettings,
}

/// How `run_command` contains the programs it runs (`crate::agents::tools::sandbox`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, clap::Args)]
pub struct CommandSettings {
    /// The unprivileged user commands run as (`scripts/services.sh` and the image create
    /// it). Missing, or a serve that cannot switch users: no command runs.
    #[arg(long = "command-user", env = "BRAIN_COMMAND_USER", default_value = COMMAND_USER_DEFAULT, value_parser = user_name)]
    pub user: String,
    /// Whether commands reach the network; off, each runs in a network namespace of its
    /// own with only a loopback.
    #[arg(long = "command-network", env = "BRAIN_COMMAND_NETWORK", default_value_t = false, action = clap::ArgAction::Set)]
    pub network: bool,
    /// Seconds a command may run before it is killed with all it started.
    #[arg(long = "command-timeout-s", env = "BRAIN_COMMAND_TIMEOUT_S", default_value_t = COMMAND_TIMEOUT_S_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout_s: u64,
    /// CPU seconds each process of a command may use.
    #[arg(long = "command-cpu-s", env = "BRAIN_COMMAND_CPU_S", default_value_t = COMMAND_CPU_S_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub cpu_s: u64,
    /// Data each process of a command may hold, in MiB.
    #[arg(long = "command-memory-mb", env = "BRAIN_COMMAND_MEMORY_MB", default_value_t = COMMAND_MEMORY_MB_DEFAULT, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub memory_mb: u64,
    /// Processes and threads the command user may have at once.
    #[arg(long = "command-processes", env = "BRAIN_COMMAND_PROCESSES", default_value_t = COMMAND_PROCESSES_DEFAULT, value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub processes: u64,
    /// Largest file a command may write, in MiB.
    #[arg(long = "command-file-mb", env = "BRAIN_COMMAND_FILE_MB", default_value_t = COMMAND_FILE_MB_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub file_mb: u64,
}

impl Default for CommandSettings {
    fn default() -> CommandSettings {
        CommandSettings {
            user: COMMAND_USER_DEFAULT.to_owned(),
            network: false,
            timeout_s: COMMAND_TIMEOUT_S_DEFAULT,
            cpu_s: COMMAND_CPU_S_DEFAULT,
            memory_mb: COMMAND_MEMORY_MB_DEFAULT,
            processes: COMMAND_PROCESSES_DEFAULT,
            file_mb: COMMAND_FILE_MB_DEFAULT,
        }
    }
}

/// How this process makes its built-in agents: which serves which kind, their prompts, tools
/// and limits.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct BuiltinSettings {
    /// Agent kinds served: `kind[=built-in agent],...` (`coder=echo` runs coder missions with
    /// the echo agent).
    #[arg(long = "worker-agents", visible_alias = "agents", env = "BRAIN_WORKER_AGENTS", default_value = WORKER_AGENTS_DEFAULT, value_parser = AgentSpec::parse)]
    pub worker_agents: AgentSpec,
    #[command(flatten)]
    pub tools: ToolSettings,
    /// A folder of `<kind>.md` files replacing the built-in system prompts of the thinking
    /// agents; it must exist. A missing file keeps the built-in prompt.
    #[arg(long = "agent-prompts", env = "BRAIN_AGENT_PROMPTS", value_parser = existing_folder)]
    pub prompts: Option<PathBuf>,
    /// Model calls one attempt of a thinking agent may make before it fails with `step limit`.
    #[arg(long = "agent-steps-max", env = "BRAIN_AGENT_STEPS_MAX", default_value_t = AGENT_STEPS_MAX_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=AGENT_STEPS_MAX_MAX as i64))]
    pub steps_max: u32,
    /// Agent kinds the `supervisor` agent may hand sub-missions to, comma-separated.
    #[arg(long = "supervisor-kinds", env = "BRAIN_SUPERVISOR_KINDS", default_value = SUPERVISOR_KINDS_DEFAULT, value_delimiter = ',', value_parser = crate::config::serve::agent_kind)]
    pub supervisor_kinds: Vec<String>,
    /// Whether the echo agent obeys a payload asking it to fail, hang or die
    /// (`fail_attempts`, `fail_permanently`, `hang_attempts`, `error_nul`, `panic_attempts`,
    /// `exit_attempts`): for tests and demos of retries and restarts only. Off, such a
    /// mission fails alone and the agent serves on, so no enqueue can hold its slots or take
    /// a kind down for everyone.
    #[arg(long = "echo-faults", env = "BRAIN_ECHO_FAULTS", default_value_t = ECHO_FAULTS_DEFAULT, action = clap::ArgAction::Set)]
    pub echo_faults: bool,
}

impl Default for BuiltinSettings {
    fn default() -> BuiltinSettings {
        BuiltinSettings {
            worker_agents: AgentSpec::parse(WORKER_AGENTS_DEFAULT).expect("a valid default"),
            tools: ToolSettings::default(),
            prompts: None,
            steps_max: AGENT_STEPS_MAX_DEFAULT,
            supervisor_kinds: SUPERVISOR_KINDS_DEFAULT.split(',').map(str::to_owned).collect(),
            echo_faults: ECHO_FAULTS_DEFAULT,
        }
    }
}

/// Settings of the agent registry's live side (supervision, heartbeat recording, the leases
/// external agents get), and what `brain serve`'s built-in agents and its API's LLM calls
/// are made with.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentSettings {
    /// Seconds between the agent supervisor's sweeps.
    #[arg(long, env = "BRAIN_SUPERVISOR_INTERVAL_S", default_value_t = SUPERVISOR_INTERVAL_S_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub supervisor_interval_s: u64,
    /// Seconds of silence after which an active agent is marked unresponsive.
    #[arg(long, env = "BRAIN_AGENT_UNRESPONSIVE_AFTER_S", default_value_t = AGENT_UNRESPONSIVE_AFTER_S_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub unresponsive_after_s: u64,
    /// Seconds after which an unchanged heartbeat is recorded in the log again; 0: never (only
    /// heartbeats that change something are recorded).
    #[arg(long, env = "BRAIN_HEARTBEAT_RECORD_EVERY_S", default_value_t = HEARTBEAT_RECORD_EVERY_S_DEFAULT, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub heartbeat_record_every_s: u64,
    /// Lease an external agent's claim grants, in seconds, when the claim names none.
    #[arg(long, env = "BRAIN_AGENT_LEASE_S", default_value_t = AGENT_LEASE_S_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub lease_s: u64,
    #[command(flatten)]
    pub builtin: BuiltinSettings,
    #[command(flatten)]
    pub llm: LlmSettings,
}

impl Default for AgentSettings {
    fn default() -> AgentSettings {
        AgentSettings {
            supervisor_interval_s: SUPERVISOR_INTERVAL_S_DEFAULT,
            unresponsive_after_s: AGENT_UNRESPONSIVE_AFTER_S_DEFAULT,
            heartbeat_record_every_s: HEARTBEAT_RECORD_EVERY_S_DEFAULT,
            lease_s: AGENT_LEASE_S_DEFAULT,
            builtin: BuiltinSettings::default(),
            llm: LlmSettings::default(),
        }
    }
}

/// How often a built-in agent may die before it stays down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct RestartSettings {
    /// Restarts a built-in agent gets within the window; one more death marks it failed.
    #[arg(long, env = "BRAIN_AGENT_RESTARTS_MAX", default_value_t = AGENT_RESTARTS_MAX_DEFAULT)]
    pub restarts_max: u32,
    /// The window restarts are counted in, in seconds.
    #[arg(long, env = "BRAIN_AGENT_RESTARTS_WINDOW_S", default_value_t = AGENT_RESTARTS_WINDOW_S_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub restarts_window_s: u64,
}

impl Default for RestartSettings {
    fn default() -> RestartSettings {
        RestartSettings {
            restarts_max: AGENT_RESTARTS_MAX_DEFAULT,
            restarts_window_s: AGENT_RESTARTS_WINDOW_S_DEFAULT,
        }
    }
}

/// A folder that exists now: a typo in a path stops the process instead of leaving an agent
/// without its tools or prompts.
fn existing_folder(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => Ok(path),
        Ok(_) => Err(format!("{value:?} is not a folder; an existing folder is expected")),
        Err(error) => Err(format!("{value:?}: {error}; an existing folder is expected")),
    }
}

/// A program name as `run_command` matches it: a bare name, no path, no blank.
fn program(value: &str) -> Result<String, String> {
    let name = value.trim();
    let bare =
        !name.is_empty() && !name.contains(['/', '\0']) && !name.contains(char::is_whitespace);
    if !bare {
        return Err(format!("{value:?}: a program's bare name is expected (`ls`, `cargo`)"));
    }
    Ok(name.to_owned())
}

/// A user name as `useradd` makes them: a lowercase letter or `_`, then letters, digits,
/// `_` or `-`, at most 32.
fn user_name(value: &str) -> Result<String, String> {
    let name = value.trim();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        && name.len() <= 32;
    if !valid {
        return Err(format!("{value:?}: a user name is expected (`brain-cmd`)"));
    }
    Ok(name.to_owned())
}

/// `host` or `host:port`, as `fetch_url` compares it (`_` included: container service names
/// have it).
fn host(value: &str) -> Result<String, String> {
    let host = value.trim().to_lowercase();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if !valid {
        return Err(format!("{value:?}: a host name, or host:port, is expected (`example.com`)"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lists_map_kinds_to_built_in_implementations() {
        let spec = AgentSpec::parse("echo, coder=echo").unwrap();
        assert_eq!(spec.kinds(), ["coder", "echo"]);
        assert_eq!(spec.get("coder"), Some(Implementation::Echo));
        assert_eq!(AgentSpec::parse("coder").unwrap().get("coder"), Some(Implementation::Coder));
        assert!(AgentSpec::parse("reviewer").unwrap_err().contains("no built-in agent"));
        assert!(AgentSpec::parse("Bad=echo").unwrap_err().contains("agent"));
        assert!(AgentSpec::parse("").unwrap().is_empty());
    }

    #[test]
    fn the_defaults_parse() {
        let defaults = BuiltinSettings::default();
        assert_eq!(defaults.worker_agents.kinds().len(), 5);
        assert_eq!(defaults.supervisor_kinds, ["coder", "ops", "architect"]);
    }
}
