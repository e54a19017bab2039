//! One configured MCP server as this process holds it: a task that connects (starting the
//! child, or opening the HTTP session), lists the tools and lists them again when the server
//! says they changed, and connects again with backoff when the connection ends or never came
//! up; and the calls made through it, each bounded in time and in how many run at once.
//!
//! A child runs without a shell, with an environment holding only the variables its entry
//! names (values from this process's environment), in a process group of its own, which is
//! killed whole when the server is stopped, restarted or its process ends: no grandchild
//! outlives it. What it writes to stderr is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use domain::mcp_config::{McpServer, Transport};
use rmcp::model::{CallToolRequestParams, Tool as McpToolSpec};
use rmcp::service::{NotificationContext, Peer, RoleClient, RunningService};
use rmcp::{ClientHandler, ServiceExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::agents::tools::ToolError;
use crate::backoff::Backoff;

/// How long listing a server's tools may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most tools kept from one server; the rest are not offered (and the state says so).
pub const TOOLS_MAX: usize = 256;
/// Waits between attempts to connect a server that failed or ended: doubling from half a
/// second to half a minute, with jitter.
pub const RECONNECT: Backoff = Backoff { base_ms: 500, max_ms: 30_000 };
/// Longest JSON answer taken from an HTTP server, in bytes: a bigger one fails the call
/// rather than fill memory (what the model is given is cut far shorter).
pub const HTTP_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest failure reason kept for `GET /api/tools`.
const REASON_LEN_MAX: usize = 500;

/// Where a server's connection is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServerState {
    /// Being started for the first time.
    Connecting,
    /// Initialised, its tools listed.
    Ready,
    /// It never came up: the last attempt failed (why), and the next one waits its backoff.
    Failed { reason: String, attempts: u32 },
    /// It was up, its connection ended or failed (why), and it is being made again.
    Restarting { reason: String, attempts: u32 },
}

/// Counts of one server's calls, from this process since it connected the server.
#[derive(Debug, Default)]
pub struct Counts {
    pub calls: AtomicU64,
    pub in_flight: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
}

/// A configured server, shared by its task and the tools that call it.
pub struct Server {
    pub name: String,
    pub settings: McpServer,
    state: RwLock<ServerState>,
    tools: RwLock<Vec<McpToolSpec>>,
    /// The connection while there is one: a call made while the server (re)connects waits
    /// for it, within the call's timeout.
    peer: tokio::sync::watch::Sender<Option<Peer<RoleClient>>>,
    /// Calls in flight at once ([`McpServer::concurrency`]).
    slots: Semaphore,
    pub counts: Counts,
    stop: CancellationToken,
    /// Restarts made since the configuration was applied.
    pub restarts: AtomicU64,
    /// The running child's process group, killed when the server is stopped.
    group: std::sync::Mutex<Option<i32>>,
    /// Asks the task to drop the connection and make a new one (an HTTP session that stopped
    /// answering).
    reconnect: Notify,
}

/// What the client answers the server's notifications with: a changed tool list is listed
/// again by the server's task.
struct Handler {
    list_changed: Arc<Notify>,
}

impl ClientHandler for Handler {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.list_changed.notify_one();
        std::future::ready(())
    }
}

type Running = RunningService<RoleClient, Handler>;

