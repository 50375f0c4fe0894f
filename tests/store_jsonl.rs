//! What only the JSONL store does: the line format checked with `sha256sum`, reopening,
//! group commit's writes and fsyncs, and recovery from a torn tail. The contract both stores
//! keep is `store_conformance.rs`.

mod support;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use mcp_platform::store::jsonl::JsonlStore;
use mcp_platform::store::memory::MemoryStore;
use mcp_platform::store::{ChatEvent, EventStore, EventType, RecentLimit, StoreError};
use support::store::*;
use support::{assert_verifies, text};

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test]
async fn lines_follow_the_spec_and_check_with_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, report) = JsonlStore::open(&path, true).unwrap();
    assert_eq!(report.events, 0);
    let mut batch = vec![user("c-42", "r-1", "What is 2+3?")];
    batch.extend(tool_turn("c-42", "r-1", "gpt-4o"));
    let stored = store.append(batch).await.unwrap();

    let lines = file_lines(&path);
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert!(first.starts_with(r#"{"v":1,"id":""#), "{first}");
    let keys: Vec<String> =
        serde_json::from_str::<serde_json::Value>(first).unwrap().as_object().unwrap().keys().cloned().collect();
    // serde_json's map is sorted, so check the order in the text itself.
    let mut last_position = 0;
    for key in [
        "v",
        "id",
        "conversation_id",
        "seq",
        "request_id",
        "timestamp",
        "type",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "model",
        "usage",
        "token_count",
        "extra",
        "prev",
        "hash",
    ] {
        assert!(keys.contains(&key.to_string()), "missing {key}");
        let position = first.find(&format!("\"{key}\":")).unwrap();
        assert!(position >= last_position, "{key} out of order in {first}");
        last_position = position;
    }
    assert!(first.ends_with(&format!(r#","prev":"{ZEROS}","hash":"{}"}}"#, stored[0].hash)));

    for (number, event) in stored.iter().enumerate() {
        let id = uuid::Uuid::parse_str(&event.id).unwrap();
        assert_eq!(id.get_version_num(), 7, "{}", event.id);
        assert_eq!(event.timestamp.len(), "2026-11-21T00:27:40.123456Z".len());
        chrono::NaiveDateTime::parse_from_str(&event.timestamp, "%Y-%m-%dT%H:%M:%S%.6fZ").unwrap();
        assert_eq!(event.seq, number as u64 + 1);
        // The shell recipe an auditor would use, byte for byte as SPEC §6 describes it.
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"sed -n '{}p' "$1" | sed -e 's/,"hash":"[0-9a-f]*"}}$/}}/' | tr -d '\n' | sha256sum"#,
                number + 1
            ))
            .arg("sh")
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success());
        let digest = text(&output.stdout);
        assert_eq!(digest.split_whitespace().next(), Some(event.hash.as_str()));
        if number > 0 {
            assert_eq!(event.prev, stored[number - 1].hash);
        }
    }
    assert_eq!(parsed_lines(&path), stored);
    assert_verifies(&path);
}

/// Reads from another handle are in the conformance suite; here what reopening reports.
#[tokio::test]
async fn reopening_indexes_the_file_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    let written = append_turns(&store, 5).await;
    drop(store);

    let (reopened, report) = JsonlStore::open(&path, false).unwrap();
    assert_eq!(report.events, 40);
    assert_eq!(report.conversations, 2);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.bytes, std::fs::metadata(&path).unwrap().len());
    let a_events: Vec<_> = written.iter().filter(|event| event.conversation_id == "a").cloned().collect();
    assert_eq!(reopened.conversation("a").await.unwrap(), a_events);
    let next = reopened.append(vec![user("a", "a-next", "more")]).await.unwrap();
    assert_eq!(next[0].seq, 21);
    assert_eq!(next[0].prev, written.last().unwrap().hash);
    assert_verifies(&path);
}

