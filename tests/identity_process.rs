//! The real `mcp-platform serve` with API keys, as an operator runs it: its whole log at `info`
//! never holds a credential, whether it was accepted or refused.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::*;

const ALICE_KEY: &str = "alice-key-that-must-never-be-logged";
const WRONG_KEY: &str = "wrong-key-that-must-never-be-logged";

/// The shipped config.yaml in mode `api_keys`, with alice's key hash from the environment.
fn api_keys_config(dir: &Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")).expect("config");
    let config = shipped.replacen(r#"mode: "none""#, r#"mode: "api_keys""#, 1).replacen(
        "api_keys: []",
        r#"api_keys: [{user: "alice", role: "user", key_sha256: "env:ALICE_KEY_SHA256"}]"#,
        1,
    );
    assert_ne!(config, shipped, "the shipped config.yaml still has the lines this test edits");
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

#[tokio::test]
async fn no_credential_reaches_the_log_of_a_serving_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--word-delay-ms", "0"]));
    let log_path = dir.path().join("server.log");
    let mut command =
        mcp_platform(&["serve", "--port", "0", "--config", api_keys_config(dir.path()).to_str().unwrap()]);
    command
        .envs([
            ("MCP__LLM__ACTIVE", "mock".to_owned()),
            ("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("http://{}/v1", mock.addr)),
            ("MCP__STORE__PATH", dir.path().join("events.jsonl").display().to_string()),
            ("MCP__LOGGING__LEVEL", "info".to_owned()),
            ("MCP_SERVERS_CONFIG_PATH", write_servers_config(dir.path()).display().to_string()),
            ("ALICE_KEY_SHA256", mcp_platform::auth::key_sha256(ALICE_KEY)),
        ])
        .stderr(Stdio::from(std::fs::File::create(&log_path).expect("log file")));
    let mut server = ChildProcess::start(command);

    for headers in [
        vec![("authorization", format!("Bearer {WRONG_KEY}"))],
        vec![("sec-websocket-protocol", format!("mcp-platform.v1, bearer.{WRONG_KEY}"))],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let refusal = WsClient::connect_with(server.addr, &headers).await.err().expect("refused");
        assert_eq!(refusal.status, 401);
        assert!(!refusal.body.contains(WRONG_KEY), "{refusal:?}");
    }
    let offer = format!("mcp-platform.v1, bearer.{ALICE_KEY}");
    let (mut client, _) =
        WsClient::connect_with(server.addr, &[("sec-websocket-protocol", &offer)]).await.expect("admitted");
    let answer = client.chat("logged", json!({"text": "what is 2+3"})).await;
    assert_eq!(answer.last().expect("terminal")["status"], "complete");
    let me = reqwest::Client::new()
        .get(format!("http://{}/api/me", server.addr))
        .bearer_auth(ALICE_KEY)
        .send()
        .await
        .expect("GET /api/me");
    let me = me.text().await.expect("body");
    assert!(me.contains("alice") && !me.contains(ALICE_KEY), "{me}");
    drop(client);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(15)).code(), Some(0));

    let log = std::fs::read_to_string(&log_path).expect("the server's log");
    assert!(log.contains("credential refused"), "the refusals were logged: {log}");
    assert!(log.contains("logged"), "the request was logged: {log}");
    for credential in [ALICE_KEY, WRONG_KEY] {
        let lines: Vec<&str> = log.lines().filter(|line| line.contains(credential)).collect();
        assert!(lines.is_empty(), "a credential in the log: {lines:?}");
    }
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).expect("events");
    assert!(!events.contains(ALICE_KEY) && events.contains(r#""user":"alice""#), "{events}");
}
