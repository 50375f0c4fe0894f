//! The store contract (SPEC §6) checked on every backend with the same tests: each case is
//! one generic function, instantiated by [`conformance!`] for JSONL and for a real PostgreSQL.
//! Two handles on one store stand for two server processes sharing it. What a backend keeps
//! is read back through `mcp-platform export` and checked by `mcp-platform replay --verify`,
//! so the command line is held to the same contract.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use mcp_platform::store::chain::utc_day;
use mcp_platform::store::chain::{GENESIS_PREV, recompute_hash};
use mcp_platform::store::jsonl::JsonlStore;
use mcp_platform::store::memory::MemoryStore;
use mcp_platform::store::postgres::PostgresStore;
use mcp_platform::store::{ChatEvent, EventStore, EventType, NewEvent, RecentLimit, StoreError};
use support::postgres::Postgres;
use support::store::*;
use support::{mcp_platform, replay, text};
use tempfile::TempDir;

/// A store under test and the ways to look at it from outside.
trait Backend {
    /// A new handle on the store, as another process would open it.
    async fn open(&self) -> Arc<dyn EventStore>;
    /// What `export --store` and `replay` are given.
    fn location(&self) -> String;
    /// Changes `from` to `to` in the stored line at 1-based `position`, as someone with write
    /// access to the file or the database could.
    fn tamper(&self, position: u64, from: &str, to: &str);
}

struct Jsonl {
    dir: TempDir,
}

impl Jsonl {
    fn new() -> Self {
        Jsonl { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }
}

impl Backend for Jsonl {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(JsonlStore::open(self.path(), true).unwrap().0)
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn tamper(&self, position: u64, from: &str, to: &str) {
        let mut lines = file_lines(&self.path());
        let line = &mut lines[position as usize - 1];
        assert!(line.contains(from), "{line}");
        *line = line.replace(from, to);
        std::fs::write(self.path(), lines.join("\n") + "\n").unwrap();
    }
}

struct Pg {
    server: Postgres,
    url: String,
}

impl Pg {
    fn new(test: &str) -> Option<Self> {
        let bin = support::postgres::available(test)?;
        let mut server = Postgres::start(&bin);
        let url = server.database();
        Some(Pg { server, url })
    }
}

impl Backend for Pg {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(PostgresStore::open(&self.url, 4).await.unwrap())
    }

    fn location(&self) -> String {
        self.url.clone()
    }

    fn tamper(&self, position: u64, from: &str, to: &str) {
        let changed = self.server.psql(
            &self.url,
            &format!(
                "UPDATE events SET line = replace(line, '{from}', '{to}') \
                 WHERE position = {position} AND strpos(line, '{from}') > 0 RETURNING position"
            ),
        );
        assert_eq!(changed.lines().next(), Some(position.to_string().as_str()), "one row changed: {changed}");
    }
}

/// Instantiates each case for every backend: `jsonl::CASE` and `postgres::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod jsonl {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Jsonl::new()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = super::Pg::new(concat!("postgres::", stringify!($case))) else { return };
                    super::$case(backend).await;
                }
            )*
        }
    };
}

conformance!(
    lines_chain_and_seq_follow_the_spec,
    another_handle_reads_and_continues,
    a_claimed_request_id_refuses_the_whole_batch,
    concurrent_appenders_on_two_handles_never_fork,
    event_kinds_round_trip,
    an_edited_line_is_named_by_verify,
    recent_reads_whole_requests_newest_first_within_the_limit,
    request_ids_and_conversations_are_per_user,
    tokens_are_summed_by_user_and_day,
);

