//! `mcp-platform replay`: transcripts, filters, token totals and `--verify`, run as the real
//! binary on files written by the real store.

mod support;

use std::path::{Path, PathBuf};

use mcp_platform::store::jsonl::JsonlStore;
use mcp_platform::store::{ChatEvent, EventStore};
use serde_json::Value;
use support::store::*;
use support::{replay, text};

/// Two conversations: `c-1` with a tool-calling turn on gpt-4o and a second turn on
/// llama, `c-2` with one plain turn on llama.
async fn sample_file(dir: &Path) -> (PathBuf, Vec<ChatEvent>) {
    let path = dir.join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    let mut written = Vec::new();
    let mut turn = vec![user("c-1", "r-1", "What is 2+3?")];
    turn.extend(tool_turn("c-1", "r-1", "gpt-4o"));
    turn.push(assistant("c-1", "r-1", "It is 5.", "gpt-4o"));
    written.extend(store.append(turn).await.unwrap());
    written.extend(
        store
            .append(vec![
                user("c-2", "r-2", "Hello"),
                assistant("c-2", "r-2", "Hi there!\nHow can I help?", "llama-3.3-70b"),
            ])
            .await
            .unwrap(),
    );
    written.extend(
        store
            .append(vec![user("c-1", "r-3", "Thanks"), assistant("c-1", "r-3", "You're welcome.", "llama-3.3-70b")])
            .await
            .unwrap(),
    );
    (path, written)
}

fn success(output: &std::process::Output) -> String {
    assert!(output.status.success(), "replay failed:\n{}{}", text(&output.stdout), text(&output.stderr));
    text(&output.stdout)
}

fn total(events: &[ChatEvent], keep: impl Fn(&ChatEvent) -> bool) -> u64 {
    events.iter().filter(|e| keep(e)).map(|e| e.token_count).sum()
}

#[tokio::test]
async fn text_transcripts_show_every_event_and_token_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = sample_file(dir.path()).await;
    let out = success(&replay(&[path.to_str().unwrap()]));

    let c1_tokens = total(&written, |e| e.conversation_id == "c-1");
    assert!(out.contains(&format!("== conversation c-1 (6 events, {c1_tokens} tokens) ==")), "{out}");
    assert!(out.contains("== conversation c-2 (2 events"), "{out}");
    assert!(out.find("conversation c-1").unwrap() < out.find("conversation c-2").unwrap());
    assert!(out.contains("user_message [user] request r-1"), "{out}");
    assert!(out.contains("    What is 2+3?"), "{out}");
    assert!(out.contains(r#"    tool call call_1 demo__sum {"a":2,"b":3}"#), "{out}");
    assert!(out.contains("tool_result [tool] request r-1"), "{out}");
    assert!(out.contains("    result of tool call call_1:\n    5\n"), "{out}");
    assert!(out.contains("    Hi there!\n    How can I help?\n"), "{out}");

    let gpt_tokens = total(&written, |e| e.model.as_deref() == Some("gpt-4o"));
    let llama_tokens = total(&written, |e| e.model.as_deref() == Some("llama-3.3-70b"));
    assert!(
        out.contains(&format!(
            "conversation c-1: {c1_tokens} tokens in 6 events; provider usage: 90 prompt + 36 completion = 126 total"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("model gpt-4o: {gpt_tokens} tokens in 2 events")), "{out}");
    assert!(out.contains(&format!("model llama-3.3-70b: {llama_tokens} tokens in 2 events")), "{out}");
    assert!(out.contains(&format!("all: {} tokens in 8 events", total(&written, |_| true))), "{out}");
}

#[tokio::test]
async fn json_output_is_machine_readable_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = sample_file(dir.path()).await;
    let file = path.to_str().unwrap();

    let all: Value = serde_json::from_str(&success(&replay(&[file, "--format", "json"]))).unwrap();
    assert_eq!(all["lines_read"], 8);
    assert_eq!(all["conversations"].as_array().unwrap().len(), 2);
    let first_events: Vec<ChatEvent> = serde_json::from_value(all["conversations"][0]["events"].clone()).unwrap();
    assert_eq!(first_events.len(), 6);
    assert_eq!(first_events[0], written[0]);
    assert_eq!(all["totals"]["token_count"], total(&written, |_| true));
    assert_eq!(all["per_model"]["gpt-4o"]["usage"]["total_tokens"], 84);

    let by_request: Value =
        serde_json::from_str(&success(&replay(&[file, "--request", "r-3", "--format", "json"]))).unwrap();
    assert_eq!(by_request["totals"]["events"], 2);
    assert_eq!(by_request["conversations"][0]["conversation_id"], "c-1");

    let by_conversation: Value =
        serde_json::from_str(&success(&replay(&[file, "--conversation", "c-2", "--format", "json"]))).unwrap();
    assert_eq!(by_conversation["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(by_conversation["totals"]["events"], 2);

    let since_last: Value =
        serde_json::from_str(&success(&replay(&[file, "--since", &written[6].timestamp, "--format", "json"]))).unwrap();
    assert_eq!(since_last["totals"]["events"], 2);

    let future = success(&replay(&[file, "--since", "2999-01-01"]));
    assert!(future.contains("No events match"), "{future}");

    let bad_since = replay(&[file, "--since", "yesterday"]);
    assert!(!bad_since.status.success());
    assert!(text(&bad_since.stderr).contains("RFC 3339"));
}

#[tokio::test]
async fn verify_passes_an_intact_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path()).await;
    let out = success(&replay(&[path.to_str().unwrap(), "--verify"]));
    assert!(out.starts_with("OK "), "{out}");
    assert!(out.contains("8 lines, 2 conversations"), "{out}");
    let json: Value =
        serde_json::from_str(&success(&replay(&[path.to_str().unwrap(), "--verify", "--format", "json"]))).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["lines"], 8);
}

