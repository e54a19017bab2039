use super::*;
use serde_json::json;

fn time_server() -> McpServer {
    serde_json::from_value(json!({
        "transport": "stdio", "command": "/usr/local/bin/mcp-server-time",
        "args": ["--local-timezone", "UTC"], "env": ["PATH"], "agent_kinds": ["coder"],
    }))
    .unwrap()
}

fn settings(servers: &[(&str, McpServer)]) -> McpSettings {
    McpSettings {
        servers: servers
            .iter()
            .map(|(name, server)| ((*name).to_owned(), server.clone()))
            .collect(),
    }
}

fn set(settings: McpSettings) -> McpConfigCommand {
    McpConfigCommand::Set { settings: Box::new(settings), by: "key:admin".into(), now_ms: 5 }
}

#[test]
fn a_change_records_who_and_which_servers_and_the_same_settings_again_record_nothing() {
    // Given a configuration with one server.
    let first = settings(&[("time", time_server())]);
    let config = McpConfig::fold(&[McpConfigEvent::McpConfigChanged {
        settings: Box::new(first.clone()),
        changed: vec!["time".into()],
        by: "key:admin".into(),
        at_ms: 1,
    }]);

    // When the same settings are set again, then nothing is recorded.
    assert_eq!(config.decide(set(first)), Ok(vec![]));

    // When a server is added and the first removed, then both are named.
    let mut everything = time_server();
    everything.command = Some("/opt/everything".into());
    let second = settings(&[("everything", everything)]);
    assert_eq!(
        config.decide(set(second.clone())),
        Ok(vec![McpConfigEvent::McpConfigChanged {
            settings: Box::new(second),
            changed: vec!["everything".into(), "time".into()],
            by: "key:admin".into(),
            at_ms: 5,
        }])
    );
}

#[test]
fn bad_settings_name_the_field() {
    let http = || -> McpServer {
        serde_json::from_value(json!({ "transport": "streamable_http",
            "url": "https://mcp.example.com/mcp", "agent_kinds": ["coder"] }))
        .unwrap()
    };
    let cases: Vec<(&str, McpServer, &str)> = vec![
        ("Time", time_server(), "servers.Time"),
        ("a_b", time_server(), "servers.a_b"),
        ("a.b", time_server(), "servers.a.b"),
        (
            "t",
            McpServer { command: Some("mcp-server-time".into()), ..time_server() },
            "servers.t.command",
        ),
        (
            "t",
            McpServer { command: Some("/bin/../bin/sh".into()), ..time_server() },
            "servers.t.command",
        ),
        ("t", McpServer { command: None, ..time_server() }, "servers.t.command"),
        ("t", McpServer { args: vec!["a\0b".into()], ..time_server() }, "servers.t.args[0]"),
        (
            "t",
            McpServer { args: vec!["x".into(); ARGS_MAX + 1], ..time_server() },
            "servers.t.args",
        ),
        (
            "t",
            McpServer { env: vec!["OPENAI_API_KEY".into()], ..time_server() },
            "servers.t.env[0]",
        ),
        (
            "t",
            McpServer { env: vec!["PATH".into(), "BRAIN_X".into()], ..time_server() },
            "servers.t.env[1]",
        ),
        ("t", McpServer { env: vec!["A=B".into()], ..time_server() }, "servers.t.env[0]"),
        ("t", McpServer { cwd: Some("tmp".into()), ..time_server() }, "servers.t.cwd"),
        ("t", McpServer { url: Some("http://x".into()), ..time_server() }, "servers.t.url"),
        ("t", McpServer { agent_kinds: vec![], ..time_server() }, "servers.t.agent_kinds"),
        (
            "t",
            McpServer { agent_kinds: vec!["Bad Kind".into()], ..time_server() },
            "servers.t.agent_kinds[0]",
        ),
        ("t", McpServer { tools: Some(vec!["a b".into()]), ..time_server() }, "servers.t.tools[0]"),
        ("t", McpServer { call_timeout_ms: Some(0), ..time_server() }, "servers.t.call_timeout_ms"),
        (
            "t",
            McpServer { concurrency: Some(CONCURRENCY_MAX + 1), ..time_server() },
            "servers.t.concurrency",
        ),
        ("h", McpServer { url: Some("ftp://x".into()), ..http() }, "servers.h.url"),
        ("h", McpServer { url: Some("https:///path".into()), ..http() }, "servers.h.url"),
        ("h", McpServer { command: Some("/bin/true".into()), ..http() }, "servers.h.command"),
    ];
    for (name, server, field) in cases {
        let refused = McpConfig::default().decide(set(settings(&[(name, server.clone())])));
        assert_eq!(refused.map_err(|error| error.field), Err(field.to_owned()), "{server:?}");
    }
    let secret =
        HeaderFromEnv { from_env: "GITHUB_TOKEN".into(), scheme: Some("Bearer ghp_x".into()) };
    let with_header = McpServer { headers: [("Authorization".into(), secret)].into(), ..http() };
    let refused = McpConfig::default().decide(set(settings(&[("h", with_header)])));
    assert_eq!(refused.unwrap_err().field, "servers.h.headers.Authorization.scheme");
    let many: Vec<(String, McpServer)> =
        (0..=SERVERS_MAX).map(|n| (format!("s{n}"), time_server())).collect();
    let refused =
        McpConfig::default().decide(set(McpSettings { servers: many.into_iter().collect() }));
    assert_eq!(refused.unwrap_err().field, "servers");
}

#[test]
fn a_header_given_as_a_literal_or_a_field_of_the_other_transport_does_not_parse() {
    let literal = json!({ "transport": "streamable_http", "url": "https://x", "agent_kinds": ["coder"],
        "headers": { "Authorization": "Bearer ghp_secret" } });
    assert!(serde_json::from_value::<McpServer>(literal).is_err());
    let unknown = json!({ "transport": "stdio", "command": "/bin/x", "agent_kinds": ["coder"],
        "shell": true });
    assert!(serde_json::from_value::<McpServer>(unknown).is_err());
}

#[test]
fn the_allow_lists_decide_which_kinds_and_tools_see_a_server() {
    let server = McpServer { tools: Some(vec!["get_current_time".into()]), ..time_server() };
    assert!(server.allows_kind("coder") && !server.allows_kind("ops"));
    assert!(server.allows_tool("get_current_time") && !server.allows_tool("convert_time"));
    assert!(time_server().allows_tool("anything"));
}
