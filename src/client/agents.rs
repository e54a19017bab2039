//! `brain agents list | show | stop | start | restart` against a running serve.

use serde_json::{Value, json};

use super::{Client, ClientError, OK, Remote, exit_with, print_json, segment, table, text};

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCli {
    /// List agents in id order, filtered by kind and state.
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        kind: Option<String>,
        /// `active`, `unresponsive`, `stopped`, `failed` or `deregistered`.
        #[arg(long)]
        state: Option<String>,
        /// Rows per page (1 to 500).
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_after` a previous page printed.
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one agent.
    Show {
        #[command(flatten)]
        remote: Remote,
        agent_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop an agent: it claims nothing until started.
    Stop(Control),
    /// Start a stopped agent.
    Start(Control),
    /// Ask an agent to restart.
    Restart(Control),
}

#[derive(Debug, clap::Args)]
pub struct Control {
    #[command(flatten)]
    remote: Remote,
    agent_id: String,
    /// Recorded in the agent's history.
    #[arg(long, default_value = "")]
    reason: String,
    #[arg(long)]
    json: bool,
}

impl AgentsCli {
    pub async fn run(self) -> anyhow::Result<()> {
        let remote = match &self {
            AgentsCli::List { remote, .. } | AgentsCli::Show { remote, .. } => remote,
            AgentsCli::Stop(control) | AgentsCli::Start(control) | AgentsCli::Restart(control) => {
                &control.remote
            }
        };
        let client = Client::new(remote)?;
        exit_with("agents", self.execute(&client)).await
    }

    async fn execute(self, client: &Client) -> Result<i32, ClientError> {
        let (action, control) = match self {
            AgentsCli::List { kind, state, limit, after, json, .. } => {
                let mut query = Vec::new();
                query.extend(kind.map(|kind| ("kind", kind)));
                query.extend(state.map(|state| ("state", state)));
                query.extend(limit.map(|limit| ("limit", limit.to_string())));
                query.extend(after.map(|after| ("after", after)));
                let page = client.get("/api/agents", &query).await?;
                if json {
                    print_json(&page);
                } else {
                    print_list(&page);
                }
                return Ok(OK);
            }
            AgentsCli::Show { agent_id, json, .. } => {
                let agent =
                    client.get(&format!("/api/agents/{}", segment(&agent_id)?), &[]).await?;
                if json {
                    print_json(&agent);
                } else {
                    let rows: Vec<Vec<String>> = agent
                        .as_object()
                        .map(|fields| {
                            fields
                                .iter()
                                .map(|(name, _)| vec![name.clone(), text(&agent, name)])
                                .collect()
                        })
                        .unwrap_or_default();
                    table::print(&["field", "value"], &rows);
                }
                return Ok(OK);
            }
            AgentsCli::Stop(control) => ("stop", control),
            AgentsCli::Start(control) => ("start", control),
            AgentsCli::Restart(control) => ("restart", control),
        };
        let body =
            json!({ "agent_id": control.agent_id, "action": action, "reason": control.reason });
        let agent = client.post("/api/supervisor/control", &body).await?;
        if control.json {
            print_json(&agent);
        } else {
            println!("{} {}", text(&agent, "agent_id"), text(&agent, "state"));
        }
        Ok(OK)
    }
}

fn print_list(page: &Value) {
    let rows: Vec<Vec<String>> = page
        .get("agents")
        .and_then(Value::as_array)
        .map(|agents| {
            agents
                .iter()
                .map(|agent| {
                    ["agent_id", "state", "kind", "load", "restarts", "name"]
                        .iter()
                        .map(|column| text(agent, column))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    table::print(&["id", "state", "kind", "load", "restarts", "name"], &rows);
    match page.get("next_after").and_then(Value::as_str) {
        Some(after) => eprintln!("{} shown; more with --after {after}", rows.len()),
        None => eprintln!("{} shown", rows.len()),
    }
}
