//! Tools from MCP servers (through `rmcp`), behind the same registry as the built-in tools.
//!
//! Which servers exist is runtime configuration in the log (`mcp_config/default`, set with
//! `PUT /api/tools/mcp`). Every process hosting agents keeps an [`McpHub`] that follows that
//! stream (`eventlog::follow`) and holds one connection per configured server
//! ([`server::Server`]): connected at start and whenever the server's entry changes, its tools
//! listed then and on `notifications/tools/list_changed`, kept in a cache, reconnected with
//! backoff when it fails or ends.
//!
//! When a mission starts, its agent's registry gains the cached tools of every server whose
//! entry names the mission's agent kind, minus those the entry's allow-list leaves out. A
//! tool is offered to the model as `<server>__<tool>` (providers accept only
//! `^[a-zA-Z0-9_-]{1,64}$`; server names hold no `_`, so the first `__` splits it back), and
//! shown to users and kept in the record as `<server>.<tool>`. Every call goes through the
//! registry like a built-in tool's: checked against the server's schema before it is sent,
//! and recorded as `MissionToolCalled`, so replay plays the record back without any server.

pub mod schema;
pub mod server;
pub mod tool;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use domain::aggregate::{Aggregate, DomainEvent};
use domain::mcp_config::{McpConfig, McpConfigEvent, McpServer, Transport};
use domain::{RecordedEvent, StreamId, StreamType};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::eventlog::follow::{Folded, Unreadable};
use server::{Server, ServerState};
use tool::McpTool;

/// The one configuration stream of a deployment.
pub fn stream_id() -> StreamId {
    StreamId::parse("default").expect("a valid stream id")
}

/// The server a provider-safe tool name belongs to, if it has the MCP form
/// (`<server>__<tool>`, the server's name valid).
pub fn server_of(provider_name: &str) -> Option<&str> {
    let (server, tool) = provider_name.split_once("__")?;
    (domain::mcp_config::check_server_name(server).is_ok() && !tool.is_empty()).then_some(server)
}

#[derive(Default)]
struct Known {
    config: McpConfig,
    /// The last `mcp_config` event folded in (or 0).
    position: u64,
}

#[derive(Default)]
struct Inner {
    known: RwLock<Known>,
    servers: Mutex<BTreeMap<String, Arc<Server>>>,
    stopped: CancellationToken,
}

/// This process's MCP servers, following the configuration in the log (cheap to clone).
#[derive(Clone, Default)]
pub struct McpHub {
    inner: Arc<Inner>,
}

impl McpHub {
    /// Loads the configuration, connects its servers, and follows it until `stop`, when every
    /// server is stopped (a child's whole process group killed). `changes` is the live feed,
    /// when the process has one; without it the log is read every second.
    pub async fn start(
        pool: sqlx::PgPool,
        changes: Option<tokio::sync::broadcast::Receiver<Arc<crate::eventlog::feed::FeedEvent>>>,
        stop: CancellationToken,
    ) -> Result<McpHub, crate::eventlog::follow::FollowError> {
        let hub = McpHub::default();
        crate::eventlog::follow::catch_up(&hub, &pool).await?;
        let changes = changes.unwrap_or_else(|| tokio::sync::broadcast::channel(1).1);
        let follow_stop = stop.child_token();
        tokio::spawn(crate::eventlog::follow::follow(hub.clone(), pool, changes, follow_stop));
        let stopping = hub.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            stopping.stop_all();
        });
        Ok(hub)
    }

    /// Stops every server now; the configuration is followed no more.
    pub fn stop_all(&self) {
        self.inner.stopped.cancel();
        let servers = std::mem::take(&mut *self.servers());
        for server in servers.values() {
            server.stop();
        }
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Server>>> {
        self.inner.servers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settings(&self) -> BTreeMap<String, McpServer> {
        let known = self.inner.known.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.config.settings.servers.clone()
    }

    /// Starts the servers the configuration added, restarts those it changed, stops those
    /// it removed.
    fn reconcile(&self) {
        if self.inner.stopped.is_cancelled() {
            return;
        }
        let wanted = self.settings();
        let mut servers = self.servers();
        servers.retain(|name, server| {
            let keep = wanted.get(name) == Some(&server.settings);
            if !keep {
                server.stop();
            }
            keep
        });
        for (name, settings) in wanted {
            if let std::collections::btree_map::Entry::Vacant(entry) = servers.entry(name) {
                let server = Server::start(entry.key(), settings);
                entry.insert(server);
            }
        }
    }

    /// The MCP tools a mission of agent kind `kind` is offered now.
    pub fn tools_for(&self, kind: &str) -> Vec<McpTool> {
        let servers: Vec<Arc<Server>> = self.servers().values().cloned().collect();
        let mut tools = Vec::new();
        for server in servers.into_iter().filter(|server| server.settings.allows_kind(kind)) {
            tools.extend(offered(&server).into_iter().filter_map(|(tool, _)| tool.ok()));
        }
        tools
    }
}

/// The tools of `server` it offers (its allow-list applied), whatever the agent kind.
pub fn tools_of(server: &Arc<Server>) -> Vec<McpTool> {
    offered(server).into_iter().filter_map(|(tool, _)| tool.ok()).collect()
}

/// A server's listed tools, each offered or why not.
fn offered(server: &Arc<Server>) -> Vec<(Result<McpTool, String>, String)> {
    let mut names = BTreeSet::new();
    let mut tools = Vec::new();
    for listed in server.tools() {
        let name = listed.name.to_string();
        let made = if !server.settings.allows_tool(&name) {
            Err("not in the server's allow-list".to_owned())
        } else {
            match tool::provider_name(&server.name, &name) {
                None => Err("its name cannot be given to a provider (over 64 characters)".into()),
                Some(provider_name) if !names.insert(provider_name.clone()) => {
                    Err(format!("{provider_name} already names another tool of the server"))
                }
                Some(provider_name) => Ok(McpTool {
                    server: server.clone(),
                    description: tool::description(
                        &server.name,
                        &name,
                        listed.description.as_deref(),
                    ),
                    schema: serde_json::Value::Object((*listed.input_schema).clone()),
                    tool: name.clone(),
                    provider_name,
                }),
            }
        };
        tools.push((made, name));
    }
    tools
}

impl Folded for McpHub {
    fn stream_type(&self) -> StreamType {
        McpConfig::stream_type()
    }

    fn position(&self) -> u64 {
        self.inner.known.read().unwrap_or_else(|poisoned| poisoned.into_inner()).position
    }

    fn fold(&self, page: &[RecordedEvent]) -> Result<(), Unreadable> {
        let mut changed = false;
        {
            let mut known =
                self.inner.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            for recorded in page {
                if recorded.global_position <= known.position {
                    continue;
                }
                let event = McpConfigEvent::upcast(
                    &recorded.event_type,
                    recorded.schema_version,
                    recorded.payload.clone(),
                )
                .map_err(|error| Unreadable::of(recorded, error))?;
                known.config.apply(&event);
                known.position = recorded.global_position;
                changed = true;
            }
        }
        if changed {
            self.reconcile();
        }
        Ok(())
    }
}

/// One tool as `GET /api/tools` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolView {
    /// What users see and the record keeps: `read_file`, `time.get_current_time`.
    pub name: String,
    /// What the model is offered: `time__get_current_time`.
    pub provider_name: String,
    /// `builtin` or `mcp`.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub description: String,
    /// The agent kinds offered it (MCP tools); built-in tools go with the thinking agents'
    /// implementations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_kinds: Vec<String>,
    /// Whether it is offered; when not, why.
    pub offered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_offered: Option<String>,
}

