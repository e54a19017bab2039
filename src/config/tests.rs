//! The configuration as a user meets it: a bad value of any variable stops `brain` with a
//! message naming the variable and what it accepts, and the README's Configuration table
//! lists every variable the command line reads, with the default it really has.

use std::collections::BTreeMap;

use super::*;
use crate::cli::{Cli, Command};

/// `brain <args>` parsed as the process would parse it (the environment included).
fn parse(args: &[&str]) -> Result<Cli, String> {
    let args = std::iter::once("brain").chain(args.iter().copied());
    Cli::try_parse_args(args).map_err(|error| error.render().to_string())
}

/// The refusal of `args`, which must name `variable` and say what is accepted (`accepts`).
fn refused(args: &[&str], variable: &str, accepts: &str) {
    let message = match parse(args) {
        Ok(cli) => panic!("{args:?} was accepted: {cli:?}"),
        Err(message) => message,
    };
    assert!(message.contains(variable), "{args:?}: the message names {variable}: {message}");
    assert!(message.contains(accepts), "{args:?}: the message says {accepts:?}: {message}");
}

#[test]
fn a_step_limit_of_zero_is_refused_not_replaced() {
    refused(&["worker", "--agent-steps-max", "0"], "BRAIN_AGENT_STEPS_MAX", "1..=100");
    refused(&["worker", "--agent-steps-max", "101"], "BRAIN_AGENT_STEPS_MAX", "1..=100");
    refused(&["worker", "--agent-steps-max", "many"], "BRAIN_AGENT_STEPS_MAX", "invalid digit");
}

#[test]
fn a_misspelt_provider_is_refused_with_the_ones_that_exist() {
    let accepts = "offline, ollama, openai, anthropic";
    refused(&["serve", "--llm-provider", "opneai"], "BRAIN_LLM_PROVIDER", accepts);
    refused(&["worker", "--llm-provider", "gpt"], "BRAIN_LLM_PROVIDER", accepts);
    refused(&["serve", "--llm-record", "some"], "BRAIN_LLM_RECORD", "full, usage");
    refused(&["serve", "--llm-host", "localhost:11434"], "BRAIN_LLM_HOST", "http://");
}

#[test]
fn a_bad_supervisor_kind_is_refused_not_dropped() {
    let accepts = "a-z, 0-9";
    refused(&["worker", "--supervisor-kinds", "coder,Ops"], "BRAIN_SUPERVISOR_KINDS", accepts);
    refused(&["serve", "--supervisor-kinds", "coder,,ops"], "BRAIN_SUPERVISOR_KINDS", accepts);
}

#[test]
fn an_agent_root_or_prompts_folder_that_does_not_exist_is_refused() {
    let missing = "/nonexistent/brain-agent-root";
    refused(&["worker", "--agent-root", missing], "BRAIN_AGENT_ROOT", "an existing folder");
    refused(&["serve", "--agent-prompts", missing], "BRAIN_AGENT_PROMPTS", "an existing folder");
    let file = env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml";
    refused(&["worker", "--agent-root", &file], "BRAIN_AGENT_ROOT", "not a folder");
}

#[test]
fn tool_lists_refuse_what_a_tool_could_not_match() {
    let program = "a program's bare name";
    refused(&["worker", "--agent-commands", "ls,/bin/rm"], "BRAIN_AGENT_COMMANDS", program);
    refused(&["worker", "--agent-commands", "ls -la"], "BRAIN_AGENT_COMMANDS", program);
    let host = "a host name";
    refused(&["worker", "--agent-fetch-hosts", "http://x.org/"], "BRAIN_AGENT_FETCH_HOSTS", host);
}

#[test]
fn worker_and_serve_numbers_out_of_range_are_refused() {
    refused(&["worker", "--worker-agents", "coder=nobody"], "BRAIN_WORKER_AGENTS", "built in:");
    refused(&["worker", "--concurrency", "0"], "BRAIN_WORKER_CONCURRENCY", "at least 1");
    refused(&["worker", "--lease-ms", "0"], "BRAIN_LEASE_MS", "1..");
    refused(&["serve", "--queue-weights", "1,2"], "BRAIN_QUEUE_WEIGHTS", "four weights");
    refused(&["serve", "--default-agent", "Coder"], "BRAIN_DEFAULT_AGENT", "a-z, 0-9");
    refused(&["serve", "--namespace", "a.b"], "BRAIN_NAMESPACE", "a-z, 0-9 and _");
    refused(&["migrate", "--db-connections-max", "0"], "BRAIN_DB_CONNECTIONS_MAX", "1..");
}

