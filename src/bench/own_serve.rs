//! A `brain serve` child process for the benches that bring their own: a database and a
//! namespace of its own, dropped afterwards with the namespace's Redis keys and JetStream
//! stream, so a bench leaves nothing behind. `InstantServe` adds a provider that answers at
//! once, for the benches of the thinking agents.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::BenchServices;

/// A fake provider that answers at once, asking for one tool call (and, offered
/// `spawn_missions`, for `spawns` sub-missions) before it answers.
pub async fn instant_provider(spawns: u32) -> anyhow::Result<super::llm_fake::Running> {
    super::llm_fake::FakeProvider {
        capacity_per_s: None,
        latency: Duration::ZERO,
        pieces: 4,
        piece_gap: Duration::ZERO,
        calls_tools: true,
        spawns,
    }
    .start()
    .await
}

/// A scratch folder with one file, for the agents' `BRAIN_AGENT_ROOT`.
fn scratch_root(bench: &str) -> anyhow::Result<std::path::PathBuf> {
    let root =
        std::env::temp_dir().join(format!("brain-bench-{bench}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("README.md"), "bench\n")?;
    Ok(root)
}

pub struct OwnServe {
    pub url: String,
    /// The admin key the serve was started with (`BRAIN_ADMIN_KEY`).
    pub key: String,
    pub database_url: String,
    namespace: String,
    redis_url: String,
    nats_url: String,
    child: tokio::process::Child,
    /// The agents' scratch `BRAIN_AGENT_ROOT`, removed with the rest.
    root: std::path::PathBuf,
}

impl OwnServe {
    /// Starts `brain serve` on a fresh database `database` and namespace `namespace`, with
    /// `vars` in its environment and a scratch `BRAIN_AGENT_ROOT`, and waits (at most 60 s)
    /// until it listens.
    pub async fn start(
        services: &BenchServices,
        database: &str,
        namespace: &str,
        vars: &[(&str, String)],
    ) -> anyhow::Result<OwnServe> {
        OwnServe::start_binary(services, &std::env::current_exe()?, database, namespace, vars).await
    }

    /// As [`OwnServe::start`], running the `brain` binary at `binary` as the serve (another
    /// build, to compare two commits under the same bench).
    pub async fn start_binary(
        services: &BenchServices,
        binary: &std::path::Path,
        database: &str,
        namespace: &str,
        vars: &[(&str, String)],
    ) -> anyhow::Result<OwnServe> {
        let database_url = fresh_database(services, database).await?;
        let key = crate::identity::token::generate()?.expose();
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("NATS_URL", &services.nats_url)
            .env("REDIS_URL", &services.redis_url)
            .env("BRAIN_NAMESPACE", namespace)
            .env("BRAIN_HTTP_ADDR", "127.0.0.1:0")
            .env("BRAIN_ADMIN_KEY", &key)
            .env("RUST_LOG", "error");
        for (name, value) in vars {
            command.env(name, value);
        }
        let root = scratch_root(namespace)?;
        command.env("BRAIN_AGENT_ROOT", &root);
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} serve", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("serve output")?).lines();
        let url = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .context("brain serve did not start in 60 s")??
                .context("brain serve stopped")?;
            if let Some(url) = line.strip_prefix("brain serve listening on ") {
                break url.trim().to_owned();
            }
        };
        Ok(OwnServe {
            url,
            key,
            database_url,
            namespace: namespace.to_owned(),
            redis_url: services.redis_url.clone(),
            nats_url: services.nats_url.clone(),
            child,
            root,
        })
    }

    /// The serve's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Stops the serve (its connections close with it) and waits until it has exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("brain serve did not exit in 10 s")??;
        Ok(())
    }

    /// Stops the serve and drops everything it made.
    pub async fn drop_all(mut self) -> anyhow::Result<()> {
        let _ = self.child.kill().await;
        let namespace =
            crate::config::Namespace::parse(&self.namespace).map_err(anyhow::Error::msg)?;
        let services = BenchServices {
            database_url: self.database_url.clone(),
            nats_url: self.nats_url.clone(),
            redis_url: self.redis_url.clone(),
        };
        drop_everything(&services, &namespace).await?;
        let _ = std::fs::remove_dir_all(&self.root);
        Ok(())
    }

    /// Points the serve's LLM gateway at an OpenAI-compatible `provider`.
    pub async fn configure_llm(
        &self,
        client: &reqwest::Client,
        provider: &str,
    ) -> anyhow::Result<()> {
        configure_llm(client, &self.url, provider).await
    }
}

