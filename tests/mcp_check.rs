//! `mcp-platform check` as a user runs it: a table or JSON, and the exit code.

mod support;

use serde_json::{Value, json};
use support::check;

#[test]
fn check_lists_what_each_server_offers_and_fails_on_a_broken_one() {
    let demo = support::binary("demo-server").display().to_string();
    let (code, stdout, stderr) = check(&json!({"mcpServers": {"demo": {"command": demo}}}), &[], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("demo    connected"), "{stdout}");
    assert!(stdout.contains("demo__slow_count"), "{stdout}");
    assert!(stdout.contains("demo://greeting/{name}"), "{stdout}");

    let broken = json!({"mcpServers": {
        "demo": {"command": demo},
        "broken": {"command": "/nonexistent/server"},
        "off": {"command": "/nonexistent/too", "enabled": false}
    }});
    let (code, stdout, stderr) = check(&broken, &["--json"], &[]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let servers: Value = serde_json::from_str(&stdout).unwrap();
    let servers = servers.as_array().unwrap();
    assert_eq!(servers.len(), 2, "disabled servers are not started");
    let broken = servers.iter().find(|s| s["name"] == "broken").unwrap();
    assert_ne!(broken["state"], "connected");
    assert!(broken["last_error"].as_str().unwrap().contains("cannot start"));
    let demo = servers.iter().find(|s| s["name"] == "demo").unwrap();
    assert_eq!(demo["state"], "connected");
    assert_eq!(demo["tools"].as_array().unwrap().len(), 10);
}
