//! The demo server through the MCP layer: every tool, progress, cancellation, prompts,
//! resources, argument validation and output cutting.

mod support;

use std::time::Duration;

use mcp_platform::domain::Role;
use mcp_platform::mcp::{McpServerState, ToolProvider, Unattended};
use serde_json::{Map, json};
use std::sync::Arc;
use support::mcp::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn every_demo_tool_is_listed_and_answers() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let mut names = tool_names(&manager);
    names.sort();
    assert_eq!(
        names,
        [
            "demo__ask_name",
            "demo__delete_note",
            "demo__divide",
            "demo__echo",
            "demo__list_notes",
            "demo__multiply",
            "demo__power",
            "demo__slow_count",
            "demo__subtract",
            "demo__sum"
        ]
    );
    for spec in manager.tools() {
        assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
        assert!(spec.parameters["properties"].is_object(), "{}", spec.name);
        assert!(!spec.description.is_empty(), "{}", spec.name);
    }
    let cases = [
        ("demo__sum", json!({"a": 2, "b": 3}), "5"),
        ("demo__subtract", json!({"a": 2, "b": 3.5}), "-1.5"),
        ("demo__multiply", json!({"a": 4, "b": 2.5}), "10"),
        ("demo__divide", json!({"a": 7, "b": 2}), "3.5"),
        ("demo__power", json!({"base": 2, "exponent": 10}), "1024"),
        ("demo__echo", json!({"text": "héllo"}), "héllo"),
        ("demo__slow_count", json!({"n": 2, "delay_ms": 1}), "counted to 2"),
    ];
    for (name, arguments, expected) in cases {
        let outcome = call(&manager, name, arguments).await;
        assert!(outcome.ok, "{name}: {}", outcome.content);
        assert_eq!(outcome.content, expected, "{name}");
    }
    manager.shutdown().await;
}

#[tokio::test]
async fn division_by_zero_is_an_error_result_and_the_server_lives_on() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let outcome = call(&manager, "demo__divide", json!({"a": 1, "b": 0})).await;
    assert!(!outcome.ok);
    assert!(outcome.content.contains("division by zero"), "{}", outcome.content);
    let after = call(&manager, "demo__sum", json!({"a": 1, "b": 1})).await;
    assert_eq!((after.ok, after.content.as_str()), (true, "2"));
    assert_eq!(manager.servers_view()[0].restarts, 0);
    manager.shutdown().await;
}

#[tokio::test]
async fn slow_count_progress_arrives_in_order() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let (outcome, reported) =
        call_for(&manager, "demo__slow_count", json!({"n": 5, "delay_ms": 20}), Arc::new(Unattended)).await;
    assert!(outcome.ok, "{}", outcome.content);
    assert!(reported.iter().all(|update| update.total == Some(5.0)), "{reported:?}");
    let seen: Vec<f64> = reported.iter().map(|update| update.progress).collect();
    assert_eq!(seen, [1.0, 2.0, 3.0, 4.0, 5.0]);
    manager.shutdown().await;
}

#[tokio::test]
async fn cancelling_slow_count_stops_it_at_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("cancelled");
    let mut config = demo();
    config.env.insert("DEMO_CANCEL_MARKER".into(), marker.display().to_string());
    let manager = start(servers(vec![("demo", config)])).await;
    let (progress, mut updates) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let call = {
        let manager = manager.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            manager
                .call_tool(
                    &tool_call("demo__slow_count", json!({"n": 1000, "delay_ms": 20})),
                    progress,
                    cancel,
                    Arc::new(Unattended),
                )
                .await
        })
    };
    let first = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("progress arrives")
        .expect("channel open");
    assert_eq!(first.progress, 1.0);
    cancel.cancel();
    let outcome =
        tokio::time::timeout(Duration::from_secs(2), call).await.expect("a cancelled call returns at once").unwrap();
    assert!(!outcome.ok);
    assert!(outcome.content.contains("cancelled"), "{}", outcome.content);
    wait_for(Duration::from_secs(5), "the server to stop counting", || marker.exists()).await;
    let stopped_at: u32 =
        std::fs::read_to_string(&marker).unwrap().trim_start_matches("cancelled at ").parse().unwrap();
    assert!((1..1000).contains(&stopped_at), "stopped at {stopped_at}");
    manager.shutdown().await;
}

#[tokio::test]
async fn arguments_are_checked_against_the_schema_before_the_call() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let outcome = call(&manager, "demo__sum", json!({"a": "two", "b": 3})).await;
    assert!(!outcome.ok);
    assert!(outcome.content.contains("field `a`"), "{}", outcome.content);
    let missing = call(&manager, "demo__sum", json!({"a": 1})).await;
    assert!(!missing.ok);
    assert!(missing.content.contains("\"b\""), "{}", missing.content);
    let unknown = call(&manager, "demo__nope", json!({})).await;
    assert!(!unknown.ok);
    assert!(unknown.content.contains("unknown tool"), "{}", unknown.content);
    manager.shutdown().await;
}

/// The MCP layer hands on the whole output: the chat service cuts what the model and the
/// client see (tests/mcp_results.rs), the log keeps it whole.
#[tokio::test]
async fn long_output_is_passed_on_whole() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let long = "x".repeat(25_000);
    let outcome = call(&manager, "demo__echo", json!({"text": long})).await;
    assert!(outcome.ok);
    assert_eq!(outcome.content, long);
    manager.shutdown().await;
}

#[tokio::test]
async fn prompts_and_resources_are_listed_and_served() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let server = manager.server("demo").unwrap();
    assert_eq!(server.state, McpServerState::Connected);
    assert_eq!(server.prompts.len(), 1);
    assert_eq!(server.prompts[0].name, "demo__explain");
    assert_eq!(server.prompts[0].arguments[0].name, "topic");
    assert!(server.prompts[0].arguments[0].required);
    assert_eq!(server.resources[0].uri, "demo://about");
    assert_eq!(server.resource_templates[0].uri_template, "demo://greeting/{name}");

    let mut arguments = Map::new();
    arguments.insert("topic".into(), json!("tides"));
    let messages = manager.get_prompt("demo__explain", arguments).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].role, Role::User);
    assert!(messages[0].content.contains("tides"));

    let about = manager.read_resource("demo://about").await.unwrap();
    assert!(about.contains("slow_count"), "{about}");
    let greeting = manager.read_resource("demo://greeting/Ada").await.unwrap();
    assert_eq!(greeting, "Hello, Ada!");
    let missing = manager.read_resource("other://x").await.unwrap_err();
    assert!(missing.0.contains("no MCP server offers"), "{}", missing.0);
    let unknown = manager.get_prompt("demo__nothing", Map::new()).await.unwrap_err();
    assert!(unknown.0.contains("unknown prompt"), "{}", unknown.0);

    let json = serde_json::to_value(manager.servers_view()).unwrap();
    assert_eq!(json[0]["state"], "connected");
    assert_eq!(json[0]["circuit"], "closed");
    manager.shutdown().await;
}

#[tokio::test]
async fn allowed_and_excluded_tools_filter_what_the_model_sees() {
    let mut config = demo();
    config.allowed_tools = Some(vec!["sum".into(), "divide".into(), "echo".into()]);
    config.excluded_tools = vec!["echo".into()];
    let manager = start(servers(vec![("demo", config)])).await;
    let mut names = tool_names(&manager);
    names.sort();
    assert_eq!(names, ["demo__divide", "demo__sum"]);
    let refused = call(&manager, "demo__echo", json!({"text": "x"})).await;
    assert!(!refused.ok);
    manager.shutdown().await;
}
