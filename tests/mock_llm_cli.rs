//! `mcp-platform mock-llm` as a process: it reports its address and serves its script file.

mod llm_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use llm_common::*;
use mcp_platform::config::ProviderKind;
use serde_json::json;

/// Kills the child when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_command_prints_its_address_and_answers_from_its_script_file() {
    let mut script = tempfile::NamedTempFile::new().expect("temp file");
    let turns = json!([{"chunks": ["from ", "the ", "file"]}]);
    script.write_all(turns.to_string().as_bytes()).expect("write");

    let child = Command::new(env!("CARGO_BIN_EXE_mcp-platform"))
        .args(["mock-llm", "--port", "0", "--script"])
        .arg(script.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mock-llm starts");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), line)
        .await
        .expect("the address is printed within 20 s")
        .expect("reader")
        .expect("line");
    let base_url = line
        .trim()
        .strip_prefix("mock-llm listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    let settings = settings(ProviderKind::Openai, &format!("{base_url}/v1"), "", 10.0, 0);
    let provider = mcp_platform::llm::from_settings(&settings).expect("provider");
    let outcome = chat(&provider, ask("hi", vec![], true)).await;
    assert_eq!(outcome.texts, ["from ", "the ", "file"]);
    assert!(child.0.try_wait().expect("status").is_none(), "still serving");
}

#[test]
fn a_broken_script_file_is_refused_with_its_path_and_the_problem() {
    let mut script = tempfile::NamedTempFile::new().expect("temp file");
    script.write_all(br#"[{"text": "hi", "colour": "blue"}]"#).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-platform"))
        .args(["mock-llm", "--script"])
        .arg(script.path())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&script.path().display().to_string()), "{stderr}");
    assert!(stderr.contains("turn 1") && stderr.contains("colour"), "{stderr}");
}
