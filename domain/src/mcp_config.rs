//! The MCP servers agents may use, as runtime configuration: one aggregate per deployment
//! (`mcp_config/default`) whose history is the audit trail of who set which servers. Each
//! server is started as a child process (`stdio`) or reached over HTTP (`streamable_http`);
//! which agent kinds see it, and which of its tools they see, is part of its entry.
//!
//! No secret ever enters this stream: a child's environment is a list of variable *names*
//! whose values the serving process takes from its own environment, and an HTTP header's
//! value is the name of an environment variable (with an optional scheme word such as
//! `Bearer`), never the value itself.
//!
//! | from | event | to |
//! |---|---|---|
//! | any | `McpConfigChanged` (the whole new settings, who, which servers changed) | those settings |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::{Aggregate, DomainEvent};

/// Most servers one deployment configures: each holds a child process or a session.
pub const SERVERS_MAX: usize = 32;
/// Longest server name. The name prefixes its tools' names (`<server>.<tool>` to users,
/// `<server>__<tool>` to providers, which allow 64 characters in all).
pub const SERVER_NAME_LEN_MAX: usize = 24;
/// Most arguments of a `stdio` server's command.
pub const ARGS_MAX: usize = 64;
/// Longest argument, path or URL, in bytes.
pub const VALUE_LEN_MAX: usize = 2_048;
/// Most environment variables handed to a child, and most headers of an HTTP server.
pub const ENV_MAX: usize = 32;
/// Longest environment variable or header name.
pub const ENV_NAME_LEN_MAX: usize = 128;
/// Most agent kinds one server is offered to.
pub const KINDS_MAX: usize = 64;
/// Most tools in one server's allow-list.
pub const TOOLS_MAX: usize = 256;
/// Longest tool name in an allow-list (what the MCP specification allows).
pub const TOOL_NAME_LEN_MAX: usize = 128;
/// Longest call a server's tools may take when the server sets none.
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest per-call timeout a server may be given: a tool call holds a worker slot.
pub const CALL_TIMEOUT_MS_MAX: u64 = 600_000;
/// How long a server may take to start and answer `initialize` when it sets none: an
/// interpreter's first start on a busy machine takes seconds.
pub const INITIALIZE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const INITIALIZE_TIMEOUT_MS_MAX: u64 = 120_000;
/// Calls in flight at once to one server when it sets none.
pub const CONCURRENCY_DEFAULT: u32 = 4;
pub const CONCURRENCY_MAX: u32 = 64;

/// Environment variables a child or a header may never be given: the process's own secrets
/// and connections (a provider key goes only to its provider, decision 0040).
pub const ENV_DENIED: [&str; 6] = [
    "DATABASE_URL",
    "NATS_URL",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "QDRANT_API_KEY",
];
/// Prefix of the process's own settings, none of which a child or a header may be given.
pub const ENV_DENIED_PREFIX: &str = "BRAIN_";

/// How a server is reached.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A child process spoken to over its stdin and stdout: no shell, an environment holding
    /// only the variables named in `env`, in its own process group.
    Stdio,
    /// A server reached over MCP's streamable HTTP transport.
    StreamableHttp,
}

/// A header whose value is taken from the serving process's environment when the server is
/// connected, never stored: `{"from_env": "GITHUB_TOKEN", "scheme": "Bearer"}` sends
/// `Bearer <value of GITHUB_TOKEN>`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFromEnv {
    pub from_env: String,
    /// A word put before the value with a space (`Bearer`, `Token`): letters only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

/// One MCP server. (One flat object rather than a tagged enum, so that an unknown or
/// misplaced field is refused by name.)
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub transport: Transport,
    /// `stdio`: an absolute path to the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `stdio`: the program's arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `stdio`: names of variables whose values the serving process passes on from its own
    /// environment (`PATH` included, when the program needs it); nothing else is passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `stdio`: an absolute working directory; the serving process's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// `streamable_http`: `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `streamable_http`: header name → where its value comes from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "headers")]
    pub headers: BTreeMap<String, HeaderFromEnv>,
    /// The agent kinds whose missions are offered this server's tools.
    pub agent_kinds: Vec<String>,
    /// Only these of the server's tools are offered; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// How long one call may take (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    /// Calls in flight at once to this server, from one process (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// How long the server may take to start and answer `initialize` (default 30 s); past
    /// it, it is reported failed and tried again with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialize_timeout_ms: Option<u64>,
}

