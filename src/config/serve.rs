//! What `brain serve` alone is configured with: where it listens, the agent kinds missions
//! may name, how many missions it runs itself, how the queue weighs priority against waiting,
//! and how long command outcomes are kept.

use std::net::SocketAddr;

use crate::config::AGENT_KINDS_DEFAULT;

pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8000";
pub const WORKERS_DEFAULT: usize = 4;
pub const QUEUE_AGING_S_DEFAULT: u64 = 300;
pub const QUEUE_WEIGHTS_DEFAULT: &str = "0,1,2,4";
/// How long a console session lasts by default: a working day.
pub const SESSION_TTL_S_DEFAULT: u64 = 12 * 3_600;
/// A week: long past any client's retries.
pub const COMMAND_OUTCOMES_KEEP_H_DEFAULT: u64 = 7 * 24;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeSettings {
    /// Address the HTTP API listens on.
    #[arg(long, env = "BRAIN_HTTP_ADDR", default_value = HTTP_ADDR_DEFAULT)]
    pub http_addr: SocketAddr,
    /// Agent kind of a mission enqueued without one.
    #[arg(long, env = "BRAIN_DEFAULT_AGENT", default_value = crate::config::DEFAULT_AGENT, value_parser = agent_kind)]
    pub default_agent: String,
    /// Missions this process runs at once (0: run none here, only `brain worker`s do).
    #[arg(long, env = "BRAIN_WORKERS", default_value_t = WORKERS_DEFAULT)]
    pub workers: usize,
    /// Agent kinds a mission may name (besides those the workers serve), comma-separated.
    #[arg(long, env = "BRAIN_AGENT_KINDS", default_value = AGENT_KINDS_DEFAULT, value_delimiter = ',', value_parser = agent_kind)]
    pub agent_kinds: Vec<String>,
    /// Waiting time that makes a mission worth one priority level more, in seconds.
    #[arg(long, env = "BRAIN_QUEUE_AGING_S", default_value_t = QUEUE_AGING_S_DEFAULT)]
    pub queue_aging_s: u64,
    /// Weights of low, normal, high and critical, in priority levels.
    #[arg(long, env = "BRAIN_QUEUE_WEIGHTS", default_value = QUEUE_WEIGHTS_DEFAULT, value_parser = parse_weights)]
    pub queue_weights: [u32; 4],
    /// Hours a command's outcome is kept for idempotent repeats; older ones are pruned.
    #[arg(long, env = "BRAIN_COMMAND_OUTCOMES_KEEP_H", default_value_t = COMMAND_OUTCOMES_KEEP_H_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub command_outcomes_keep_h: u64,
}

/// `low,normal,high,critical`, four whole numbers.
pub fn parse_weights(value: &str) -> Result<[u32; 4], String> {
    let weights: Vec<u32> = value
        .split(',')
        .map(|weight| weight.trim().parse::<u32>().map_err(|error| format!("{weight:?}: {error}")))
        .collect::<Result<_, _>>()?;
    weights.try_into().map_err(|_| "four weights: low,normal,high,critical".to_owned())
}

/// An agent kind as missions name it.
pub(crate) fn agent_kind(value: &str) -> Result<String, String> {
    let kind = value.trim();
    domain::mission::check_agent(kind).map_err(|error| format!("{value:?}: {error}"))?;
    Ok(kind.to_owned())
}

/// Who may call the serve, and from which pages.
#[derive(Clone, clap::Args)]
pub struct AccessSettings {
    /// An admin key (`brn_<key id>_<secret>`) this serve makes sure exists, for automation
    /// that must know its key before the first start. Without it, a first start with no key
    /// makes an admin key and prints it once.
    #[arg(long, env = "BRAIN_ADMIN_KEY", value_parser = admin_key, hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Host names the serve answers to besides IP addresses and `localhost`, comma-separated
    /// (`brain.example.com`, or with a port): any other `Host` is refused, so a DNS-rebinding
    /// page cannot reach the API.
    #[arg(long, env = "BRAIN_PUBLIC_HOSTS", value_delimiter = ',')]
    pub public_hosts: Vec<String>,
    /// Origins (`https://deck.example.com`) whose pages may call the API besides the serve's
    /// own, comma-separated.
    #[arg(long, env = "BRAIN_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// How long a console session lasts, in seconds.
    #[arg(long, env = "BRAIN_SESSION_TTL_S", default_value_t = SESSION_TTL_S_DEFAULT, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub session_ttl_s: u64,
}

impl Default for AccessSettings {
    fn default() -> AccessSettings {
        AccessSettings {
            admin_key: None,
            public_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_ttl_s: SESSION_TTL_S_DEFAULT,
        }
    }
}

impl std::fmt::Debug for AccessSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSettings")
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("public_hosts", &self.public_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("session_ttl_s", &self.session_ttl_s)
            .finish()
    }
}

/// A key's shape, `brn_<16 hexadecimal>_<64 hexadecimal>`: whether it opens anything is
/// `identity`'s to say.
fn admin_key(value: &str) -> Result<String, String> {
    let value = value.trim();
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let shaped = value
        .strip_prefix("brn_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, secret)| hex(id, 16) && hex(secret, 64));
    if !shaped {
        return Err("a key reads brn_<16 hexadecimal characters>_<64 hexadecimal characters> \
                    (make one with `brain keys create`, or let the first start make one)"
            .to_owned());
    }
    Ok(value.to_owned())
}
