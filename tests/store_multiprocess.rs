//! Several OS processes on one events file. The other processes are this test binary run
//! again with `--exact <child test> --ignored`; the child tests do nothing unless
//! `STORE_CHILD_FILE` tells them which file to use.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_platform::store::jsonl::JsonlStore;
use mcp_platform::store::{EventStore, StoreError};
use serde_json::json;
use support::store::*;
use support::{Options, TestApp, assert_verifies, text_of};

const CHILD_FILE: &str = "STORE_CHILD_FILE";
const CHILD_TAG: &str = "STORE_CHILD_TAG";
const CONVERSATIONS: usize = 50;
const EVENTS_PER_PROCESS: usize = 2_000;

fn spawn_child(test: &str, file: &Path, tag: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--ignored", "--test-threads=1"])
        .env(CHILD_FILE, file)
        .env(CHILD_TAG, tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's protocol lines (`ready`, `acked <id>`, …); the test harness's own output is
/// skipped.
struct ChildLines(BufReader<ChildStdout>);

impl ChildLines {
    fn new(child: &mut Child) -> Self {
        ChildLines(BufReader::new(child.stdout.take().unwrap()))
    }

    fn next(&mut self) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.0.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            // The harness may print `test <name> ... ` on the same line first.
            if let Some(at) = line.find("child: ") {
                return Some(line[at + "child: ".len()..].trim_end().to_string());
            }
        }
    }

    fn expect(&mut self, wanted: &str) {
        assert_eq!(self.next().as_deref(), Some(wanted));
    }
}

fn child_setup() -> Option<(PathBuf, String)> {
    let file = std::env::var_os(CHILD_FILE)?;
    Some((PathBuf::from(file), std::env::var(CHILD_TAG).unwrap()))
}

fn say(message: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "child: {message}").unwrap();
    stdout.flush().unwrap();
}

fn wait_for_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "go");
}

/// Appends `EVENTS_PER_PROCESS` events (user + assistant pairs) across the shared
/// conversations from 10 concurrent tasks, once the parent says `go`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by two_processes_append_to_one_file"]
async fn child_concurrent_appender() {
    let Some((file, tag)) = child_setup() else {
        return;
    };
    let (store, _) = JsonlStore::open(&file, true).unwrap();
    let store = Arc::new(store);
    say("ready");
    tokio::task::spawn_blocking(wait_for_go).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|task| {
            let store = Arc::clone(&store);
            let tag = tag.clone();
            tokio::spawn(async move {
                for turn in 0..EVENTS_PER_PROCESS / 2 / 10 {
                    let n = task * 1_000 + turn;
                    let conversation = format!("c{}", n % CONVERSATIONS);
                    let request = format!("{tag}-{n}");
                    store
                        .append(vec![
                            user(&conversation, &request, "hi"),
                            assistant(&conversation, &request, "hello", "gpt-4o"),
                        ])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    say(&format!("done {:?}", store.stats()));
}

#[test]
fn two_processes_append_to_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut children: Vec<Child> =
        ["p1", "p2"].iter().map(|tag| spawn_child("child_concurrent_appender", &path, tag)).collect();
    let mut outputs: Vec<ChildLines> = children.iter_mut().map(ChildLines::new).collect();
    for output in &mut outputs {
        output.expect("ready");
    }
    for child in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    for output in &mut outputs {
        let done = output.next().unwrap();
        assert!(done.starts_with("done"), "{done}");
        println!("{done}");
    }
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }

    let lines = file_lines(&path);
    assert_eq!(lines.len(), 2 * EVENTS_PER_PROCESS);
    let events = parsed_lines(&path);
    let ids: HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "duplicate ids");
    let mut seqs: HashMap<&str, Vec<u64>> = HashMap::new();
    for event in &events {
        seqs.entry(&event.conversation_id).or_default().push(event.seq);
    }
    assert_eq!(seqs.len(), CONVERSATIONS);
    for (conversation, seqs) in &seqs {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "seq of {conversation}");
    }
    // Both processes wrote into the same conversations.
    for conversation in seqs.keys() {
        let writers: HashSet<&str> = events
            .iter()
            .filter(|event| event.conversation_id == *conversation)
            .filter_map(|event| event.request_id.as_deref()?.split('-').next())
            .collect();
        assert_eq!(writers.len(), 2, "{conversation}");
    }
    let switches = events
        .windows(2)
        .filter(|pair| pair[0].request_id.as_deref().map(|r| &r[..2]) != pair[1].request_id.as_deref().map(|r| &r[..2]))
        .count();
    println!("the writing process changed {switches} times along the file");
    assert_verifies(&path);
}

