//! Integration tests against the real PostgreSQL, NATS JetStream and Redis. One binary, so
//! it links once. Each test makes its own database and namespace (see `support`), so tests
//! run in parallel and leave nothing behind.

mod agent_supervision;
mod agents_api;
mod append_all;
mod batch_api;
mod bounds;
mod browser_smoke;
mod builtin_agents;
mod chat;
mod claim;
mod coder_agent;
mod command;
mod console;
mod console_browser;
mod deck;
mod event_store;
mod external_agents;
mod fake_llm;
mod heal;
mod isolation;
mod llm_budgets;
mod llm_config;
mod llm_limits;
mod llm_providers;
mod llm_secrets;
mod mission_list;
mod missions_api;
mod openai_client;
mod openapi;
mod projector;
mod python_agent;
mod queue;
mod relay;
mod replay;
mod serve;
mod supervisor_agent;
mod support;
mod workers;
mod ws;
