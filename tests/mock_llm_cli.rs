//! `mcp-platform mock-llm` as a process: it reports its address and serves its script file.

mod support;

use std::io::Write;

use mcp_platform::config::ProviderKind;
use serde_json::json;
use support::llm::*;
use support::{ChildProcess, mcp_platform};

#[tokio::test]
async fn the_command_prints_its_address_and_answers_from_its_script_file() {
    let mut script = tempfile::NamedTempFile::new().expect("temp file");
    let turns = json!([{"chunks": ["from ", "the ", "file"]}]);
    script.write_all(turns.to_string().as_bytes()).expect("write");

    let mut command = mcp_platform(&["mock-llm", "--port", "0", "--script"]);
    command.arg(script.path());
    let mut child = tokio::task::spawn_blocking(move || ChildProcess::start(command)).await.expect("mock-llm starts");
    let base_url = format!("http://{}", child.addr);

    let settings = settings(ProviderKind::Openai, &format!("{base_url}/v1"), "", 10.0, 0);
    let provider = mcp_platform::llm::from_settings(&settings).expect("provider");
    let outcome = chat(&provider, ask("hi", vec![], true)).await;
    assert_eq!(outcome.texts, ["from ", "the ", "file"]);
    assert!(child.child.try_wait().expect("status").is_none(), "still serving");
}

#[test]
fn a_broken_script_file_is_refused_with_its_path_and_the_problem() {
    let mut script = tempfile::NamedTempFile::new().expect("temp file");
    script.write_all(br#"[{"text": "hi", "colour": "blue"}]"#).expect("write");
    let output = mcp_platform(&["mock-llm", "--script"]).arg(script.path()).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&script.path().display().to_string()), "{stderr}");
    assert!(stderr.contains("turn 1") && stderr.contains("colour"), "{stderr}");
}