fn reason(text: impl std::fmt::Display) -> String {
    let text = text.to_string();
    match text.char_indices().nth(REASON_LEN_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl Server {
    /// Starts holding `settings`' server until [`Server::stop`].
    pub fn start(name: &str, settings: McpServer) -> Arc<Server> {
        let server = Arc::new(Server {
            name: name.to_owned(),
            slots: Semaphore::new(settings.concurrency() as usize),
            settings,
            state: RwLock::new(ServerState::Connecting),
            tools: RwLock::new(Vec::new()),
            peer: tokio::sync::watch::Sender::new(None),
            counts: Counts::default(),
            stop: CancellationToken::new(),
            restarts: AtomicU64::new(0),
            group: std::sync::Mutex::new(None),
            reconnect: Notify::new(),
        });
        tokio::spawn(server.clone().run());
        server
    }

    /// Stops the server: its task ends, and a child's whole process group is killed now.
    pub fn stop(&self) {
        self.stop.cancel();
        kill_group(self.set_group(None));
    }

    /// Records the running child's process group; answers the one recorded before.
    fn set_group(&self, group: Option<i32>) -> Option<i32> {
        std::mem::replace(
            &mut *self.group.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
            group,
        )
    }

    pub fn state(&self) -> ServerState {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_state(&self, state: ServerState) {
        *self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
    }

    /// The tools last listed, as the server described them.
    pub fn tools(&self) -> Vec<McpToolSpec> {
        self.tools.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_peer(&self, peer: Option<Peer<RoleClient>>) {
        self.peer.send_replace(peer);
    }

    /// The running child's process id (its process group's), if any.
    pub fn pid(&self) -> Option<i32> {
        *self.group.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connects, serves, and connects again after a failure or an end, until stopped.
    async fn run(self: Arc<Server>) {
        let (mut attempts, mut ever_ready) = (0u32, false);
        loop {
            // A server that never answers `initialize` is reported failed and tried again,
            // not waited on.
            let list_changed = Arc::new(Notify::new());
            let initialize = Duration::from_millis(self.settings.initialize_timeout_ms());
            let connected = tokio::select! {
                _ = self.stop.cancelled() => return,
                connected = tokio::time::timeout(initialize, self.connect(list_changed.clone())) => connected,
            };
            let why = match connected {
                Err(_) => {
                    kill_group(self.set_group(None));
                    format!("no answer to initialize within {} ms", initialize.as_millis())
                }
                Ok(Err(error)) => {
                    kill_group(self.set_group(None));
                    error
                }
                Ok(Ok(running)) => {
                    let ended =
                        self.serve(running, list_changed, &mut attempts, &mut ever_ready).await;
                    kill_group(self.set_group(None));
                    self.set_peer(None);
                    match ended {
                        None => return,
                        Some(why) => why,
                    }
                }
            };
            attempts = attempts.saturating_add(1);
            let why = reason(why);
            tracing::warn!(server = %self.name, attempts, reason = %why, "MCP server not available");
            self.set_state(if ever_ready {
                ServerState::Restarting { reason: why, attempts }
            } else {
                ServerState::Failed { reason: why, attempts }
            });
            let wait = Duration::from_millis(RECONNECT.draw(attempts));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Holds a connection until it ends (why) or the server is stopped (`None`).
    async fn serve(
        &self,
        running: Running,
        list_changed: Arc<Notify>,
        attempts: &mut u32,
        ever_ready: &mut bool,
    ) -> Option<String> {
        let peer = running.peer().clone();
        if let Err(why) = self.list(&peer).await {
            let _ = running.cancel().await;
            return Some(why);
        }
        self.set_peer(Some(peer.clone()));
        self.set_state(ServerState::Ready);
        (*attempts, *ever_ready) = (0, true);
        let cancel = running.cancellation_token();
        let mut waiting = std::pin::pin!(running.waiting());
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => {
                    cancel.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), waiting).await;
                    return None;
                }
                ended = &mut waiting => {
                    return Some(format!("the connection ended ({:?})", ended.map(|reason| format!("{reason:?}"))));
                }
                _ = self.reconnect.notified() => {
                    cancel.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), waiting).await;
                    return Some("a call got no answer on the session; a new one is made".into());
                }
                _ = list_changed.notified() => {
                    if let Err(why) = self.list(&peer).await {
                        tracing::warn!(server = %self.name, reason = %why, "listing the tools again failed; the last list is kept");
                    }
                }
            }
        }
    }

    /// Lists the server's tools into the cache (at most [`TOOLS_MAX`]).
    async fn list(&self, peer: &Peer<RoleClient>) -> Result<(), String> {
        let listed = tokio::time::timeout(LIST_TIMEOUT, peer.list_all_tools()).await;
        let mut tools = match listed {
            Err(_) => return Err(format!("no answer to tools/list within {LIST_TIMEOUT:?}")),
            Ok(Err(error)) => return Err(format!("tools/list failed: {error}")),
            Ok(Ok(tools)) => tools,
        };
        if tools.len() > TOOLS_MAX {
            tracing::warn!(server = %self.name, listed = tools.len(), "more tools than kept; the rest are not offered");
            tools.truncate(TOOLS_MAX);
        }
        *self.tools.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = tools;
        Ok(())
    }

    /// Starts the child or opens the session, and initialises. For a child, its process
    /// group too.
    async fn connect(&self, list_changed: Arc<Notify>) -> Result<Running, String> {
        let handler = Handler { list_changed };
        match self.settings.transport {
            Transport::Stdio => {
                let command = child_command(&self.settings);
                let (transport, _) = rmcp::transport::TokioChildProcess::builder(command)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|error| format!("cannot start the server: {error}"))?;
                let group = transport.id().and_then(|pid| i32::try_from(pid).ok());
                // Killed if initialize fails, times out or the server is stopped meanwhile.
                kill_group(self.set_group(group));
                handler
                    .serve(transport)
                    .await
                    .map_err(|error| format!("initialize failed: {error}"))
            }
            Transport::StreamableHttp => {
                let config = http_config(&self.settings)?;
                let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
                let running = handler
                    .serve(transport)
                    .await
                    .map_err(|e| format!("initialize failed: {e}"))?;
                Ok(running)
            }
        }
    }

    /// Calls `tool` with `arguments` (checked already), within the server's timeout and its
    /// cap on calls in flight; the result as [`super::tool::result`] shapes it.
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<Value, ToolError> {
        let Value::Object(arguments) = arguments else {
            return Err(ToolError::Refused("the arguments must be a JSON object".into()));
        };
        let timeout = Duration::from_millis(self.settings.call_timeout_ms());
        let name = &self.name;
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let called = tokio::time::timeout(timeout, async {
            let _slot = self.slots.acquire().await.map_err(|_| {
                ToolError::Failed(format!("MCP server {name} was removed from the configuration"))
            })?;
            let mut connection = self.peer.subscribe();
            let peer = connection.wait_for(Option::is_some).await.map(|peer| peer.clone());
            let Ok(Some(peer)) = peer else {
                return Err(ToolError::Failed(format!("MCP server {name} was stopped")));
            };
            let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
            peer.call_tool(params).await.map_err(|error| {
                ToolError::Failed(format!(
                    "MCP server {name} did not answer the call ({error}); it is reconnected, and the call can be retried"
                ))
            })
        })
        .await;
        self.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        let answered = called.unwrap_or_else(|_| {
            Err(ToolError::Failed(format!(
                "MCP server {name} did not answer within {} ms ({}); the call can be retried",
                timeout.as_millis(),
                describe(&self.state())
            )))
        });
        match answered {
            Ok(result) => super::tool::result(&result),
            Err(error) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                // A session the server forgot is re-initialised by `rmcp` when the server
                // says so with a 404; one that answers otherwise (server-everything answers
                // 400) leaves calls unanswered. Either way, the next call gets a new session.
                if self.settings.transport == Transport::StreamableHttp
                    && matches!(error, ToolError::Failed(_))
                    && self.state() == ServerState::Ready
                {
                    self.reconnect.notify_one();
                }
                Err(error)
            }
        }
    }
}