/// Appends from 8 tasks until killed, printing each acknowledged event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_writer_killed_mid_append_leaves_a_file_that_opens"]
async fn child_appends_until_killed() {
    let Some((file, tag)) = child_setup() else {
        return;
    };
    let (store, _) = JsonlStore::open(&file, true).unwrap();
    let store = Arc::new(store);
    say("ready");
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = Arc::clone(&store);
            let tag = tag.clone();
            tokio::spawn(async move {
                for turn in 0.. {
                    let request = format!("{tag}-{task}-{turn}");
                    let conversation = format!("c{}", turn % 5);
                    let mut batch = vec![user(&conversation, &request, &"long text ".repeat(50))];
                    batch.extend(tool_turn(&conversation, &request, "gpt-4o"));
                    for event in store.append(batch).await.unwrap() {
                        say(&format!("acked {}", event.id));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_writer_killed_mid_append_leaves_a_file_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut child = spawn_child("child_appends_until_killed", &path, "k");
    let mut output = ChildLines::new(&mut child);
    output.expect("ready");
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 600 {
        assert!(Instant::now() < deadline, "the child acked only {}", acked.len());
        let line = output.next().expect("the child stopped early");
        acked.push(line.strip_prefix("acked ").unwrap().to_string());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks printed before the kill are still in the pipe.
    while let Some(line) = output.next() {
        if let Some(id) = line.strip_prefix("acked ") {
            acked.push(id.to_string());
        }
    }

    let (store, report) = JsonlStore::open(&path, true).unwrap();
    println!("after SIGKILL: {report:?}");
    if let Some(torn) = &report.torn_tail {
        assert!(torn.moved_to.exists());
        assert!(!std::fs::read(&torn.moved_to).unwrap().is_empty());
    }
    let events = parsed_lines(&path);
    assert_eq!(events.len() as u64, report.events);
    let stored: HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
    for id in &acked {
        assert!(stored.contains(id.as_str()), "acknowledged event {id} is missing");
    }
    assert_verifies(&path);

    let next = store.append(vec![user("c0", "after-kill", "still here")]).await.unwrap();
    assert_eq!(next[0].prev, events.last().unwrap().hash);
    let c0_seqs: Vec<u64> =
        events.iter().filter(|event| event.conversation_id == "c0").map(|event| event.seq).collect();
    assert_eq!(next[0].seq, c0_seqs.len() as u64 + 1);
    assert_verifies(&path);
}

/// Claims `shared-request` in conversation `c-child` and reports the event id.
#[tokio::test]
#[ignore = "run by a_request_id_claimed_by_another_process_is_refused"]
async fn child_claims_a_request() {
    let Some((file, _)) = child_setup() else {
        return;
    };
    let (store, _) = JsonlStore::open(&file, true).unwrap();
    let stored = store.append(vec![user("c-child", "shared-request", "first")]).await.unwrap();
    say(&format!("claimed {}", stored[0].id));
}

#[tokio::test]
async fn a_request_id_claimed_by_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // Opened before the other process writes, so only the catch-up under the lock can know.
    let (store, _) = JsonlStore::open(&path, true).unwrap();
    store.append(vec![user("c-parent", "own-request", "hi")]).await.unwrap();

    let mut child = spawn_child("child_claims_a_request", &path, "c");
    let mut output = ChildLines::new(&mut child);
    let claimed = output.next().unwrap();
    let child_event = claimed.strip_prefix("claimed ").unwrap().to_string();
    assert!(child.wait().unwrap().success());

    let refused = store.append(vec![user("c-parent", "shared-request", "second")]).await.unwrap_err();
    match refused {
        StoreError::DuplicateRequest { request_id, conversation_id, event_id } => {
            assert_eq!(request_id, "shared-request");
            assert_eq!(conversation_id, "c-child");
            assert_eq!(event_id, child_event);
        }
        other => panic!("expected DuplicateRequest, got {other}"),
    }
    // Reads see the other process's events too.
    let theirs = store.request("anonymous", "shared-request").await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, child_event);
    assert_eq!(store.conversation("c-child").await.unwrap(), theirs);
    assert_eq!(store.conversations("anonymous").await.unwrap().len(), 2);
    // And the next own append chains after the other process's line.
    let next = store.append(vec![user("c-parent", "later", "x")]).await.unwrap();
    assert_eq!(next[0].prev, theirs[0].hash);
    assert_eq!(next[0].seq, 2);
    assert_verifies(&path);
}

#[tokio::test]
#[ignore = "run by the_next_turn_sees_what_another_process_added_to_its_conversation"]
async fn child_adds_an_exchange() {
    let Some((file, conversation)) = child_setup() else {
        return;
    };
    let (store, _) = JsonlStore::open(&file, true).unwrap();
    store
        .append(vec![
            user(&conversation, "from-the-child", "a zebra crossed"),
            assistant(&conversation, "from-the-child", "noted the zebra", "m"),
        ])
        .await
        .unwrap();
    say("added");
}

#[tokio::test]
async fn the_next_turn_sees_what_another_process_added_to_its_conversation() {
    let app = TestApp::start(Options { servers: Vec::new(), ..Options::default() }).await;
    let mut client = app.client().await;
    let first = client.chat("r-1", json!({"text": "hello", "conversation_id": "c-shared"})).await;
    assert_eq!(first.last().unwrap()["status"], "complete", "{first:#?}");

    let mut child = spawn_child("child_adds_an_exchange", &app.store_path, "c-shared");
    // Held until the child exits: its harness still writes after the protocol line.
    let mut output = ChildLines::new(&mut child);
    output.expect("added");
    assert!(child.wait().unwrap().success());

    let second = client.chat("r-2", json!({"text": "and now?", "conversation_id": "c-shared"})).await;
    assert_eq!(second.last().unwrap()["status"], "complete", "{second:#?}");
    let requests = app.model_requests();
    let contents: Vec<&str> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["hello", text_of(&first).as_str(), "a zebra crossed", "noted the zebra", "and now?"]);
    app.shutdown().await;
}