/// Reads the headers so that a value given in place of `{"from_env": ...}` (a secret pasted
/// in) is refused without being repeated in the error.
fn headers<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, HeaderFromEnv>, D::Error> {
    use serde::de::Error;
    let given = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    let mut headers = BTreeMap::new();
    for (name, value) in given {
        if !value.is_object() {
            return Err(D::Error::custom(format!(
                "headers.{name}: must be {{\"from_env\": \"VARIABLE\"}}: a header's value is named, never given"
            )));
        }
        let from = HeaderFromEnv::deserialize(value)
            .map_err(|error| D::Error::custom(format!("headers.{name}: {error}")))?;
        headers.insert(name, from);
    }
    Ok(headers)
}

impl McpServer {
    pub fn call_timeout_ms(&self) -> u64 {
        self.call_timeout_ms.unwrap_or(CALL_TIMEOUT_MS_DEFAULT)
    }

    pub fn initialize_timeout_ms(&self) -> u64 {
        self.initialize_timeout_ms.unwrap_or(INITIALIZE_TIMEOUT_MS_DEFAULT)
    }

    pub fn concurrency(&self) -> u32 {
        self.concurrency.unwrap_or(CONCURRENCY_DEFAULT)
    }

    /// Whether the allow-list lets `tool` through.
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.iter().any(|allowed| allowed == tool))
    }

    pub fn allows_kind(&self, kind: &str) -> bool {
        self.agent_kinds.iter().any(|allowed| allowed == kind)
    }
}