fn describe(state: &ServerState) -> String {
    match state {
        ServerState::Connecting => "connecting".into(),
        ServerState::Ready => "ready".into(),
        ServerState::Failed { reason, .. } => format!("failed: {reason}"),
        ServerState::Restarting { reason, .. } => format!("restarting: {reason}"),
    }
}

/// The child's command: the program itself (no shell), an environment of the allowed
/// variables only, its own process group, killed if the handle is dropped.
fn child_command(settings: &McpServer) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(settings.command.as_deref().unwrap_or_default());
    command.args(&settings.args).env_clear().process_group(0).kill_on_drop(true);
    for name in &settings.env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if let Some(cwd) = &settings.cwd {
        command.current_dir(cwd);
    }
    command
}

/// The HTTP transport's settings: the URL, the headers with their values taken from this
/// process's environment now (never stored), a bounded answer size.
fn http_config(
    settings: &McpServer,
) -> Result<rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig, String> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut headers = std::collections::HashMap::new();
    for (name, from) in &settings.headers {
        let Ok(value) = std::env::var(&from.from_env) else {
            return Err(format!(
                "header {name}: the environment variable {} is not set",
                from.from_env
            ));
        };
        let value = match &from.scheme {
            Some(scheme) => format!("{scheme} {value}"),
            None => value,
        };
        let name = reqwest::header::HeaderName::try_from(name.as_str())
            .map_err(|e| format!("header {name}: {e}"))?;
        let mut value = reqwest::header::HeaderValue::try_from(value).map_err(|_| {
            format!("header {name}: the value of {} is not a header value", from.from_env)
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let url = settings.url.clone().unwrap_or_default();
    Ok(StreamableHttpClientTransportConfig::with_uri(url)
        .custom_headers(headers)
        .max_json_response_size(HTTP_RESPONSE_BYTES_MAX)
        .max_sse_event_size(HTTP_RESPONSE_BYTES_MAX))
}

/// Kills a child's whole process group (the child and whatever it started).
fn kill_group(group: Option<i32>) {
    if let Some(group) = group.filter(|group| *group > 1) {
        // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}
