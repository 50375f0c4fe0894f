//! A third-party server: `@modelcontextprotocol/server-everything` from the npm registry,
//! run with `npx -y` (which installs it on first use). Skipped, visibly, without Node outside CI;
//! in CI (which installs Node) a missing `npx` fails the test.

mod support;

use std::time::Duration;

use mcp_platform::mcp::{McpManager, McpServerState};
use serde_json::json;
use support::mcp::*;

#[tokio::test]
async fn server_everything_lists_and_answers() {
    if support::skip_without("npx", "server_everything_lists_and_answers") {
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