/// Refusals across handles are in the conformance suite; here the claim is rebuilt from the
/// file on reopen.
#[tokio::test]
async fn a_claim_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, true).unwrap();
    store.append(vec![user("a", "r-1", "hi"), assistant("a", "r-1", "hello", "m")]).await.unwrap();
    store.append(vec![assistant("a", "r-1", "late answer", "m")]).await.unwrap();
    drop(store);
    let (reopened, _) = JsonlStore::open(&path, true).unwrap();
    assert!(matches!(reopened.append(vec![user("z", "r-1", "x")]).await, Err(StoreError::DuplicateRequest { .. })));
    assert_eq!(reopened.request("anonymous", "r-1").await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_writes_and_fsyncs() {
    const APPENDERS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, true).unwrap();
    let store = Arc::new(store);
    let ids = append_concurrently(&[Arc::clone(&store) as Arc<dyn EventStore>], APPENDERS, 10).await;
    assert_eq!(ids.len(), APPENDERS);
    let stats = store.stats();
    assert_eq!(stats.batches, APPENDERS as u64);
    assert_eq!(stats.events, APPENDERS as u64);
    assert_eq!(stats.writes, stats.fsyncs);
    assert!(stats.fsyncs * 4 <= APPENDERS as u64, "group commit should merge concurrent appends: {stats:?}");
    println!("{APPENDERS} concurrent appends: {stats:?}");
    assert_eq!(file_lines(&path).len(), APPENDERS);
}

fn append_raw(path: &std::path::Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_moved_aside_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, true).unwrap();
    let mut batch = vec![user("a", "r-1", "hi")];
    batch.extend(tool_turn("a", "r-1", "gpt-4o"));
    let written = store.append(batch).await.unwrap();
    drop(store);
    let intact = std::fs::read(&path).unwrap();
    // What a crash mid-write leaves: the start of a line, no newline.
    let torn = br#"{"v":1,"id":"019a0000-0000-7000-8000-000000000000","conversation_id":"a","se"#;
    append_raw(&path, torn);

    let (store, report) = JsonlStore::open(&path, true).unwrap();
    assert_eq!(report.events, 3);
    let tail = report.torn_tail.clone().expect("the torn tail is reported");
    assert_eq!(tail.line, 4);
    assert_eq!(tail.bytes, torn.len() as u64);
    assert!(tail.reason.contains("no trailing newline"), "{}", tail.reason);
    let name = tail.moved_to.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("events.jsonl.torn-"), "{name}");
    assert_eq!(std::fs::read(&tail.moved_to).unwrap(), torn);
    assert_eq!(std::fs::read(&path).unwrap(), intact);
    assert_eq!(store.stats().torn_tails, 1);

    let next = store.append(vec![assistant("a", "r-1", "5", "gpt-4o")]).await.unwrap();
    assert_eq!(next[0].seq, 4);
    assert_eq!(next[0].prev, written[2].hash);
    assert_verifies(&path);
}

#[tokio::test]
async fn an_unparseable_last_line_is_torn_but_one_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    store.append(vec![user("a", "r-1", "hi"), user("a", "r-2", "ho")]).await.unwrap();
    drop(store);
    let intact = std::fs::read(&path).unwrap();
    // A power loss can leave a complete-looking line of zeros.
    append_raw(&path, b"\0\0\0\0\0\0\0\0\n");
    let (store, report) = JsonlStore::open(&path, false).unwrap();
    let tail = report.torn_tail.expect("reported");
    assert!(tail.reason.contains("not a valid event line"), "{}", tail.reason);
    assert_eq!(std::fs::read(&path).unwrap(), intact);
    drop(store);

    let lines = file_lines(&path);
    std::fs::write(&path, format!("{}\nnot json\n{}\n", lines[0], lines[1])).unwrap();
    let error = JsonlStore::open(&path, false).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Corrupt { line: 2, .. }), "{message}");
    assert!(message.contains("line 2") && message.contains("--verify"), "{message}");
}

