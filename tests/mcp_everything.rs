//! A third-party server: `@modelcontextprotocol/server-everything` from the npm registry,
//! run with `npx -y` (which installs it on first use). Skipped, visibly, without Node.

mod mcp_support;

use std::time::Duration;

use mcp_platform::mcp::{McpManager, McpServerState};
use mcp_support::*;
use serde_json::json;

fn has(command: &str) -> bool {
    std::process::Command::new(command).arg("--version").output().is_ok_and(|output| output.status.success())
}

#[tokio::test]
async fn server_everything_lists_and_answers() {
    if !has("node") || !has("npx") {
        eprintln!("SKIPPED server_everything_lists_and_answers: node/npx not found on PATH");
        return;
    }
    let mut settings = settings();
    // The first `npx -y` downloads the package.
    settings.connection.connection_timeout = 240.0;
    let config = servers(vec![("everything", server("npx", &["-y", "@modelcontextprotocol/server-everything"]))]);
    let manager = tokio::time::timeout(Duration::from_secs(300), McpManager::start(&config, &settings, defaults()))
        .await
        .expect("start-up finishes within the connection timeout");
    let server = manager.server("everything").unwrap();
    assert_eq!(server.state, McpServerState::Connected, "{:?}", server.last_error);
    let names: Vec<_> = server.tools.iter().map(|tool| tool.name.as_str()).collect();
    assert!(names.contains(&"everything__echo"), "{names:?}");
    assert!(names.contains(&"everything__get-sum"), "{names:?}");
    assert!(!server.prompts.is_empty());
    assert!(!server.resources.is_empty() || !server.resource_templates.is_empty());

    let echo = call(&manager, "everything__echo", json!({"message": "hello there"})).await;
    assert!(echo.ok, "{}", echo.content);
    assert!(echo.content.contains("hello there"), "{}", echo.content);
    let sum = call(&manager, "everything__get-sum", json!({"a": 2, "b": 3})).await;
    assert!(sum.ok, "{}", sum.content);
    assert!(sum.content.contains('5'), "{}", sum.content);
    manager.shutdown().await;
}
