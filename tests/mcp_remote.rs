//! Remote MCP servers over streamable HTTP on loopback: `demo-server --http` (rmcp's server
//! side) and npm's server-everything in its streamable HTTP mode. Headers with `${VAR}`
//! tokens, the revision each server speaks, a server killed and started again on the same
//! port, a server that hangs, and tool timeouts that progress extends.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_platform::config::ServerConfig;
use mcp_platform::mcp::{McpManager, McpServerState, Unattended};
use serde_json::{Value, json};
use support::mcp::*;
use support::{Options, TestApp, assert_well_formed, binary, check, chunks};

const TOKEN: &str = "s3cret-demo-token";

fn shown(servers: &str, name: &str) -> Value {
    let servers: Value = serde_json::from_str(servers).expect("check --json prints JSON");
    servers.as_array().expect("a list").iter().find(|server| server["name"] == name).expect("the server").clone()
}

#[test]
fn check_lists_the_demo_over_http_with_the_token_from_the_environment_and_hides_it() {
    let demo = demo_http("127.0.0.1:0", &[("DEMO_REQUIRE_BEARER", TOKEN)]);
    let servers = json!({"mcpServers": {
        "remote": {"type": "http", "url": endpoint(demo.addr), "headers": {"Authorization": "Bearer ${REMOTE_TEST_TOKEN}"}},
        "local": {"command": binary("demo-server").display().to_string()}
    }});

    let (code, stdout, stderr) = check(&servers, &["--json"], &[("REMOTE_TEST_TOKEN", TOKEN)]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token is never shown:\n{stdout}{stderr}");
    let remote = shown(&stdout, "remote");
    assert_eq!(remote["state"], "connected", "{remote:#}");
    assert_eq!(remote["transport"], "http");
    assert_eq!(remote["url"], endpoint(demo.addr));
    assert_eq!(remote["headers"], json!({"Authorization": "***"}));
    assert_eq!(remote["pid"], Value::Null, "a remote server has no local process");
    assert_eq!(remote["tools"].as_array().expect("tools").len(), 10);
    // Both are rmcp 3.9 servers: discovery, whatever carries it.
    assert_eq!(remote["protocol_version"], "2026-07-28");
    let local = shown(&stdout, "local");
    assert_eq!((local["transport"].as_str(), local["protocol_version"].as_str()), (Some("stdio"), Some("2026-07-28")));

    let (code, stdout, stderr) = check(&servers, &[], &[("REMOTE_TEST_TOKEN", TOKEN)]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("header    Authorization: ***"), "{stdout}");
    assert!(stdout.contains("revision  2026-07-28"), "{stdout}");

    let (code, stdout, stderr) = check(&servers, &["--json"], &[("REMOTE_TEST_TOKEN", "wrong-token")]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let refused = shown(&stdout, "remote");
    assert_ne!(refused["state"], "connected");
    assert!(refused["last_error"].as_str().expect("an error").contains("401"), "{refused:#}");
    assert!(!stdout.contains("wrong-token") && !stderr.contains("wrong-token"));
}

#[tokio::test]
async fn a_chat_turn_calls_a_tool_of_the_remote_demo() {
    let demo = demo_http("127.0.0.1:0", &[("DEMO_REQUIRE_BEARER", TOKEN)]);
    let script = json!([
        {"tool_calls": [{"name": "remote__sum", "arguments": {"a": 2, "b": 3}}]},
        {"text": "It is 5."}
    ]);
    let bearer = format!("Bearer {TOKEN}");
    let app = TestApp::start(Options {
        script: Some(script),
        servers: vec![("remote", remote(&endpoint(demo.addr), &[("Authorization", &bearer)]))],
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    let messages = client.chat("r-remote", json!({"text": "what is 2+3"})).await;
    assert_well_formed(&messages);
    let results = chunks(&messages, "tool_result");
    assert_eq!((results[0]["name"].as_str(), results[0]["ok"].as_bool()), (Some("remote__sum"), Some(true)));
    assert_eq!(results[0]["content"], "5");
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    app.shutdown().await;
}

/// The states a server went through, each recorded once, while `until` does not hold.
async fn states_until(
    manager: &McpManager,
    within: Duration,
    until: impl Fn(&McpManager) -> bool,
) -> Vec<McpServerState> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while !until(manager) {
        let state = manager.server("remote").expect("the server").state;
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        assert!(Instant::now() < deadline, "gave up after {within:?}; states seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

#[tokio::test]
async fn a_remote_server_killed_and_started_again_on_the_same_port_is_reconnected_with_a_new_session() {
    let demo = demo_http("127.0.0.1:0", &[]);
    let address = demo.addr.to_string();
    let manager = start(servers(vec![("remote", remote(&endpoint(demo.addr), &[]))])).await;
    assert_eq!(call(&manager, "remote__sum", json!({"a": 1, "b": 2})).await.content, "3");

    drop(demo); // SIGKILL, then reaped
    let down = states_until(&manager, Duration::from_secs(10), |manager| {
        manager.server("remote").is_some_and(|server| server.state == McpServerState::Restarting)
    })
    .await;
    assert_eq!(down, [McpServerState::Connected], "connected until the heartbeat notices");
    let snapshot = manager.server("remote").expect("the server");
    assert!(snapshot.last_error.is_some(), "why it went down is shown");
    assert_eq!(snapshot.protocol_version, None, "no session, no revision");
    assert!(tool_names(&manager).is_empty(), "the tools of a server that is down are not offered");

    let _restarted = demo_http(&address, &[]);
    let back = states_until(&manager, Duration::from_secs(10), |manager| {
        manager.server("remote").is_some_and(|server| server.state == McpServerState::Connected)
    })
    .await;
    assert_eq!(back, [McpServerState::Restarting]);
    let snapshot = manager.server("remote").expect("the server");
    assert_eq!(snapshot.restarts, 1);
    assert_eq!(snapshot.tools.len(), 10, "tools listed again");
    assert_eq!(snapshot.protocol_version.as_deref(), Some("2026-07-28"));
    let after = call(&manager, "remote__sum", json!({"a": 2, "b": 3})).await;
    assert_eq!((after.ok, after.content.as_str()), (true, "5"));
    manager.shutdown().await;
}

fn with_timeouts(mut config: ServerConfig, tool_timeout: f64, max_tool_timeout: Option<f64>) -> ServerConfig {
    config.tool_timeout = Some(tool_timeout);
    config.max_tool_timeout = max_tool_timeout;
    config
}

#[tokio::test]
async fn a_hanging_remote_server_times_the_call_out_and_the_turn_goes_on() {
    let demo = demo_http("127.0.0.1:0", &[]);
    let script = json!([
        {"tool_calls": [{"name": "remote__sum", "arguments": {"a": 2, "b": 3}}]},
        {"text": "The tool did not answer."}
    ]);
    let app = TestApp::start(Options {
        script: Some(script),
        servers: vec![("remote", with_timeouts(remote(&endpoint(demo.addr), &[]), 1.0, None))],
        ..Options::default()
    })
    .await;
    demo.signal(libc::SIGSTOP); // accepts connections (the kernel does), answers nothing
    let mut client = app.client().await;
    let started = Instant::now();
    let messages = client.chat("r-hang", json!({"text": "what is 2+3"})).await;
    let took = started.elapsed();
    demo.signal(libc::SIGCONT);
    assert_well_formed(&messages);
    let results = chunks(&messages, "tool_result");
    assert_eq!(results[0]["ok"], false);
    let content = results[0]["content"].as_str().expect("content");
    assert!(content.contains("timed out after 1.0s"), "{content}");
    assert!(took < Duration::from_secs(5), "the turn went on after the timeout: {took:?}");
    let complete = messages.last().expect("terminal");
    assert_eq!(complete["status"], "complete");
    assert!(support::text_of(&messages).contains("did not answer"));
    app.shutdown().await;
}

#[tokio::test]
async fn progress_restarts_the_tool_timeout_within_the_maximum() {
    let markers = tempfile::tempdir().expect("temp dir");
    let marker = markers.path().join("cancelled");
    let demo = demo_http("127.0.0.1:0", &[("DEMO_CANCEL_MARKER", marker.to_str().expect("utf-8"))]);
    let manager =
        start(servers(vec![("remote", with_timeouts(remote(&endpoint(demo.addr), &[]), 2.0, Some(5.0)))])).await;

    // Progress every second: four seconds in all, twice the quiet period.
    let started = Instant::now();
    let (outcome, reported) =
        call_for(&manager, "remote__slow_count", json!({"n": 4, "delay_ms": 1000}), Arc::new(Unattended)).await;
    assert!(outcome.ok, "{}", outcome.content);
    assert_eq!(outcome.content, "counted to 4");
    assert!(started.elapsed() >= Duration::from_secs(4));
    let steps: Vec<f64> = reported.iter().map(|update| update.progress).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0]);

    // Silent for longer than the quiet period: cut at 2 s.
    let started = Instant::now();
    let silent = call(&manager, "remote__slow_count", json!({"n": 1, "delay_ms": 10_000})).await;
    let took = started.elapsed();
    assert!(!silent.ok);
    assert!(silent.content.contains("without an answer or progress"), "{}", silent.content);
    assert!((Duration::from_secs(2)..Duration::from_millis(2800)).contains(&took), "{took:?}");
    wait_for(Duration::from_secs(3), "the cancellation to reach the remote server", || marker.exists()).await;
    assert_eq!(std::fs::read_to_string(&marker).expect("the marker"), "cancelled at 0");

    // Progress every second for ten seconds: cut at the 5 s maximum all the same.
    let started = Instant::now();
    let long = call(&manager, "remote__slow_count", json!({"n": 10, "delay_ms": 1000})).await;
    let took = started.elapsed();
    assert!(!long.ok);
    assert!(long.content.contains("max_tool_timeout"), "{}", long.content);
    assert!((Duration::from_secs(5)..Duration::from_millis(5800)).contains(&took), "{took:?}");
    manager.shutdown().await;
}

/// A process group killed as a whole: `npx` starts node as its child.
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test]
async fn server_everything_over_streamable_http_and_the_demo_speak_their_newest_revisions() {
    if support::skip_without("npx", "server_everything_over_streamable_http") {
        return;
    }
    let port = free_port();
    let everything = ProcessGroup(
        Command::new("npx")
            .args(["-y", "@modelcontextprotocol/server-everything", "streamableHttp"])
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start npx"),
    );
    // The first `npx -y` downloads the package.
    let deadline = Instant::now() + Duration::from_secs(240);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server-everything did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let demo = demo_http("127.0.0.1:0", &[]);
    let servers_json = json!({"mcpServers": {
        "everything": {"url": format!("http://127.0.0.1:{port}/mcp")},
        "demo": {"url": endpoint(demo.addr)},
        "local": {"command": binary("demo-server").display().to_string()}
    }});
    let output = tokio::task::spawn_blocking(move || check(&servers_json, &["--json"], &[])).await.expect("check ran");
    let (code, stdout, stderr) = output;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let everything_shown = shown(&stdout, "everything");
    assert_eq!(everything_shown["state"], "connected");
    // server-everything offers no discovery: the `initialize` handshake, in its newest revision.
    let revision = everything_shown["protocol_version"].as_str().expect("a revision");
    assert!(revision.starts_with("2025-"), "{revision}");
    assert_eq!(shown(&stdout, "demo")["protocol_version"], "2026-07-28");
    assert_eq!(shown(&stdout, "local")["protocol_version"], "2026-07-28");
    let names: Vec<&str> =
        everything_shown["tools"].as_array().expect("tools").iter().filter_map(|tool| tool["name"].as_str()).collect();
    assert!(names.contains(&"everything__echo"), "{names:?}");

    // Its tools in a chat turn, as a user meets them.
    let script = json!([
        {"tool_calls": [
            {"name": "everything__echo", "arguments": {"message": "over http"}},
            {"name": "everything__get-sum", "arguments": {"a": 2, "b": 3}}
        ]},
        {"text": "Echoed, and it is 5."}
    ]);
    let app = TestApp::start(Options {
        script: Some(script),
        servers: vec![("everything", remote(&format!("http://127.0.0.1:{port}/mcp"), &[]))],
        ..Options::default()
    })
    .await;
    let messages = app.client().await.chat("r-everything", json!({"text": "echo, then 2+3"})).await;
    assert_well_formed(&messages);
    let results = chunks(&messages, "tool_result");
    let outcome = |name: &str| {
        let result =
            results.iter().find(|result| result["name"] == name).unwrap_or_else(|| panic!("{name}: {messages:?}"));
        (result["ok"].as_bool(), result["content"].as_str().unwrap_or_default().to_owned())
    };
    let (echo_ok, echo) = outcome("everything__echo");
    assert!(echo_ok == Some(true) && echo.contains("over http"), "{echo}");
    let (sum_ok, sum) = outcome("everything__get-sum");
    assert!(sum_ok == Some(true) && sum.contains('5'), "{sum}");
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    app.shutdown().await;
    drop(everything);
}