/// Points the LLM gateway of the serve at `url` at an OpenAI-compatible `provider`.
pub async fn configure_llm(
    client: &reqwest::Client,
    url: &str,
    provider: &str,
) -> anyhow::Result<()> {
    let configured = client
        .put(format!("{url}/api/llm/config"))
        .json(&serde_json::json!({ "provider": "openai", "host": provider, "model": "bench" }))
        .send()
        .await?;
    anyhow::ensure!(configured.status().is_success(), "configure: {}", configured.status());
    Ok(())
}

/// The URL of database `database` on the bench's PostgreSQL server, dropped first if a
/// previous run left it behind.
pub async fn fresh_database(services: &BenchServices, database: &str) -> anyhow::Result<String> {
    let database_url = super::with_database(&services.database_url, database)?;
    let _ = <sqlx::Postgres as sqlx::migrate::MigrateDatabase>::force_drop_database(&database_url)
        .await;
    Ok(database_url)
}

/// Drops what a serve on `services` made in `namespace`: its Redis keys, its JetStream stream
/// and its database (`services.database_url`).
pub async fn drop_everything(
    services: &BenchServices,
    namespace: &crate::config::Namespace,
) -> anyhow::Result<()> {
    let mut redis =
        redis::Client::open(services.redis_url.as_str())?.get_connection_manager().await?;
    crate::kv::drop_prefix(&mut redis, &format!("{{{namespace}}}")).await?;
    let nats = crate::eventlog::bus::connect(&services.nats_url).await?;
    let _ = async_nats::jetstream::new(nats)
        .delete_stream(crate::eventlog::bus::stream_name(namespace))
        .await;
    <sqlx::Postgres as sqlx::migrate::MigrateDatabase>::force_drop_database(&services.database_url)
        .await?;
    Ok(())
}

/// An [`OwnServe`] whose LLM gateway talks to [`instant_provider`], with an HTTP client and a
/// pool on its database: what the agent-loop and fan-out benches measure.
pub struct InstantServe {
    pub serve: OwnServe,
    pub client: reqwest::Client,
    pub pool: sqlx::PgPool,
    /// Held so that the provider outlives the serve.
    _provider: super::llm_fake::Running,
}

impl InstantServe {
    /// Starts the provider (asking for `spawns` sub-missions where it can) and the serve (as
    /// [`OwnServe::start`]), and points the serve's gateway at the provider; a serve that
    /// started but could not be configured is dropped again.
    pub async fn start(
        services: &BenchServices,
        database: &str,
        namespace: &str,
        vars: &[(&str, String)],
        spawns: u32,
    ) -> anyhow::Result<InstantServe> {
        let provider = instant_provider(spawns).await?;
        let serve = OwnServe::start(services, database, namespace, vars).await?;
        let client = super::http_client(Some(&serve.key)).build()?;
        let ready = async {
            serve.configure_llm(&client, &provider.url).await?;
            anyhow::Ok(crate::eventlog::db::connect(&serve.database_url, 2).await?)
        };
        match ready.await {
            Ok(pool) => Ok(InstantServe { serve, client, pool, _provider: provider }),
            Err(error) => {
                serve.drop_all().await?;
                Err(error)
            }
        }
    }

    /// Closes the pool, stops the serve and drops everything it made.
    pub async fn drop_all(self) -> anyhow::Result<()> {
        self.pool.close().await;
        self.serve.drop_all().await
    }
}