#[test]
fn good_values_reach_the_typed_settings() {
    let root = env!("CARGO_MANIFEST_DIR");
    let args = [
        "worker",
        "--agents",
        "coder=plain,ops",
        "--agent-root",
        root,
        "--agent-commands",
        "ls, wc",
        "--agent-steps-max",
        "3",
        "--llm-provider",
        "ollama",
        "--openai-api-key",
        "sk-not-to-be-shown",
    ];
    let cli = parse(&args).unwrap();
    let shown = format!("{cli:?}");
    assert!(!shown.contains("sk-not-to-be-shown"), "Debug never shows a key: {shown}");
    let Command::Worker(options) = cli.command else { panic!("a worker") };
    let builtin = &options.builtin;
    assert_eq!(builtin.worker_agents.get("coder"), Some(agents::Implementation::Plain));
    assert_eq!(builtin.tools.root.as_deref(), Some(std::path::Path::new(root)));
    assert_eq!(builtin.tools.commands, ["ls", "wc"]);
    assert_eq!(builtin.steps_max, 3);
    assert_eq!(options.llm.provider, llm::ProviderKind::Ollama);
    assert_eq!(options.llm.model(), "llama3.2", "the provider's model when none is set");
    assert_eq!(
        options.llm.openai_api_key.as_ref().map(|key| key.expose()),
        Some("sk-not-to-be-shown")
    );
}

/// Every variable any subcommand reads, with its default (`None`: it has none).
fn variables(command: &clap::Command, found: &mut BTreeMap<String, Option<String>>) {
    for arg in command.get_arguments() {
        let Some(variable) = arg.get_env() else { continue };
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|value| value.to_string_lossy().into()).collect();
        let default = (!defaults.is_empty()).then(|| defaults.join(","));
        let name = variable.to_string_lossy().into_owned();
        if let Some(seen) = found.insert(name.clone(), default.clone()) {
            assert_eq!(seen, default, "{name} has one default in every subcommand");
        }
    }
    for sub in command.get_subcommands() {
        variables(sub, found);
    }
}

/// The README's Configuration table: each variable with its default when the table gives
/// one as a value (in backticks), `None` when it says there is none or describes it.
fn readme_table() -> BTreeMap<String, Option<String>> {
    let readme = include_str!("../../README.md");
    let section = readme.split("\n## Configuration\n").nth(1).expect("a Configuration section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut table = BTreeMap::new();
    for row in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let default = cells[1].trim();
        let default = (default.starts_with('`') && default.ends_with('`'))
            .then(|| default.trim_matches('`').to_owned());
        for variable in cells[0].trim_start_matches("| ").split(", ") {
            table.insert(variable.trim_matches('`').to_owned(), default.clone());
        }
    }
    table
}

#[test]
fn the_readme_lists_every_variable_with_its_real_default() {
    let mut read = BTreeMap::new();
    variables(&<Cli as clap::CommandFactory>::command(), &mut read);
    let listed = readme_table();
    for (variable, default) in &read {
        let Some(documented) = listed.get(variable) else {
            panic!("{variable} is read by the command line but missing from README.md's table")
        };
        assert_eq!(documented, default, "README.md's default of {variable}");
    }
    // RUST_LOG is read by the log filter, not by clap.
    for variable in listed.keys().filter(|variable| *variable != "RUST_LOG") {
        assert!(read.contains_key(variable), "README.md lists {variable}, which nothing reads");
    }
}

#[test]
fn a_url_in_a_log_line_never_carries_its_password() {
    assert_eq!(redacted_url("nats://brain:s3cret@nats:4222"), "nats://brain:***@nats:4222");
    assert_eq!(redacted_url("postgres://u:p@h:5432/db"), "postgres://u:***@h:5432/db");
    assert_eq!(redacted_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    assert_eq!(redacted_url("not a url"), "not a url");
}

#[test]
fn namespaces_refuse_what_would_break_a_subject_or_stream_name() {
    assert!(Namespace::parse("brain").is_ok());
    assert!(Namespace::parse("t_0a1b").is_ok());
    for bad in ["", "1abc", "Brain", "a.b", "a-b", &"a".repeat(41)] {
        assert!(Namespace::parse(bad).is_err(), "{bad:?} should be refused");
    }
}
