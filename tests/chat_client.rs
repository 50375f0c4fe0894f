//! `mcp-platform chat`, the terminal client, in a scripted session: the binary as a child
//! process with its stdin and stdout piped, answering the questions it prints (an approval
//! with `y`, a form field with a name) against the app on loopback.

mod support;

use std::process::Stdio;

use mcp_platform::config::{ApprovalPolicy, Settings};
use serde_json::json;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// Reads the client's output until a line contains `wanted`; returns everything read.
async fn read_until(lines: &mut Lines<BufReader<ChildStdout>>, wanted: &str, seen: &mut String) {
    loop {
        let line = tokio::time::timeout(RECEIVE_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {wanted:?} in time; the client printed:\n{seen}"))
            .expect("read the client's output")
            .unwrap_or_else(|| panic!("the client ended before printing {wanted:?}:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(wanted) {
            return;
        }
    }
}

fn annotations_policy(settings: &mut Settings) {
    settings.chat.service.tool_approval.policy = ApprovalPolicy::Annotations;
}

#[tokio::test]
async fn the_terminal_client_asks_for_the_approval_and_the_form_and_sends_the_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "buy milk\ncall Ada\n").expect("write notes");
    let mut demo = demo_server(&[("DEMO_NOTES_FILE", notes.to_str().expect("utf-8 path"))]);
    demo.trusted = true;
    let script = json!([
        {"tool_calls": [
            {"id": "call_del", "name": "demo__delete_note", "arguments": {"note": "buy milk"}},
            {"id": "call_ask", "name": "demo__ask_name", "arguments": {}}
        ]},
        {"text": "All done."}
    ]);
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(annotations_policy),
        servers: vec![("demo", demo)],
        store_path: None,
    })
    .await;

    let mut client = Command::from(mcp_platform(&["chat", &format!("ws://{}/ws/chat", app.addr)]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the terminal client");
    let mut input = client.stdin.take().expect("stdin");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let mut seen = String::new();

    input.write_all(b"tidy my notes and greet me\n").await.expect("type");
    read_until(&mut lines, "? allow demo__delete_note (server demo)", &mut seen).await;
    input.write_all(b"y\n").await.expect("type");
    read_until(&mut lines, "? demo asks: What is your name?", &mut seen).await;
    read_until(&mut lines, "Name (string", &mut seen).await;
    input.write_all(b"Ada\n").await.expect("type");
    read_until(&mut lines, "accept by anonymous", &mut seen).await;
    read_until(&mut lines, "demo__ask_name = Hello, Ada!", &mut seen).await;
    read_until(&mut lines, "tokens", &mut seen).await;
    assert!(seen.contains("call_del allow by anonymous"), "{seen}");
    assert!(seen.contains("demo__delete_note = deleted \"buy milk\""), "{seen}");
    assert_eq!(std::fs::read_to_string(&notes).expect("notes"), "call Ada\n", "the approved call ran");

    input.write_all(b"/quit\n").await.expect("type");
    let status = tokio::time::timeout(RECEIVE_TIMEOUT, client.wait()).await.expect("the client exits").expect("exit");
    assert!(status.success(), "{status:?}\n{seen}");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}