/// Every configured server, by name.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSettings {
    #[serde(default)]
    pub servers: BTreeMap<String, McpServer>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum McpConfigCommand {
    Set { settings: Box<McpSettings>, by: String, now_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum McpConfigEvent {
    /// `changed`: the servers added, changed or removed, by name.
    McpConfigChanged { settings: Box<McpSettings>, changed: Vec<String>, by: String, at_ms: i64 },
}

impl DomainEvent for McpConfigEvent {
    fn event_type(&self) -> &'static str {
        match self {
            McpConfigEvent::McpConfigChanged { .. } => "McpConfigChanged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidMcpSettings {
    /// The field's path: `servers.github.url`, `servers.time.args[2]`.
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidMcpSettings {
    InvalidMcpSettings { field: field.into(), reason: reason.into() }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpConfig {
    pub settings: McpSettings,
    pub updated_at_ms: Option<i64>,
}

/// Whether `name` may name a server: it prefixes tool names, so no `_` (the provider-safe
/// form joins server and tool with `__`) and no `.` (the form users see joins them with one).
pub fn check_server_name(name: &str) -> Result<(), String> {
    let fits = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts || name.len() > SERVER_NAME_LEN_MAX || !name.chars().all(fits) {
        return Err(format!(
            "must be 1 to {SERVER_NAME_LEN_MAX} characters of a-z, 0-9 and -, starting with a letter"
        ));
    }
    Ok(())
}

/// Whether `name` may name an environment variable given to a server.
fn check_env_name(field: &str, name: &str) -> Result<(), InvalidMcpSettings> {
    let fits = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts || name.len() > ENV_NAME_LEN_MAX || !name.chars().all(fits) {
        return Err(invalid(
            field,
            format!(
                "must name an environment variable: 1 to {ENV_NAME_LEN_MAX} characters of A-Z, a-z, 0-9 and _"
            ),
        ));
    }
    if ENV_DENIED.contains(&name) || name.starts_with(ENV_DENIED_PREFIX) {
        return Err(invalid(
            field,
            format!("{name} is the serving process's own setting and is never given to a server"),
        ));
    }
    Ok(())
}

/// A bounded string without NUL or control characters (an argument, a path, a URL).
fn check_value(field: &str, value: &str) -> Result<(), InvalidMcpSettings> {
    if value.len() > VALUE_LEN_MAX {
        return Err(invalid(field, format!("must be at most {VALUE_LEN_MAX} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not hold control characters"));
    }
    Ok(())
}

fn check_absolute(field: &str, path: &str) -> Result<(), InvalidMcpSettings> {
    check_value(field, path)?;
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(invalid(
            field,
            "must be an absolute path without `..` (no shell, no PATH search)",
        ));
    }
    Ok(())
}

fn check_transport(at: &str, server: &McpServer) -> Result<(), InvalidMcpSettings> {
    let only = |field: &str, present: bool, transport: &str| {
        if present {
            return Err(invalid(
                format!("{at}.{field}"),
                format!("only for transport {transport}"),
            ));
        }
        Ok(())
    };
    match server.transport {
        Transport::Stdio => {
            only("url", server.url.is_some(), "streamable_http")?;
            only("headers", !server.headers.is_empty(), "streamable_http")?;
            let Some(command) = &server.command else {
                return Err(invalid(format!("{at}.command"), "required for transport stdio"));
            };
            check_absolute(&format!("{at}.command"), command)?;
            if command.chars().any(char::is_whitespace) {
                return Err(invalid(
                    format!("{at}.command"),
                    "one program's path, no shell: its arguments go in args",
                ));
            }
            if server.args.len() > ARGS_MAX {
                return Err(invalid(format!("{at}.args"), format!("at most {ARGS_MAX} arguments")));
            }
            for (n, arg) in server.args.iter().enumerate() {
                check_value(&format!("{at}.args[{n}]"), arg)?;
            }
            if server.env.len() > ENV_MAX {
                return Err(invalid(format!("{at}.env"), format!("at most {ENV_MAX} variables")));
            }
            for (n, name) in server.env.iter().enumerate() {
                check_env_name(&format!("{at}.env[{n}]"), name)?;
            }
            if let Some(cwd) = &server.cwd {
                check_absolute(&format!("{at}.cwd"), cwd)?;
            }
        }
        Transport::StreamableHttp => {
            only("command", server.command.is_some(), "stdio")?;
            only("args", !server.args.is_empty(), "stdio")?;
            only("env", !server.env.is_empty(), "stdio")?;
            only("cwd", server.cwd.is_some(), "stdio")?;
            let field = format!("{at}.url");
            let Some(url) = &server.url else {
                return Err(invalid(field, "required for transport streamable_http"));
            };
            check_value(&field, url)?;
            let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
                return Err(invalid(field, "must be an http:// or https:// URL with a host"));
            }
            if server.headers.len() > ENV_MAX {
                return Err(invalid(format!("{at}.headers"), format!("at most {ENV_MAX} headers")));
            }
            for (name, from) in &server.headers {
                check_header(&format!("{at}.headers.{name}"), name, from)?;
            }
        }
    }
    Ok(())
}

fn check_header(field: &str, name: &str, from: &HeaderFromEnv) -> Result<(), InvalidMcpSettings> {
    let token = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.len() > ENV_NAME_LEN_MAX || !name.chars().all(token) {
        return Err(invalid(field, "a header name: A-Z, a-z, 0-9, - and _"));
    }
    check_env_name(&format!("{field}.from_env"), &from.from_env)?;
    let word = from.scheme.as_deref().unwrap_or("Bearer");
    if word.is_empty() || word.len() > 16 || !word.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(invalid(
            format!("{field}.scheme"),
            "1 to 16 letters (a scheme word such as Bearer, never a secret)",
        ));
    }
    Ok(())
}

fn check_server(name: &str, server: &McpServer) -> Result<(), InvalidMcpSettings> {
    let at = format!("servers.{name}");
    check_server_name(name).map_err(|reason| invalid(&at, reason))?;
    check_transport(&at, server)?;
    if server.agent_kinds.is_empty() || server.agent_kinds.len() > KINDS_MAX {
        return Err(invalid(format!("{at}.agent_kinds"), format!("1 to {KINDS_MAX} agent kinds")));
    }
    for (n, kind) in server.agent_kinds.iter().enumerate() {
        crate::mission::check_agent(kind)
            .map_err(|error| invalid(format!("{at}.agent_kinds[{n}]"), error.to_string()))?;
    }
    if let Some(tools) = &server.tools {
        if tools.len() > TOOLS_MAX {
            return Err(invalid(format!("{at}.tools"), format!("at most {TOOLS_MAX} tools")));
        }
        for (n, tool) in tools.iter().enumerate() {
            let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
            if tool.is_empty() || tool.len() > TOOL_NAME_LEN_MAX || !tool.chars().all(fits) {
                return Err(invalid(
                    format!("{at}.tools[{n}]"),
                    format!(
                        "a tool name: 1 to {TOOL_NAME_LEN_MAX} characters of A-Z, a-z, 0-9, _, - and ."
                    ),
                ));
            }
        }
    }
    if server.call_timeout_ms.is_some_and(|ms| ms == 0 || ms > CALL_TIMEOUT_MS_MAX) {
        return Err(invalid(
            format!("{at}.call_timeout_ms"),
            format!("between 1 and {CALL_TIMEOUT_MS_MAX}"),
        ));
    }
    if server.initialize_timeout_ms.is_some_and(|ms| ms == 0 || ms > INITIALIZE_TIMEOUT_MS_MAX) {
        return Err(invalid(
            format!("{at}.initialize_timeout_ms"),
            format!("between 1 and {INITIALIZE_TIMEOUT_MS_MAX}"),
        ));
    }
    if server.concurrency.is_some_and(|n| n == 0 || n > CONCURRENCY_MAX) {
        return Err(invalid(
            format!("{at}.concurrency"),
            format!("between 1 and {CONCURRENCY_MAX}"),
        ));
    }
    Ok(())
}

/// Checks settings as given by a caller; every refusal names the field.
pub fn validate(settings: &McpSettings) -> Result<(), InvalidMcpSettings> {
    if settings.servers.len() > SERVERS_MAX {
        return Err(invalid("servers", format!("at most {SERVERS_MAX} servers")));
    }
    for (name, server) in &settings.servers {
        check_server(name, server)?;
    }
    Ok(())
}

/// The servers added, changed or removed between two settings.
fn changed(before: &McpSettings, after: &McpSettings) -> Vec<String> {
    let names = before.servers.keys().chain(after.servers.keys());
    let mut changed: Vec<String> = names
        .filter(|name| before.servers.get(*name) != after.servers.get(*name))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

impl Aggregate for McpConfig {
    type Command = McpConfigCommand;
    type Event = McpConfigEvent;
    type Error = InvalidMcpSettings;

    fn stream_type() -> StreamType {
        StreamType::parse("mcp_config").expect("a valid stream type")
    }

    fn decide(&self, command: McpConfigCommand) -> Result<Vec<McpConfigEvent>, InvalidMcpSettings> {
        match command {
            McpConfigCommand::Set { settings, by, now_ms } => {
                validate(&settings)?;
                let changed = changed(&self.settings, &settings);
                // The same settings again change nothing and record nothing.
                if changed.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![McpConfigEvent::McpConfigChanged { settings, changed, by, at_ms: now_ms }])
            }
        }
    }

    fn apply(&mut self, event: &McpConfigEvent) {
        match event {
            McpConfigEvent::McpConfigChanged { settings, at_ms, .. } => {
                self.settings = (**settings).clone();
                self.updated_at_ms = Some(*at_ms);
            }
        }
        assert!(self.settings.servers.len() <= SERVERS_MAX, "more than {SERVERS_MAX} MCP servers");
    }
}

#[cfg(test)]
mod tests;