/// One MCP server as `GET /api/tools` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub name: String,
    pub transport: Transport,
    #[serde(flatten)]
    pub state: ServerState,
    pub agent_kinds: Vec<String>,
    /// Tools listed by the server (cached).
    pub tools_listed: usize,
    /// Calls made through this process, those that failed, and those refused before being
    /// sent (arguments breaking the schema).
    pub calls: u64,
    pub calls_failed: u64,
    pub calls_refused: u64,
    pub calls_in_flight: u64,
    /// Reconnections since the entry was applied.
    pub restarts: u64,
    /// A `stdio` server's process id (its process group's) while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolsView {
    pub tools: Vec<ToolView>,
    pub servers: Vec<ServerView>,
}

/// Every tool of this process (built-in as `settings` give them, MCP as `hub` holds them)
/// and the MCP servers' states.
pub fn tools_view(settings: &crate::agents::BuiltinSettings, hub: Option<&McpHub>) -> ToolsView {
    let mut tools: Vec<ToolView> = crate::agents::tools_of(&settings.tools, true)
        .specs()
        .into_iter()
        .map(|spec| ToolView {
            name: spec.name.clone(),
            provider_name: spec.name,
            source: "builtin".into(),
            server: None,
            description: spec.description,
            agent_kinds: Vec::new(),
            offered: true,
            not_offered: None,
        })
        .collect();
    let mut servers = Vec::new();
    let held: Vec<Arc<Server>> =
        hub.map(|hub| hub.servers().values().cloned().collect()).unwrap_or_default();
    for server in held {
        for (made, name) in offered(&server) {
            let shown = format!("{}.{name}", server.name);
            tools.push(match made {
                Ok(tool) => ToolView {
                    name: shown,
                    provider_name: tool.provider_name,
                    source: "mcp".into(),
                    server: Some(server.name.clone()),
                    description: tool.description,
                    agent_kinds: server.settings.agent_kinds.clone(),
                    offered: true,
                    not_offered: None,
                },
                Err(why) => ToolView {
                    name: shown,
                    provider_name: String::new(),
                    source: "mcp".into(),
                    server: Some(server.name.clone()),
                    description: String::new(),
                    agent_kinds: server.settings.agent_kinds.clone(),
                    offered: false,
                    not_offered: Some(why),
                },
            });
        }
        servers.push(ServerView {
            name: server.name.clone(),
            transport: server.settings.transport,
            state: server.state(),
            agent_kinds: server.settings.agent_kinds.clone(),
            tools_listed: server.tools().len(),
            calls: server.counts.calls.load(Ordering::Relaxed),
            calls_failed: server.counts.failed.load(Ordering::Relaxed),
            calls_refused: server.counts.refused.load(Ordering::Relaxed),
            calls_in_flight: server.counts.in_flight.load(Ordering::Relaxed),
            restarts: server.restarts.load(Ordering::Relaxed),
            pid: server.pid(),
        });
    }
    ToolsView { tools, servers }
}
