//! Event store throughput: `cargo bench --bench store`.
//!
//! - the disk's raw `write` + `fdatasync` rate, the ceiling a durable single appender meets;
//! - appends/s with fsync for 1 and for 64 concurrent appenders (group commit), and the same
//!   on PostgreSQL when `STORE_BENCH_POSTGRES_URL` names an empty database;
//! - indexing speed of `JsonlStore::open` on a large file (`STORE_BENCH_OPEN_MB`, default
//!   1024), with the file evicted from the page cache and again warm;
//! - reading one 50-event conversation from a 10,000- and a 1,000,000-event store.
//!
//! Files go to a temporary directory under the cargo target directory (the project's disk).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_platform::domain::Role;
use mcp_platform::store::chain::{Claim, GENESIS_PREV, Ledger, Staging};
use mcp_platform::store::jsonl::JsonlStore;
use mcp_platform::store::postgres::PostgresStore;
use mcp_platform::store::{EventStore, EventType, NewEvent};

const APPEND_SECONDS: u64 = 3;
const TARGET_CONVERSATION: &str = "audited-conversation";
const TARGET_EVENTS: u64 = 50;

fn event(conversation: &str, request: String, kind: EventType) -> NewEvent {
    NewEvent {
        conversation_id: conversation.to_string(),
        request_id: Some(request),
        user: "anonymous".to_string(),
        kind,
        role: Some(match kind {
            EventType::UserMessage => Role::User,
            EventType::ToolResult => Role::Tool,
            _ => Role::Assistant,
        }),
        content: Some(
            "The quick brown fox jumps over the lazy dog while the store keeps every word of \
             the conversation on disk, hash-chained, so an auditor can replay it later and \
             check that nothing was changed, dropped or reordered along the way."
                .to_string(),
        ),
        tool_calls: None,
        tool_call_id: None,
        model: Some("llama-3.3-70b-versatile".to_string()),
        usage: None,
        token_count: 48,
        extra: serde_json::Map::new(),
    }
}