/// `mcp-platform export --store LOCATION [ARGS]`'s lines.
fn export(backend: &impl Backend, args: &[&str]) -> Vec<String> {
    let output = mcp_platform(&["export", "--store", &backend.location()]).args(args).output().unwrap();
    assert!(output.status.success(), "export failed: {}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_owned).collect()
}

fn assert_store_verifies(backend: &impl Backend) {
    let output = replay(&[&backend.location(), "--verify"]);
    assert!(output.status.success(), "replay --verify failed:\n{}{}", text(&output.stdout), text(&output.stderr));
}

/// The exported store, written as a file, verifies on its own: export keeps the bytes.
fn assert_export_verifies(backend: &impl Backend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exported.jsonl");
    std::fs::write(&file, export(backend, &[]).join("\n") + "\n").unwrap();
    support::assert_verifies(&file);
}

async fn lines_chain_and_seq_follow_the_spec(backend: impl Backend) {
    let store = backend.open().await;
    let mut written = Vec::new();
    for (conversation, request) in [("c-42", "r-1"), ("c-7", "r-2"), ("c-42", "r-3")] {
        let mut batch = vec![user(conversation, request, "What is 2+3?")];
        batch.extend(tool_turn(conversation, request, "gpt-4o"));
        written.extend(store.append(batch).await.unwrap());
    }
    let lines = export(&backend, &[]);
    assert_eq!(lines.len(), written.len());
    let mut prev = GENESIS_PREV.to_owned();
    for (line, event) in lines.iter().zip(&written) {
        assert_eq!(&serde_json::from_str::<ChatEvent>(line).unwrap(), event);
        assert_eq!(recompute_hash(line.as_bytes()).as_deref(), Some(event.hash.as_str()));
        assert!(line.ends_with(&format!(r#","prev":"{prev}","hash":"{}"}}"#, event.hash)), "{line}");
        prev.clone_from(&event.hash);
    }
    let seqs = |conversation: &str| -> Vec<u64> {
        written.iter().filter(|event| event.conversation_id == conversation).map(|event| event.seq).collect()
    };
    assert_eq!(seqs("c-42"), (1..=6).collect::<Vec<_>>());
    assert_eq!(seqs("c-7"), vec![1, 2, 3]);
    let one = export(&backend, &["--conversation", "c-7"]);
    assert_eq!(
        one,
        lines.iter().filter(|line| line.contains(r#""conversation_id":"c-7""#)).cloned().collect::<Vec<_>>()
    );
    assert_store_verifies(&backend);
    assert_export_verifies(&backend);
}

async fn another_handle_reads_and_continues(backend: impl Backend) {
    let first = backend.open().await;
    let written = append_turns(&*first, 3).await;
    let second = backend.open().await;
    let a_events: Vec<_> = written.iter().filter(|event| event.conversation_id == "a").cloned().collect();
    assert_eq!(second.conversation("a").await.unwrap(), a_events);
    assert_eq!(
        second.request("anonymous", "b-2").await.unwrap(),
        written.iter().filter(|event| event.request_id.as_deref() == Some("b-2")).cloned().collect::<Vec<_>>()
    );
    assert!(second.conversation("nobody").await.unwrap().is_empty());
    assert!(second.request("anonymous", "nothing").await.unwrap().is_empty());
    let listed = second.conversations("anonymous").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].conversation_id, "a");
    assert_eq!(listed[0].events, 12);
    assert_eq!(listed[0].first_timestamp, a_events[0].timestamp);
    assert_eq!(listed[0].last_timestamp, a_events[11].timestamp);

    let next = second.append(vec![user("a", "a-next", "more")]).await.unwrap();
    assert_eq!(next[0].seq, 13);
    assert_eq!(next[0].prev, written.last().unwrap().hash);
    // The first handle sees what the second appended.
    assert_eq!(first.conversation("a").await.unwrap().last(), next.last());
    let after = first.append(vec![user("b", "b-next", "more")]).await.unwrap();
    assert_eq!(after[0].prev, next[0].hash);
    assert_store_verifies(&backend);
}

async fn a_claimed_request_id_refuses_the_whole_batch(backend: impl Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let first = store.append(vec![user("a", "r-1", "hi"), assistant("a", "r-1", "hello", "m")]).await.unwrap();

    let refused = other.append(vec![user("b", "r-2", "x"), user("b", "r-1", "again")]).await.unwrap_err();
    match &refused {
        StoreError::DuplicateRequest { request_id, conversation_id, event_id } => {
            assert_eq!(request_id, "r-1");
            assert_eq!(conversation_id, "a");
            assert_eq!(event_id, &first[0].id);
        }
        other => panic!("expected DuplicateRequest, got {other}"),
    }
    assert_eq!(export(&backend, &[]).len(), 2, "nothing of the refused batch");
    assert!(other.request("anonymous", "r-2").await.unwrap().is_empty());
    assert!(matches!(
        store.append(vec![user("c", "r-3", "x"), user("c", "r-3", "y")]).await,
        Err(StoreError::DuplicateRequest { .. })
    ));
    // Later events of a request are not claims.
    other.append(vec![assistant("a", "r-1", "late answer", "m")]).await.unwrap();
    assert_eq!(store.request("anonymous", "r-1").await.unwrap().len(), 3);
    assert_store_verifies(&backend);
}

async fn concurrent_appenders_on_two_handles_never_fork(backend: impl Backend) {
    const APPENDERS: usize = 120;
    let handles = [backend.open().await, backend.open().await];
    let ids = append_concurrently(&handles, APPENDERS, 6).await;
    assert_eq!(ids.len(), APPENDERS);
    for conversation in 0..6 {
        let events = handles[conversation % 2].conversation(&format!("c{conversation}")).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
    assert_eq!(export(&backend, &[]).len(), APPENDERS);
    assert_store_verifies(&backend);
}

async fn event_kinds_round_trip(backend: impl Backend) {
    let store = backend.open().await;
    let mut meta = user("a", "r-1", "");
    meta.kind = EventType::Meta;
    meta.role = None;
    meta.extra.insert("hash".into(), serde_json::json!("a key named hash inside extra"));
    let mut update = meta.clone();
    update.kind = EventType::SystemUpdate;
    let stored = store.append(vec![meta, update]).await.unwrap();
    assert_eq!(store.conversation("a").await.unwrap(), stored);
    let lines = export(&backend, &[]);
    assert!(lines[0].contains(r#""type":"meta""#));
    assert!(lines[1].contains(r#""type":"system_update""#));
    assert_store_verifies(&backend);
}

async fn an_edited_line_is_named_by_verify(backend: impl Backend) {
    let store = backend.open().await;
    store.append(vec![user("a", "r-1", "hi"), user("b", "r-2", "ho"), user("c", "r-3", "hey")]).await.unwrap();
    assert_store_verifies(&backend);
    backend.tamper(2, r#""content":"ho""#, r#""content":"HO""#);
    let output = replay(&[&backend.location(), "--verify"]);
    let said = text(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("line 2:") && said.contains("the hash does not match"), "{said}");
    assert!(said.contains("1 lines before it are intact"), "{said}");
}

async fn recent_reads_whole_requests_newest_first_within_the_limit(backend: impl Backend) {
    let store = backend.open().await;
    let memory = MemoryStore::new();
    for (conversation, requests) in [("short", 10), ("long", 300)] {
        store.append(tool_requests(conversation, requests)).await.unwrap();
        memory.append(tool_requests(conversation, requests)).await.unwrap();
    }
    // A request holds 3 + 20 + 1 + 12 = 36 tokens in 4 messages: 100 tokens are passed in the
    // third request from the end, at its tool call, and its question comes along.
    let limit = RecentLimit { tokens: 100, messages: 5 };
    let shape =
        |events: &[std::sync::Arc<ChatEvent>]| events.iter().map(|event| (event.seq, event.kind)).collect::<Vec<_>>();
    for (conversation, requests) in [("short", 10u64), ("long", 300)] {
        let recent = store.recent(conversation, limit).await.unwrap();
        let seqs: Vec<u64> = recent.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, ((4 * requests - 11)..=4 * requests).collect::<Vec<_>>(), "{conversation}");
        assert_eq!(recent[0].kind, EventType::UserMessage, "whole requests only");
        assert_eq!(shape(&memory.recent(conversation, limit).await.unwrap()), shape(&recent), "the same rule");
    }
    // More than one page of rows: a limit that needs 150 requests of the long conversation.
    let wide = RecentLimit { tokens: 36 * 150, messages: 5 };
    let recent = store.recent("long", wide).await.unwrap();
    assert_eq!(shape(&recent), shape(&memory.recent("long", wide).await.unwrap()));
    assert_eq!(recent.len(), 4 * 151, "{} events", recent.len());

    let whole = store.recent("short", RecentLimit { tokens: 10_000, messages: 5 }).await.unwrap();
    let whole: Vec<ChatEvent> = whole.iter().map(|event| ChatEvent::clone(event)).collect();
    assert_eq!(whole, store.conversation("short").await.unwrap(), "a short conversation comes whole");
    assert_eq!(whole[0].seq, 1);
    assert!(store.recent("nobody", limit).await.unwrap().is_empty());

    // Another handle's append is in the next read.
    let other = backend.open().await;
    other.append(vec![user("long", "elsewhere", "written by the other handle")]).await.unwrap();
    let newest = store.recent("long", limit).await.unwrap().pop().unwrap();
    assert_eq!((newest.seq, newest.content.as_deref()), (1201, Some("written by the other handle")));
}

fn by(user_name: &str, conversation: &str, request: &str) -> NewEvent {
    NewEvent { user: user_name.into(), ..user(conversation, request, "hi") }
}

async fn request_ids_and_conversations_are_per_user(backend: impl Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let alice = store.append(vec![by("alice", "a", "r-1")]).await.unwrap();
    let bob = other.append(vec![by("bob", "b", "r-1")]).await.expect("bob's r-1 is his own request");
    assert_eq!(other.request("alice", "r-1").await.unwrap(), alice);
    assert_eq!(store.request("bob", "r-1").await.unwrap(), bob);
    assert!(store.request("carol", "r-1").await.unwrap().is_empty());
    assert!(matches!(
        other.append(vec![by("alice", "c", "r-1")]).await,
        Err(StoreError::DuplicateRequest { conversation_id, .. }) if conversation_id == "a"
    ));
    let refused = store.append(vec![by("bob", "a", "r-2")]).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::ConversationOwned { conversation_id } if conversation_id == "a"),
        "{refused}"
    );
    store.append(vec![by("alice", "a", "r-2")]).await.expect("alice continues her conversation");
    let listed = |summaries: Vec<mcp_platform::store::ConversationSummary>| {
        summaries.into_iter().map(|summary| (summary.conversation_id, summary.user, summary.events)).collect::<Vec<_>>()
    };
    assert_eq!(listed(other.conversations("alice").await.unwrap()), [("a".into(), "alice".into(), 2)]);
    assert_eq!(listed(store.conversations("bob").await.unwrap()), [("b".into(), "bob".into(), 1)]);
    assert!(store.conversations("carol").await.unwrap().is_empty());
    assert_store_verifies(&backend);
}

async fn tokens_are_summed_by_user_and_day(backend: impl Backend) {
    let store = backend.open().await;
    let answer = |user_name: &str, conversation: &str, request: &str| NewEvent {
        user: user_name.into(),
        ..assistant(conversation, request, "5", "m")
    };
    let stored = store
        .append(vec![by("alice", "a", "r-1"), answer("alice", "a", "r-1"), answer("alice", "a", "r-1")])
        .await
        .unwrap();
    store.append(vec![by("bob", "b", "r-1"), answer("bob", "b", "r-1")]).await.unwrap();
    let day = utc_day(&stored[0].timestamp).to_owned();
    let other = backend.open().await;
    assert_eq!(other.tokens_spent("alice", &day).await.unwrap(), 84, "two answers of 42 tokens");
    assert_eq!(other.tokens_spent("bob", &day).await.unwrap(), 42);
    assert_eq!(other.tokens_spent("carol", &day).await.unwrap(), 0);
    assert_eq!(other.tokens_spent("alice", "1999-01-01").await.unwrap(), 0);
}
