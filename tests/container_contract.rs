//! What the container image relies on, tested without a container engine (none runs here):
//! the server as an unprivileged user, its working directory read-only, one data directory
//! writable, every setting from the environment over the image's `deploy/config.yaml`,
//! listening on 0.0.0.0 with API keys on. It serves a chat, drains on SIGTERM and exits 0.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::*;

/// The unprivileged user the test runs the server as when it runs as root.
const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `mcp-platform key`: a new key and its SHA-256.
fn new_key() -> (String, String) {
    let output = mcp_platform(&["key"]).output().expect("run mcp-platform key");
    let said = text(&output.stdout);
    let field = |name: &str| {
        said.lines().find_map(|line| line.strip_prefix(name)).expect("key output").trim().trim_matches('"').to_owned()
    };
    (field("key: "), field("key_sha256: "))
}

/// The binaries, copied into `dir` as the image has them in `/usr/local/bin`: the unprivileged
/// user must reach them, which the directory they were built in may not let it do (a checkout
/// in a private temporary directory).
fn install_binaries(dir: &Path) -> PathBuf {
    std::fs::create_dir(dir).expect("create the binaries' directory");
    for name in ["mcp-platform", "demo-server"] {
        std::fs::copy(binary(name), dir.join(name)).expect("copy a binary");
    }
    dir.to_owned()
}

fn read_only(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_contract_unprivileged_read_only_env_configured_drains_on_sigterm() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (app_dir, data_dir) = (root.path().join("app"), root.path().join("data"));
    std::fs::create_dir(&app_dir).unwrap();
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.yaml"), app_dir.join("config.yaml"))
        .expect("copy the image's config");
    let bin = install_binaries(&root.path().join("bin"));
    let servers = json!({"mcpServers": {"demo": {"command": bin.join("demo-server").display().to_string()}}});
    std::fs::write(app_dir.join("servers_config.json"), servers.to_string()).expect("write servers config");
    read_only(&app_dir);
    if running_as_root() {
        std::os::unix::fs::chown(&data_dir, Some(NOBODY), Some(NOBODY)).expect("chown the data dir");
    }

    let words: Vec<String> = (0..30).map(|n| format!("w{n}")).collect();
    let script = root.path().join("script.json");
    std::fs::write(&script, json!([{"text": words.join(" "), "delay_ms": 40}]).to_string()).unwrap();
    let mock = ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--script", script.to_str().unwrap()]));
    let (key, key_sha256) = new_key();
    let port = support::postgres::free_port();

    let mut command = std::process::Command::new(bin.join("mcp-platform"));
    command.arg("serve");
    command.current_dir(&app_dir).env_clear().envs([
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", data_dir.display().to_string()),
        ("MCP_CONFIG_PATH", app_dir.join("config.yaml").display().to_string()),
        ("MCP_SERVERS_CONFIG_PATH", app_dir.join("servers_config.json").display().to_string()),
        ("MCP__STORE__PATH", data_dir.join("events.jsonl").display().to_string()),
        ("MCP__WEBSOCKET__PORT", port.to_string()),
        ("MCP__LLM__ACTIVE", "mock".to_owned()),
        ("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("http://{}/v1", mock.addr)),
        ("MCP__LOGGING__LEVEL", "warn".to_owned()),
        ("ADMIN_KEY_SHA256", key_sha256),
    ]);
    if running_as_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    let mut server = ChildProcess::start(command);
    assert!(server.addr.ip().is_unspecified(), "listens on 0.0.0.0: {}", server.addr);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], server.addr.port()).into();
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status().as_u16(), 200);

    let mut client = WsClient::connect_with(addr, &[("authorization", &format!("Bearer {key}"))])
        .await
        .expect("an accepted upgrade")
        .0;
    client.send(json!({"action": "chat", "request_id": "in-container", "payload": {"text": "talk"}})).await;
    let mut messages = vec![client.recv().await, client.recv().await];
    server.signal(libc::SIGTERM);
    messages.extend(client.collect("in-container", &mut Vec::new()).await);
    assert_well_formed(&messages);
    assert_eq!(messages.last().unwrap()["status"], "complete", "the turn finished while draining");
    assert_eq!(text_of(&messages).trim(), words.join(" "));
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(0), "exits 0 after draining");

    let events = read_events(&data_dir.join("events.jsonl"));
    assert_eq!(events.last().unwrap()["extra"]["status"], "complete", "the answer is in /data");
    let written: Vec<_> = std::fs::read_dir(&app_dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(written.len(), 2, "nothing written beside the config: {written:?}");
}