fn raw_sync_rate(dir: &Path) -> f64 {
    let path = dir.join("raw-sync");
    let mut file = File::create(&path).unwrap();
    let record = [b'x'; 700];
    let start = Instant::now();
    let mut writes = 0u64;
    while start.elapsed() < Duration::from_secs(APPEND_SECONDS) {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        writes += 1;
    }
    let rate = writes as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

/// Appends/s of `appenders` tasks appending one event each, back to back, for
/// [`APPEND_SECONDS`].
fn drive_appends(runtime: &tokio::runtime::Runtime, store: Arc<dyn EventStore>, appenders: usize) -> (u64, f64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(APPEND_SECONDS);
    let appended: u64 = runtime.block_on(async {
        let tasks: Vec<_> = (0..appenders)
            .map(|appender| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        let request = format!("a{appender}-{done}-{}", uuid::Uuid::now_v7());
                        let conversation = format!("c{appender}");
                        store.append(vec![event(&conversation, request, EventType::UserMessage)]).await.unwrap();
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    });
    (appended, appended as f64 / start.elapsed().as_secs_f64())
}

fn append_rate(runtime: &tokio::runtime::Runtime, dir: &Path, appenders: usize) -> f64 {
    let path = dir.join(format!("appends-{appenders}.jsonl"));
    let (store, _) = JsonlStore::open(&path, true).unwrap();
    let store = Arc::new(store);
    let (appended, rate) = drive_appends(runtime, Arc::clone(&store) as Arc<dyn EventStore>, appenders);
    let stats = store.stats();
    println!(
        "  {appenders:>2} appender(s): {rate:>9.0} appends/s  ({appended} appends, {} fsyncs, {:.1} appends per fsync)",
        stats.fsyncs,
        appended as f64 / stats.fsyncs.max(1) as f64
    );
    drop(store);
    std::fs::remove_file(path).unwrap();
    rate
}

/// The same appends on PostgreSQL (`STORE_BENCH_POSTGRES_URL`, an empty database).
fn postgres_append_rate(runtime: &tokio::runtime::Runtime, url: &str, appenders: usize) -> f64 {
    let store = runtime.block_on(PostgresStore::open(url, 16)).unwrap();
    let (appended, rate) = drive_appends(runtime, Arc::new(store), appenders);
    println!("  {appenders:>2} appender(s): {rate:>9.0} appends/s  ({appended} appends)");
    rate
}

/// Remembers the `seq` of each conversation while the generator stages lines directly.
#[derive(Default)]
struct Seqs(HashMap<String, u64>);

impl Ledger for Seqs {
    fn last_seq(&self, conversation_id: &str) -> u64 {
        self.0.get(conversation_id).copied().unwrap_or(0)
    }
    fn claim(&self, _: &str, _: &str) -> Option<Claim> {
        None
    }
    fn owner(&self, _: &str) -> Option<String> {
        None
    }
}

/// Writes a valid, hash-chained events file: conversations of 4-event turns (a request each:
/// user message, assistant with a tool call, tool result, answer), plus
/// `TARGET_CONVERSATION` with 50 events spread evenly over the file. Stops at `events`
/// events or `bytes` bytes, whichever comes first.
fn generate(path: &Path, events: u64, bytes: u64) -> u64 {
    let mut out = BufWriter::with_capacity(8 << 20, File::create(path).unwrap());
    let mut seqs = Seqs::default();
    let mut prev = GENESIS_PREV.to_string();
    let mut written_events = 0u64;
    let mut written_bytes = 0u64;
    let target_every = (events / TARGET_EVENTS).max(1);
    let conversations = (events / 100).clamp(10, 10_000);
    while written_events < events && written_bytes < bytes {
        let mut staging = Staging::new(prev);
        let mut batch_events = Vec::new();
        for _ in 0..1_000 {
            let n = written_events + batch_events.len() as u64;
            let turn = n / 4;
            let kind = [
                EventType::UserMessage,
                EventType::AssistantMessage,
                EventType::ToolResult,
                EventType::AssistantMessage,
            ][(n % 4) as usize];
            let conversation = if n % target_every == target_every - 1 {
                TARGET_CONVERSATION.to_string()
            } else {
                format!("conversation-{}", turn % conversations)
            };
            batch_events.push(event(&conversation, format!("request-{turn}"), kind));
        }
        for stored in staging.stage(&seqs, batch_events).unwrap() {
            seqs.0.insert(stored.conversation_id, stored.seq);
        }
        out.write_all(&staging.lines).unwrap();
        written_bytes += staging.lines.len() as u64;
        written_events += 1_000;
        prev = staging.prev;
    }
    out.into_inner().unwrap().sync_all().unwrap();
    written_events
}

fn evict_from_page_cache(path: &Path) {
    let file = File::open(path).unwrap();
    // Only this file's pages: the machine's other work keeps its cache.
    let status = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(status, 0);
}

fn open_rate(dir: &Path, megabytes: u64) {
    let path = dir.join(format!("open-{megabytes}mb.jsonl"));
    let started = Instant::now();
    let events = generate(&path, u64::MAX, megabytes << 20);
    let size = std::fs::metadata(&path).unwrap().len();
    println!("  generated {:.0} MB, {events} events in {:.1} s", size as f64 / 1e6, started.elapsed().as_secs_f64());
    for cache in ["evicted from page cache", "warm page cache"] {
        if cache.starts_with("evicted") {
            evict_from_page_cache(&path);
        }
        let start = Instant::now();
        let (store, report) = JsonlStore::open(&path, true).unwrap();
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(report.events, events);
        println!(
            "  open {:.0} MB ({cache}): {:.2} s = {:.0} MB/s, {:.0} events/s",
            size as f64 / 1e6,
            elapsed,
            size as f64 / 1e6 / elapsed,
            events as f64 / elapsed
        );
        drop(store);
    }
    std::fs::remove_file(path).unwrap();
}

/// Reads the 50-event conversation from stores of each size, alternating between them in
/// rounds so machine noise hits all alike; returns the best round's time per read.
fn conversation_reads(runtime: &tokio::runtime::Runtime, dir: &Path, sizes: &[u64]) -> Vec<Duration> {
    const ROUNDS: usize = 10;
    const READS: u32 = 200;
    let stores: Vec<(JsonlStore, u64)> = sizes
        .iter()
        .map(|&events| {
            let path = dir.join(format!("read-{events}.jsonl"));
            generate(&path, events, u64::MAX);
            let (store, report) = JsonlStore::open(&path, true).unwrap();
            assert_eq!(report.events, events);
            (store, std::fs::metadata(&path).unwrap().len())
        })
        .collect();
    let mut best = vec![Duration::MAX; stores.len()];
    runtime.block_on(async {
        for _ in 0..ROUNDS {
            for ((store, _), best) in stores.iter().zip(&mut best) {
                let start = Instant::now();
                for _ in 0..READS {
                    let events = store.conversation(TARGET_CONVERSATION).await.unwrap();
                    assert_eq!(events.len() as u64, TARGET_EVENTS);
                }
                *best = (*best).min(start.elapsed() / READS);
            }
        }
    });
    for ((store, size), (events, best)) in stores.iter().zip(sizes.iter().zip(&best)) {
        println!(
            "  50-event conversation from a {events:>9}-event store ({:>4.0} MB): {:>7.1} µs per read",
            *size as f64 / 1e6,
            best.as_secs_f64() * 1e6
        );
        std::fs::remove_file(store.path()).unwrap();
    }
    best
}

fn main() {
    let dir = tempfile::Builder::new().prefix("store-bench").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("store benchmark in {}", dir.path().display());

    println!("durable appends (fsync on), {APPEND_SECONDS} s each:");
    let raw_before = raw_sync_rate(dir.path());
    println!("  raw write + fdatasync of 700 bytes: {raw_before:>9.0} per s (one writer's ceiling)");
    let single = append_rate(&runtime, dir.path(), 1);
    let many = append_rate(&runtime, dir.path(), 64);
    let raw_after = raw_sync_rate(dir.path());
    println!("  raw write + fdatasync, measured again: {raw_after:>6.0} per s");
    let raw = (raw_before + raw_after) / 2.0;
    println!(
        "  64 appenders / 1 appender = {:.1}x (target >= 20x); single appender = {:.0}% of raw fdatasync",
        many / single,
        100.0 * single / raw
    );
    if let Ok(url) = std::env::var("STORE_BENCH_POSTGRES_URL") {
        println!("durable appends on PostgreSQL (synchronous commit), {APPEND_SECONDS} s each:");
        postgres_append_rate(&runtime, &url, 1);
        let postgres = postgres_append_rate(&runtime, &url, 64);
        println!("  64 appenders: PostgreSQL / JSONL = {:.2}", postgres / many);
    }

    println!("indexing at open:");
    let megabytes: u64 = std::env::var("STORE_BENCH_OPEN_MB").ok().and_then(|value| value.parse().ok()).unwrap_or(1024);
    open_rate(dir.path(), 100);
    if megabytes != 100 {
        open_rate(dir.path(), megabytes);
    }

    println!("conversation reads:");
    let times = conversation_reads(&runtime, dir.path(), &[10_000, 1_000_000]);
    println!("  1,000,000-event / 10,000-event read time = {:.2}x", times[1].as_secs_f64() / times[0].as_secs_f64());
}