/// Rewrites the file with `change` applied to its lines and runs `--verify`.
fn verify_after(path: &Path, change: impl FnOnce(&mut Vec<String>)) -> (bool, String) {
    let mut lines = file_lines(path);
    change(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    let output = replay(&[path.to_str().unwrap(), "--verify"]);
    (output.status.success(), text(&output.stdout))
}

#[tokio::test]
async fn verify_names_an_edited_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path()).await;
    let (ok, out) = verify_after(&path, |lines| {
        lines[3] = lines[3].replace("It is 5.", "It is 6.");
    });
    assert!(!ok);
    assert!(out.contains("line 4: the hash does not match the line's bytes"), "{out}");
    assert!(out.contains("3 lines before it are intact"), "{out}");
}

#[tokio::test]
async fn verify_names_a_dropped_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path()).await;
    let (ok, out) = verify_after(&path, |lines| {
        lines.remove(2);
    });
    assert!(!ok);
    assert!(out.contains("line 3: prev does not match the hash of line 2"), "{out}");
}

#[tokio::test]
async fn verify_names_two_swapped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path()).await;
    let (ok, out) = verify_after(&path, |lines| lines.swap(4, 5));
    assert!(!ok);
    assert!(out.contains("line 5: prev does not match the hash of line 4"), "{out}");
}

#[tokio::test]
async fn verify_names_a_dropped_first_line_and_a_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path()).await;
    let original = file_lines(&path);
    let (ok, out) = verify_after(&path, |lines| {
        lines.remove(0);
    });
    assert!(!ok);
    assert!(out.contains("line 1: prev is "), "{out}");
    assert!(out.contains("must be 64 zeros"), "{out}");

    let (ok, out) = verify_after(&path, |lines| {
        *lines = original.clone();
        lines[1].truncate(40);
    });
    assert!(!ok);
    assert!(out.contains("line 2: not a valid event line"), "{out}");
}

#[tokio::test]
async fn verify_names_a_seq_gap_even_with_a_valid_chain() {
    // A chain rebuilt around a removed event hides the removal from the hashes, but not from
    // the conversation's seq.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    store.append(vec![user("c", "r-1", "one")]).await.unwrap();
    drop(store);
    let lines = file_lines(&path);
    let mut forged: ChatEvent = serde_json::from_str(&lines[0]).unwrap();
    forged.seq = 3;
    forged.prev = forged.hash.clone();
    forged.id = uuid::Uuid::now_v7().to_string();
    let mut bytes = std::fs::read(&path).unwrap();
    mcp_platform::store::chain::seal_into(&mut forged, &mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let output = replay(&[path.to_str().unwrap(), "--verify"]);
    assert!(!output.status.success());
    let out = text(&output.stdout);
    assert!(out.contains(r#"line 2: seq 3 in conversation "c", expected 2"#), "{out}");
}

#[tokio::test]
async fn a_file_being_written_replays_up_to_its_last_complete_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path()).await;
    // A writer in the middle of its line.
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, br#"{"v":1,"id":"01"#).unwrap();

    let out = success(&replay(&[path.to_str().unwrap(), "--verify"]));
    assert!(out.contains("8 lines"), "{out}");
    assert!(out.contains("the last 15 bytes are not a complete line yet"), "{out}");
    let out = success(&replay(&[path.to_str().unwrap()]));
    assert!(out.contains("all: "), "{out}");
    assert!(out.contains("not a complete line yet"), "{out}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = replay(&["/nonexistent/events.jsonl"]);
    assert!(!output.status.success());
    let err = text(&output.stderr);
    assert!(err.contains("cannot open the events file /nonexistent/events.jsonl"), "{err}");
    assert!(err.contains("store.path"), "{err}");
}

#[tokio::test]
async fn lines_from_before_events_named_their_user_verify_and_belong_to_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // A line as earlier versions wrote it: no `user` key, hashed over exactly these bytes.
    let genesis = "0".repeat(64);
    let body = format!(
        r#"{{"v":1,"id":"0193","conversation_id":"old","seq":1,"request_id":"r-old","timestamp":"2026-01-01T00:00:00.000000Z","type":"user_message","role":"user","content":"from before","tool_calls":null,"tool_call_id":null,"model":null,"usage":null,"token_count":2,"extra":{{"fingerprint":"f"}},"prev":"{genesis}""#
    );
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{body}}}").as_bytes()));
    std::fs::write(&path, format!("{body},\"hash\":\"{hash}\"}}\n")).unwrap();
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    let mut alice = user("new", "r-new", "from now");
    alice.user = "alice".into();
    store.append(vec![alice]).await.unwrap();
    assert_eq!(store.request("anonymous", "r-old").await.unwrap().len(), 1);
    drop(store);

    let file = path.to_str().unwrap();
    success(&replay(&[file, "--verify"]));
    let lines = std::fs::read_to_string(&path).unwrap();
    assert!(lines.lines().nth(1).unwrap().contains(r#""request_id":"r-new","user":"alice","timestamp":"#), "{lines}");
    let conversations = |user: &str| {
        let report: Value =
            serde_json::from_str(&success(&replay(&[file, "--user", user, "--format", "json"]))).unwrap();
        report["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(conversations("anonymous"), [Value::from("old")]);
    assert_eq!(conversations("alice"), [Value::from("new")]);
    assert!(conversations("bob").is_empty());
}
