//! What `brain serve` alone is configured with: where it listens and the bounds of its HTTP
//! server, the agent kinds missions may name, how many missions it runs itself, how the queue
//! weighs priority against waiting, how long command outcomes are kept, and who may call it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::AGENT_KINDS_DEFAULT;

pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8000";
pub const WORKERS_DEFAULT: usize = 4;
pub const QUEUE_AGING_S_DEFAULT: u64 = 300;
pub const QUEUE_WEIGHTS_DEFAULT: &str = "0,1,2,4";
/// How long a console session lasts by default: a working day.
pub const SESSION_TTL_S_DEFAULT: u64 = 12 * 3_600;
/// A week: long past any client's retries.
pub const COMMAND_OUTCOMES_KEEP_H_DEFAULT: u64 = 7 * 24;
/// Requests per minute a key without its own `requests_per_minute` may make: none, no
/// limit (see decision 0039).
pub const KEY_RPM_DEFAULT: u32 = 0;

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

/// Connections one process holds at once, WebSocket clients included.
pub const HTTP_CONNECTIONS_MAX_DEFAULT: usize = 12_288;
/// Connections one client address holds at once: a twelfth of the whole, so one address
/// (one host, or one IPv6 /64) can never take every place.
pub const HTTP_CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: usize = 1_024;
/// Longest a client may take to send a request's head: a new connection's first, or one it
/// has begun.
pub const HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest a keep-alive connection may stay idle between requests: longer than any
/// `Retry-After` BRAiN sends (at most 60 s), so that a client waiting as told does not
/// find its connection closing as it sends.
pub const HTTP_IDLE_TIMEOUT_MS_DEFAULT: u64 = 75_000;
/// Longest a request may take from its headers to its answer, body read included.
pub const HTTP_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest shutdown waits for requests in flight before it drops their connections.
pub const HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest an answer may wait on a client that reads none of it: a streamed answer (a
/// mission's tokens, `/v1` and chat) to a client that stopped reading would otherwise hold
/// its connection, subscription and buffers for as long as the stream lasts.
pub const HTTP_SEND_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// The HTTP server's bounds (`api::server`), from `brain serve`'s flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct HttpLimits {
    /// Connections held at once (WebSocket clients included); past it, new ones wait in the
    /// listen backlog until one closes.
    #[arg(long = "http-connections-max", env = "BRAIN_HTTP_CONNECTIONS_MAX", default_value_t = HTTP_CONNECTIONS_MAX_DEFAULT)]
    pub connections_max: usize,
    /// Connections one client address (an IPv4 address, an IPv6 /64) holds at once; past it,
    /// its new ones are closed as they are accepted. Behind a reverse proxy every client has
    /// the proxy's address: raise it to the whole cap there.
    #[arg(long = "http-connections-per-address-max", env = "BRAIN_HTTP_CONNECTIONS_PER_ADDRESS_MAX", default_value_t = HTTP_CONNECTIONS_PER_ADDRESS_MAX_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub connections_per_address_max: usize,
    /// Longest a client may take to send a whole request head, in ms: a new connection's
    /// first (from its accepting, whether it sends a byte or not), or a later one from its
    /// first byte. Past it the connection is closed.
    #[arg(long = "http-header-read-timeout-ms", env = "BRAIN_HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// Longest a keep-alive connection may stay idle (no request in flight, nothing sent)
    /// after an answer before it is closed, in ms.
    #[arg(long = "http-idle-timeout-ms", env = "BRAIN_HTTP_IDLE_TIMEOUT_MS", default_value_t = HTTP_IDLE_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Longest a request may take from headers to answer, body included, in ms (408 past it).
    #[arg(long = "http-request-timeout-ms", env = "BRAIN_HTTP_REQUEST_TIMEOUT_MS", default_value_t = HTTP_REQUEST_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Longest shutdown waits for requests in flight, in ms; then their connections close.
    #[arg(long = "http-shutdown-timeout-ms", env = "BRAIN_HTTP_SHUTDOWN_TIMEOUT_MS", default_value_t = HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT)]
    pub shutdown_timeout_ms: u64,
    /// Longest a write to a client may make no progress (the client reads nothing), in ms;
    /// past it the connection is closed, a streamed answer's included.
    #[arg(id = "http_send_timeout_ms", long = "http-send-timeout-ms", env = "BRAIN_HTTP_SEND_TIMEOUT_MS", default_value_t = HTTP_SEND_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub send_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            connections_max: HTTP_CONNECTIONS_MAX_DEFAULT,
            connections_per_address_max: HTTP_CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            header_read_timeout_ms: HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: HTTP_IDLE_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: HTTP_REQUEST_TIMEOUT_MS_DEFAULT,
            shutdown_timeout_ms: HTTP_SHUTDOWN_TIMEOUT_MS_DEFAULT,
            send_timeout_ms: HTTP_SEND_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl HttpLimits {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
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
    /// Requests per minute over the whole API for a key that names no `requests_per_minute`
    /// of its own, counted across every serve of the namespace (0: no limit).
    #[arg(long, env = "BRAIN_KEY_RPM_DEFAULT", default_value_t = KEY_RPM_DEFAULT)]
    pub key_rpm_default: u32,
}

impl Default for AccessSettings {
    fn default() -> AccessSettings {
        AccessSettings {
            admin_key: None,
            public_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_ttl_s: SESSION_TTL_S_DEFAULT,
            key_rpm_default: KEY_RPM_DEFAULT,
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
            .field("key_rpm_default", &self.key_rpm_default)
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
