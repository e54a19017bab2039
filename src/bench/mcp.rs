//! `brain bench mcp`: what BRAiN's MCP client adds to a tool call over calling the server
//! directly with `rmcp`. Against server-everything's `echo` tool, over stdio (a child of this
//! process) and over streamable HTTP (a child listening on a free port): the same number of
//! calls made directly through a bare `rmcp` client, then through an agent's registry (the
//! schema check, the server's cap on calls in flight, its timeout, the answer shaped and
//! bounded). Reports p50 and p99 of each and the difference. No database is used.

use std::time::{Duration, Instant};

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

use super::{histogram, ms_at};
use crate::agents::tools::Registry;
use crate::agents::tools::mcp::server::{Server, ServerState};

/// How long the bench waits for a server to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct McpBench {
    /// Calls per transport and per path (direct, through BRAiN).
    #[arg(long, default_value_t = 2_000)]
    calls: u32,
    /// server-everything's entry point.
    #[arg(
        long,
        env = "BRAIN_BENCH_MCP_EVERYTHING",
        default_value = "/opt/brain-test/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
    )]
    everything: String,
    /// The Node.js interpreter that runs it.
    #[arg(long, default_value = "/usr/bin/node")]
    node: String,
}

struct Figures {
    direct: hdrhistogram::Histogram<u64>,
    through: hdrhistogram::Histogram<u64>,
}

impl McpBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        println!(
            "brain bench mcp: {} echo calls per path, {} cores, {} build",
            self.calls,
            super::cores(),
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
        let stdio = self.stdio().await.context("stdio")?;
        report("stdio", &stdio);
        let http = self.http().await.context("streamable HTTP")?;
        report("streamable_http", &http);
        Ok(())
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.node);
        command.args([self.everything.as_str(), "stdio"]).kill_on_drop(true);
        command
    }

    async fn stdio(&self) -> anyhow::Result<Figures> {
        let transport = rmcp::transport::TokioChildProcess::new(self.command())?;
        let client = ().serve(transport).await?;
        let direct = self.direct(client.peer()).await?;
        client.cancel().await?;
        let settings = serde_json::from_value(json!({ "transport": "stdio",
            "command": self.node, "args": [self.everything, "stdio"], "agent_kinds": ["bench"],
            "tools": ["echo"], "concurrency": 1 }))?;
        let through = self.through(settings).await?;
        Ok(Figures { direct, through })
    }

    async fn http(&self) -> anyhow::Result<Figures> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let _server = tokio::process::Command::new(&self.node)
            .args([self.everything.as_str(), "streamableHttp"])
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}/mcp");
        let began = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(began.elapsed() < READY_TIMEOUT, "server-everything did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.clone());
        let client = ().serve(transport).await?;
        let direct = self.direct(client.peer()).await?;
        client.cancel().await?;
        let settings = serde_json::from_value(json!({ "transport": "streamable_http",
            "url": url, "agent_kinds": ["bench"], "tools": ["echo"], "concurrency": 1 }))?;
        let through = self.through(settings).await?;
        Ok(Figures { direct, through })
    }

    /// `calls` echo calls through a bare client, one after the other, in microseconds.
    async fn direct(
        &self,
        peer: &rmcp::service::Peer<rmcp::service::RoleClient>,
    ) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let mut latencies = histogram();
        for n in 0..self.calls {
            let arguments = json!({ "message": format!("call {n}") });
            let params = CallToolRequestParams::new("echo")
                .with_arguments(arguments.as_object().cloned().unwrap_or_default());
            let began = Instant::now();
            peer.call_tool(params).await?;
            latencies.record(began.elapsed().as_micros() as u64)?;
        }
        Ok(latencies)
    }

    /// The same calls through an agent's registry holding the server's tools.
    async fn through(
        &self,
        settings: domain::mcp_config::McpServer,
    ) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let server = Server::start("every", settings);
        let began = Instant::now();
        while server.state() != ServerState::Ready || server.tools().is_empty() {
            anyhow::ensure!(began.elapsed() < READY_TIMEOUT, "not ready: {:?}", server.state());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let registry = Registry::default().with_all(crate::agents::tools::mcp::tools_of(&server));
        let mut latencies = histogram();
        for n in 0..self.calls {
            let arguments = json!({ "message": format!("call {n}") });
            let began = Instant::now();
            registry.call("every__echo", &arguments).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            latencies.record(began.elapsed().as_micros() as u64)?;
        }
        server.stop();
        Ok(latencies)
    }
}

fn report(transport: &str, figures: &Figures) {
    let (direct, through) = (&figures.direct, &figures.through);
    for (quantile, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (d, t) = (ms_at(direct, quantile), ms_at(through, quantile));
        println!(
            "{transport:>16} {name}: direct {d:.3} ms, through BRAiN {t:.3} ms, added {:.3} ms",
            t - d
        );
    }
}