#[tokio::test]
async fn opening_in_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("events.jsonl");
    let error = JsonlStore::open(&path, true).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no-such-dir/events.jsonl"), "{message}");
    assert!(message.contains("No such file"), "{message}");
}

#[tokio::test]
async fn a_tampered_line_fails_its_read_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    store.append(vec![user("a", "r-1", "hi"), user("b", "r-2", "ho")]).await.unwrap();
    drop(store);
    let mut lines = file_lines(&path);
    lines[1] = lines[1].replace(r#""token_count":3"#, r#""token_count":"three""#);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let (store, report) = JsonlStore::open(&path, false).unwrap();
    assert_eq!(report.events, 2);
    assert_eq!(store.conversation("a").await.unwrap().len(), 1);
    let message = store.conversation("b").await.unwrap_err().to_string();
    assert!(message.contains("events.jsonl: line 2: not a valid event"), "{message}");
}

#[tokio::test]
async fn a_history_read_costs_what_it_returns_whatever_the_conversation_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (store, _) = JsonlStore::open(&path, false).unwrap();
    let memory = MemoryStore::new();
    for (conversation, requests) in [("short", 10), ("long", 1000)] {
        store.append(tool_requests(conversation, requests)).await.unwrap();
        memory.append(tool_requests(conversation, requests)).await.unwrap();
    }
    // A request holds 3 + 20 + 1 + 12 = 36 tokens in 4 messages: 100 tokens are passed in the
    // third request from the end, at its tool call, and its question comes along.
    let limit = RecentLimit { tokens: 100, messages: 5 };
    let mut parsed = Vec::new();
    for (conversation, requests) in [("short", 10u64), ("long", 1000)] {
        let before = store.stats().events_parsed;
        let recent = store.recent(conversation, limit).await.unwrap();
        parsed.push(store.stats().events_parsed - before);
        let seqs: Vec<u64> = recent.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, ((4 * requests - 11)..=4 * requests).collect::<Vec<_>>(), "{conversation}");
        assert_eq!(recent[0].kind, EventType::UserMessage, "whole requests only");
        let in_memory = memory.recent(conversation, limit).await.unwrap();
        let shape = |events: &[Arc<ChatEvent>]| events.iter().map(|event| (event.seq, event.kind)).collect::<Vec<_>>();
        assert_eq!(shape(&in_memory), shape(&recent), "every backend keeps the same rule");
    }
    assert_eq!(parsed, [13, 13], "the returned events and the one before them, for both lengths");

    let whole = store.recent("short", RecentLimit { tokens: 10_000, messages: 5 }).await.unwrap();
    let conversation = store.conversation("short").await.unwrap();
    assert_eq!(
        whole.iter().map(|event| &**event).collect::<Vec<_>>(),
        conversation.iter().collect::<Vec<_>>(),
        "a short conversation comes whole"
    );
    assert_eq!(whole[0].seq, 1);
    assert!(store.recent("nobody", limit).await.unwrap().is_empty());

    // The store's own appends extend what it read: the next read parses nothing.
    store.append(vec![user("long", "here", "written by this handle")]).await.unwrap();
    let before = store.stats().events_parsed;
    let recent = store.recent("long", limit).await.unwrap();
    assert_eq!(store.stats().events_parsed - before, 0);
    assert_eq!(recent.last().unwrap().content.as_deref(), Some("written by this handle"));

    // Another handle on the file (as another process would) appends: the next read has it,
    // parsing just that line.
    let (other, _) = JsonlStore::open(&path, false).unwrap();
    other.append(vec![user("long", "elsewhere", "written by the other handle")]).await.unwrap();
    let before = store.stats().events_parsed;
    let recent = store.recent("long", limit).await.unwrap();
    assert_eq!(store.stats().events_parsed - before, 1);
    let newest = recent.last().unwrap();
    assert_eq!((newest.seq, newest.content.as_deref()), (4002, Some("written by the other handle")));
    assert_eq!(recent, other.recent("long", limit).await.unwrap(), "a cold read returns the same");
}
