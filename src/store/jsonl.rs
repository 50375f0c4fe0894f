//! The production [`EventStore`]: `events.jsonl`, shared by any number of processes.
//!
//! # Locking
//! Every append holds an exclusive `flock` (fs2) on the events file itself; no sidecar lock
//! file, because a sidecar can be deleted or left behind separately from the log it guards,
//! and `flock` on the log needs no cleanup after a crash (the kernel drops it with the
//! process). Under the lock the writer first indexes what other processes appended since
//! its last known offset, then assigns `seq` and `prev`, writes and (with `fsync`) syncs, and
//! only then releases the lock and acknowledges. Reads that find the file longer than their
//! index take a shared lock to catch up, so they never see half of another writer's batch.
//!
//! # Group commit
//! One writer thread per store owns the write handle. Batches that arrive while it is busy
//! are queued and go out together: one `write`, one `fdatasync`, one lock round-trip. Each
//! batch is still accepted or refused on its own. No blocking I/O runs on the async runtime:
//! appends wait on a oneshot channel, reads run on `spawn_blocking`.
//!
//! # Crash recovery
//! A batch is written with a single `write` call, so a killed process leaves either all of
//! its lines or none; a power loss may leave a torn last line. A last line without `\n`, or
//! one that does not parse, is moved to `<file>.torn-<timestamp>` and the file is truncated to
//! the last complete line, at open or by whichever writer meets it first. The chain continues
//! from the last good line.
//!
//! # Why one file
//! Locking, the index, the writer thread and recovery share the file's invariants (the index
//! ends where the last complete line ends; only the lock holder moves that end), so they are
//! kept together; the parts that stand alone are modules of their own (`chain`, `lines`,
//! `recent`, `tails`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::chain::{Claim, GENESIS_PREV, Ledger, Staging, Work, recompute_hash, utc_day};
use super::lines::{ScanError, scan_lines};
use super::recent::RecentCut;
use super::record::{END_KEY, OWNER_KEY, interrupted};
use super::tails::Tails;
use super::{ANONYMOUS, ChatEvent, ConversationSummary, EventStore, EventType, NewEvent, RecentLimit, StoreError};

/// How often a process looks for requests whose owner process died: a few seconds of a
/// resent request's 409 at most, and a few reads of `/proc` when there is anything to look at.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Upper bound of batches merged into one write, so one group cannot hold the lock for long.
const MAX_GROUP_BATCHES: usize = 1024;

/// What [`JsonlStore::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Events indexed.
    pub events: u64,
    pub conversations: usize,
    /// Bytes of complete lines.
    pub bytes: u64,
    /// Set when a torn last line was moved aside.
    pub torn_tail: Option<TornTail>,
    /// The first line whose hash chain does not hold (an edited, removed, inserted or moved
    /// line). The store serves anyway and new events chain onto the last line, so
    /// `replay --verify` keeps finding the break.
    pub chain_break: Option<ChainBreak>,
}

/// Where the hash chain of the events file first fails (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number.
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// A torn last line that was moved out of the events file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where its bytes are now.
    pub moved_to: PathBuf,
    /// Its line number in the events file.
    pub line: u64,
    pub bytes: u64,
    /// Why it was considered torn.
    pub reason: String,
}

/// Counters of the store's work since open, for benchmarks and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches accepted.
    pub batches: u64,
    pub events: u64,
    /// `write` calls (one per group).
    pub writes: u64,
    pub fsyncs: u64,
    /// Torn tails moved aside by this store (at open or later).
    pub torn_tails: u64,
    /// Events read back from the file and parsed whole (reads, not indexing): what a history
    /// read costs.
    pub events_parsed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    writes: AtomicU64,
    fsyncs: AtomicU64,
    torn_tails: AtomicU64,
    events_parsed: AtomicU64,
}

/// The JSONL event store. Dropping it finishes the queued appends and stops the writer.
#[derive(Debug)]
pub struct JsonlStore {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// Read handle for `pread` and the shared lock of catch-up reads. It is a separate open
    /// file from the writer's, because `flock` locks belong to the open file.
    reader: File,
    /// `flock` is per open file, not per thread: two threads sharing `reader` would release
    /// each other's lock, so reader catch-ups take turns.
    catch_up_turn: Mutex<()>,
    index: Mutex<Index>,
    /// Where the file ends once this process's write in progress is in, 0 when none is: a
    /// file of that length holds nothing another process appended, though the index does not
    /// yet hold the write's own events (unacknowledged, so no read owes them to anyone).
    writing_to: AtomicU64,
    tails: Tails,
    counters: Counters,
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Vec<ChatEvent>, StoreError>>,
}

/// Where a line sits in the file (without its `\n`).
#[derive(Debug, Clone, Copy)]
struct LineRef {
    offset: u64,
    len: u32,
    /// 1-based line number, for error messages.
    number: u32,
}

#[derive(Debug, Default)]
struct ConversationIndex {
    lines: Vec<LineRef>,
    /// The user of its first line.
    owner: String,
    last_seq: u64,
    first_timestamp: String,
    last_timestamp: String,
}

#[derive(Debug, Default)]
struct RequestIndex {
    lines: Vec<LineRef>,
    claim: Option<Claim>,
}

#[derive(Debug)]
struct Index {
    /// End of the last complete, indexed line.
    end: u64,
    lines: u64,
    last_hash: String,
    conversations: HashMap<String, ConversationIndex>,
    /// By user, then `request_id`: request ids are unique per user.
    requests: HashMap<String, HashMap<String, RequestIndex>>,
    /// Model tokens by user, then UTC day (`YYYY-MM-DD`), for the daily budget.
    spent: HashMap<String, HashMap<String, u64>>,
    /// Claims whose end is not stored yet and whose line names its owner process, by user,
    /// then `request_id`: the requests that may be orphaned.
    unfinished: HashMap<String, HashMap<String, Unfinished>>,
    chain_break: Option<ChainBreak>,
}

#[derive(Debug)]
struct Unfinished {
    conversation_id: String,
    owner: String,
}

/// The fields of a line the index needs; the rest is skipped without being built.
#[derive(Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    conversation_id: Cow<'a, str>,
    seq: u64,
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(default)]
    usage: Option<UsageHead>,
    #[serde(borrow, default)]
    extra: ExtraHead<'a>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

/// The keys of `extra` that tell whether a request is finished and who owns its claim.
#[derive(Deserialize, Default)]
struct ExtraHead<'a> {
    /// [`END_KEY`]: present on the event that ends a request.
    #[serde(default)]
    status: Option<serde::de::IgnoredAny>,
    /// [`OWNER_KEY`].
    #[serde(borrow, default)]
    owner: Option<Cow<'a, str>>,
}

/// The part of a line's `usage` the daily token budget counts.
#[derive(Deserialize)]
struct UsageHead {
    total_tokens: u64,
}

impl<'a> LineHead<'a> {
    fn of(event: &'a ChatEvent) -> Self {
        LineHead {
            id: Cow::Borrowed(&event.id),
            conversation_id: Cow::Borrowed(&event.conversation_id),
            seq: event.seq,
            request_id: event.request_id.as_deref().map(Cow::Borrowed),
            user: event.user.as_deref().map(Cow::Borrowed),
            timestamp: Cow::Borrowed(&event.timestamp),
            kind: event.kind,
            usage: event.usage.map(|usage| UsageHead { total_tokens: usage.total_tokens }),
            extra: ExtraHead {
                status: event.extra.contains_key(END_KEY).then_some(serde::de::IgnoredAny),
                owner: event.extra.get(OWNER_KEY).and_then(serde_json::Value::as_str).map(Cow::Borrowed),
            },
            prev: Cow::Borrowed(&event.prev),
            hash: Cow::Borrowed(&event.hash),
        }
    }
}

impl Index {
    fn new() -> Self {
        Index {
            end: 0,
            lines: 0,
            last_hash: GENESIS_PREV.to_string(),
            conversations: HashMap::new(),
            requests: HashMap::new(),
            spent: HashMap::new(),
            unfinished: HashMap::new(),
            chain_break: None,
        }
    }

    /// Checks that `line` is chained to the last indexed line and that its bytes hash to its
    /// `hash`, remembering the first line where that fails. Call before [`Index::add`].
    fn check_chain(&mut self, head: &LineHead<'_>, line: &[u8]) {
        if self.chain_break.is_some() {
            return;
        }
        let number = self.lines + 1;
        let reason = if recompute_hash(line).as_deref() != Some(head.hash.as_ref()) {
            "its bytes do not hash to its \"hash\" (the line was edited)".to_owned()
        } else if head.prev != self.last_hash {
            format!("its \"prev\" is not the hash of line {} (a line was removed, inserted or moved)", number - 1)
        } else {
            return;
        };
        self.chain_break = Some(ChainBreak { line: number, reason });
    }

    fn add(&mut self, head: &LineHead<'_>, at: LineRef) {
        let user = head.user.as_deref().unwrap_or(ANONYMOUS);
        let conversation = match self.conversations.get_mut(head.conversation_id.as_ref()) {
            Some(conversation) => conversation,
            None => self.conversations.entry(head.conversation_id.to_string()).or_insert_with(|| ConversationIndex {
                owner: user.to_owned(),
                first_timestamp: head.timestamp.to_string(),
                ..ConversationIndex::default()
            }),
        };
        conversation.lines.push(at);
        conversation.last_seq = conversation.last_seq.max(head.seq);
        conversation.last_timestamp.clear();
        conversation.last_timestamp.push_str(&head.timestamp);

        if let Some(usage) = &head.usage {
            let day = utc_day(&head.timestamp);
            let days = self.spent.entry(user.to_owned()).or_default();
            match days.get_mut(day) {
                Some(spent) => *spent += usage.total_tokens,
                None => {
                    days.insert(day.to_owned(), usage.total_tokens);
                }
            }
        }
        if let Some(request_id) = &head.request_id {
            let requests = match self.requests.get_mut(user) {
                Some(requests) => requests,
                None => self.requests.entry(user.to_owned()).or_default(),
            };
            let request = match requests.get_mut(request_id.as_ref()) {
                Some(request) => request,
                None => requests.entry(request_id.to_string()).or_default(),
            };
            request.lines.push(at);
            if head.kind == EventType::UserMessage && request.claim.is_none() {
                request.claim =
                    Some(Claim { conversation_id: head.conversation_id.to_string(), event_id: head.id.to_string() });
                if let Some(owner) = &head.extra.owner {
                    let unfinished =
                        Unfinished { conversation_id: head.conversation_id.to_string(), owner: owner.to_string() };
                    self.unfinished.entry(user.to_owned()).or_default().insert(request_id.to_string(), unfinished);
                }
            } else if head.extra.status.is_some()
                && let Some(requests) = self.unfinished.get_mut(user)
            {
                requests.remove(request_id.as_ref());
                if requests.is_empty() {
                    self.unfinished.remove(user);
                }
            }
        }
        self.lines += 1;
        self.end = at.offset + u64::from(at.len) + 1;
        self.last_hash.clear();
        self.last_hash.push_str(&head.hash);
    }
}

impl Index {
    /// The ends the unfinished requests of processes that are gone need.
    fn orphan_ends(&self) -> Vec<NewEvent> {
        let mut ends = Vec::new();
        for (user, requests) in &self.unfinished {
            for (request_id, unfinished) in requests {
                if super::process::is_gone(&unfinished.owner) {
                    ends.push(interrupted(unfinished.conversation_id.clone(), request_id.clone(), user.clone()));
                }
            }
        }
        ends
    }
}

impl Ledger for Index {
    fn last_seq(&self, conversation_id: &str) -> u64 {
        self.conversations.get(conversation_id).map_or(0, |conversation| conversation.last_seq)
    }

    fn claim(&self, user: &str, request_id: &str) -> Option<Claim> {
        self.requests.get(user)?.get(request_id)?.claim.clone()
    }

    fn owner(&self, conversation_id: &str) -> Option<String> {
        self.conversations.get(conversation_id).map(|conversation| conversation.owner.clone())
    }
}

/// What follows the last indexed line after a catch-up.
#[derive(Debug)]
enum Tail {
    Clean,
    /// Bytes after the last `\n`.
    Unterminated,
    /// The last complete line does not parse.
    Unparseable(String),
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

/// Indexes every complete line from `index.end` to the end of the file.
///
/// An unparseable line followed by more data is corruption, not a crash artefact, and is an
/// error; an unparseable or unterminated last line is reported as the [`Tail`].
fn catch_up(path: &Path, file: &File, index: &mut Index) -> Result<Tail, StoreError> {
    let corrupt = |line: u64, reason: &str| StoreError::Corrupt {
        path: path.display().to_string(),
        line,
        message: format!(
            "{reason}; more data follows it, so it is not the torn tail of a crash. \
             Run `mcp-platform replay {} --verify` to inspect the file",
            path.display()
        ),
    };
    let mut unparseable: Option<(u64, String)> = None;
    let scanned = scan_lines(file, index.end, |offset, line| {
        if let Some((line_number, reason)) = &unparseable {
            return Err(corrupt(*line_number, reason));
        }
        match serde_json::from_slice::<LineHead>(line) {
            Ok(head) => {
                index.check_chain(&head, line);
                index.add(&head, LineRef { offset, len: line.len() as u32, number: (index.lines + 1) as u32 });
            }
            Err(error) => unparseable = Some((index.lines + 1, format!("not a valid event line: {error}"))),
        }
        Ok(())
    })
    .map_err(|error| match error {
        ScanError::Io(error) => io_error(path, error),
        ScanError::Visit(error) => error,
    })?;
    Ok(match unparseable {
        Some((line_number, reason)) if scanned.trailing > 0 => {
            return Err(corrupt(line_number, &reason));
        }
        Some((_, reason)) => Tail::Unparseable(reason),
        None if scanned.trailing > 0 => Tail::Unterminated,
        None => Tail::Clean,
    })
}

/// Moves everything after the last indexed line to `<file>.torn-<timestamp>` and truncates
/// the file there. Call with the exclusive lock held.
fn move_torn_tail(
    path: &Path,
    writer: &File,
    reader: &File,
    index: &Index,
    reason: String,
) -> Result<TornTail, StoreError> {
    let length = writer.metadata().map_err(|error| io_error(path, error))?.len();
    let mut torn = vec![0u8; (length - index.end) as usize];
    reader.read_exact_at(&mut torn, index.end).map_err(|error| io_error(path, error))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".torn-{stamp}"));
    let moved_to = PathBuf::from(name);
    let mut aside =
        OpenOptions::new().write(true).create_new(true).open(&moved_to).map_err(|error| io_error(&moved_to, error))?;
    aside.write_all(&torn).and_then(|()| aside.sync_all()).map_err(|error| io_error(&moved_to, error))?;
    writer.set_len(index.end).and_then(|()| writer.sync_all()).map_err(|error| io_error(path, error))?;
    tracing::warn!(
        path = %path.display(),
        moved_to = %moved_to.display(),
        line = index.lines + 1,
        bytes = torn.len(),
        %reason,
        "moved a torn last line of the events file aside"
    );
    Ok(TornTail { moved_to, line: index.lines + 1, bytes: torn.len() as u64, reason })
}

/// Catches up under the exclusive lock and moves a torn tail aside if there is one.
fn catch_up_exclusive(shared: &Shared, writer: &File, index: &mut Index) -> Result<Option<TornTail>, StoreError> {
    let reason = match catch_up(&shared.path, &shared.reader, index)? {
        Tail::Clean => return Ok(None),
        Tail::Unterminated => "the last line has no trailing newline".to_string(),
        Tail::Unparseable(reason) => reason,
    };
    let torn = move_torn_tail(&shared.path, writer, &shared.reader, index, reason)?;
    shared.counters.torn_tails.fetch_add(1, Ordering::Relaxed);
    Ok(Some(torn))
}

/// Holds an `flock` until dropped, so every exit path unlocks.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(path: &Path, file: &'a File) -> Result<Self, StoreError> {
        fs2::FileExt::lock_exclusive(file).map_err(|error| io_error(path, error))?;
        Ok(FileLock(file))
    }

    fn shared(path: &Path, file: &'a File) -> Result<Self, StoreError> {
        fs2::FileExt::lock_shared(file).map_err(|error| io_error(path, error))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an unlock error leaves nothing to undo.
        let _ = fs2::FileExt::unlock(self.0);
    }
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // Index updates happen after every fallible step, so a panic elsewhere cannot leave
        // it half-written.
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the index holds everything other processes appended: one `statx`, no lock.
    fn is_current(&self) -> Result<bool, StoreError> {
        let length = self.reader.metadata().map_err(|error| io_error(&self.path, error))?.len();
        Ok(length == self.index().end || length == self.writing_to.load(Ordering::Acquire))
    }

    /// Brings the index up to what other processes appended. Cheap when nothing changed.
    fn refresh(&self) -> Result<(), StoreError> {
        if self.is_current()? {
            return Ok(());
        }
        let _turn = self.catch_up_turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _lock = FileLock::shared(&self.path, &self.reader)?;
        let mut index = self.index();
        // A torn tail is left for the next writer to move aside; reads stop before it.
        catch_up(&self.path, &self.reader, &mut index)?;
        Ok(())
    }

    fn read_lines(&self, lines: &[LineRef]) -> Result<Vec<ChatEvent>, StoreError> {
        let mut buffer = Vec::new();
        lines.iter().map(|line| self.read_line(line, &mut buffer)).collect()
    }

    fn read_line(&self, line: &LineRef, buffer: &mut Vec<u8>) -> Result<ChatEvent, StoreError> {
        buffer.resize(line.len as usize, 0);
        self.reader.read_exact_at(buffer, line.offset).map_err(|error| io_error(&self.path, error))?;
        self.counters.events_parsed.fetch_add(1, Ordering::Relaxed);
        serde_json::from_slice(buffer).map_err(|error| StoreError::Corrupt {
            path: self.path.display().to_string(),
            line: u64::from(line.number),
            message: format!(
                "not a valid event: {error}. Run `mcp-platform replay {} --verify` to inspect the file",
                self.path.display()
            ),
        })
    }

    /// The conversation's newest events: from its cached tail, lines read backwards a page of
    /// index entries at a time where the tail does not reach, until [`RecentCut`] stops.
    fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<Arc<ChatEvent>>, StoreError> {
        let indexed =
            self.index().conversations.get(conversation_id).map_or(0, |conversation| conversation.lines.len());
        if indexed == 0 {
            return Ok(Vec::new());
        }
        let mut buffer = Vec::new();
        let read = |position: usize| {
            // Copied out so that the index is not locked over the file read.
            let line = self.index().conversations[conversation_id].lines[position];
            self.read_line(&line, &mut buffer)
        };
        self.tails.recent(conversation_id, indexed, RecentCut::new(limit), read)
    }

    fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.refresh()?;
        let lines = self
            .index()
            .conversations
            .get(conversation_id)
            .map(|conversation| conversation.lines.clone())
            .unwrap_or_default();
        let mut events = self.read_lines(&lines)?;
        events.sort_by_key(|event| event.seq);
        Ok(events)
    }

    fn request(&self, user: &str, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        let lines = self
            .index()
            .requests
            .get(user)
            .and_then(|requests| requests.get(request_id))
            .map(|request| request.lines.clone())
            .unwrap_or_default();
        self.read_lines(&lines)
    }

    fn tokens_spent(&self, user: &str, day: &str) -> Result<u64, StoreError> {
        Ok(self.index().spent.get(user).and_then(|days| days.get(day)).copied().unwrap_or(0))
    }

    fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        self.refresh()?;
        let index = self.index();
        let mut summaries: Vec<ConversationSummary> = index
            .conversations
            .iter()
            .filter(|(_, conversation)| conversation.owner == user)
            .map(|(conversation_id, conversation)| ConversationSummary {
                conversation_id: conversation_id.clone(),
                user: conversation.owner.clone(),
                events: conversation.lines.len() as u64,
                first_timestamp: conversation.first_timestamp.clone(),
                last_timestamp: conversation.last_timestamp.clone(),
            })
            .collect();
        summaries.sort_by(|a, b| a.first_timestamp.cmp(&b.first_timestamp));
        Ok(summaries)
    }
}

impl JsonlStore {
    /// Opens (creating if missing) the events file: indexes it in one sequential pass, moves
    /// a torn last line aside, and starts the writer thread. The directory must exist.
    ///
    /// With `fsync`, an append is acknowledged only after `fdatasync`; without, after `write`
    /// (durable against a process crash, not against a power loss).
    ///
    /// Opening reads the whole file, so async code calls it from `spawn_blocking` (or before
    /// the runtime starts). Dropping the store waits for the queued appends to be written.
    pub fn open(path: impl AsRef<Path>, fsync: bool) -> Result<(JsonlStore, OpenReport), StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|error| io_error(&path, error))?;
        let reader = File::open(&path).map_err(|error| io_error(&path, error))?;
        let shared = Arc::new(Shared {
            path,
            reader,
            catch_up_turn: Mutex::new(()),
            index: Mutex::new(Index::new()),
            writing_to: AtomicU64::new(0),
            tails: Tails::default(),
            counters: Counters::default(),
        });
        let torn_tail = {
            let mut index = shared.index();
            // The bulk of the file is indexed without the lock, so other processes keep
            // appending meanwhile; only the rest and the tail check need it.
            catch_up(&shared.path, &shared.reader, &mut index)?;
            let _lock = FileLock::exclusive(&shared.path, &writer)?;
            catch_up_exclusive(&shared, &writer, &mut index)?
        };
        let report = {
            let index = shared.index();
            OpenReport {
                events: index.lines,
                conversations: index.conversations.len(),
                bytes: index.end,
                torn_tail,
                chain_break: index.chain_break.clone(),
            }
        };
        let (jobs, queue) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("events-writer".into())
            .spawn(move || write_loop(&writer_shared, &writer, fsync, &queue))
            .map_err(|error| io_error(&shared.path, error))?;
        Ok((JsonlStore { shared, jobs: Some(jobs), writer: Some(writer) }, report))
    }

    /// The events file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn stats(&self) -> StoreStats {
        let counters = &self.shared.counters;
        StoreStats {
            batches: counters.batches.load(Ordering::Relaxed),
            events: counters.events.load(Ordering::Relaxed),
            writes: counters.writes.load(Ordering::Relaxed),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            torn_tails: counters.torn_tails.load(Ordering::Relaxed),
            events_parsed: counters.events_parsed.load(Ordering::Relaxed),
        }
    }

    async fn write(&self, work: Work) -> Result<Vec<ChatEvent>, StoreError> {
        let stopped = || io_error(&self.shared.path, std::io::Error::other("the store's writer thread has stopped"));
        let (reply, answer) = oneshot::channel();
        self.jobs.as_ref().ok_or_else(stopped)?.send(Job { work, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// A read that looks at the index and at most the recent lines a context needs: run here
    /// when the index is current, as it is unless another process appended, since then it
    /// takes no file lock and reads what was just written, from the page cache: cheaper than
    /// the hand-off to a blocking thread and back (two thread wake-ups). Otherwise it may wait
    /// for another process's lock, so it catches up on the blocking pool first. (The first
    /// read of a conversation after a restart parses its recent lines here too, once.) `read`
    /// itself does not refresh the index.
    async fn indexed<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.shared.is_current()? {
            return read(&self.shared);
        }
        self.blocking(move |shared| {
            shared.refresh()?;
            read(shared)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || read(&shared)).await.map_err(|error| {
            io_error(&self.shared.path, std::io::Error::other(format!("the read task failed: {error}")))
        })?
    }
}

impl Drop for JsonlStore {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            // The writer ends once the queue is drained; a panic there was already reported.
            let _ = writer.join();
        }
    }
}

fn write_loop(shared: &Shared, writer: &File, fsync: bool, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(shared, writer, fsync, group);
    }
}

/// Writes a group of batches with one lock, one `write` and one sync, and answers each.
fn commit_group(shared: &Shared, writer: &File, fsync: bool, group: Vec<Job>) {
    let (work, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.work, job.reply)).unzip();
    let mut outcomes: Vec<Result<Vec<ChatEvent>, StoreError>> = Vec::with_capacity(work.len());
    let written = (|| {
        let _lock = FileLock::exclusive(&shared.path, writer)?;
        let (start, lines) = {
            let mut index = shared.index();
            catch_up_exclusive(shared, writer, &mut index)?;
            let mut staging = Staging::new(index.last_hash.clone());
            let mut orphans = Some(());
            for work in work {
                let batch = match work {
                    Work::Append(batch) => batch,
                    // Worked out under the lock, once per group: no other process can be
                    // finishing the same requests, and the group's later sweeps would find them
                    // again.
                    Work::FinishOrphans if orphans.take().is_some() => index.orphan_ends(),
                    Work::FinishOrphans => Vec::new(),
                };
                outcomes.push(staging.stage(&*index, batch));
            }
            (index.end, staging.lines)
        };
        if lines.is_empty() {
            return Ok(());
        }
        shared.writing_to.store(start + lines.len() as u64, Ordering::Release);
        if let Err(error) = write_and_sync(writer, &lines, fsync, &shared.counters) {
            // Leave no partial group behind for other processes to index.
            let _ = writer.set_len(start);
            shared.writing_to.store(0, Ordering::Release);
            return Err(io_error(&shared.path, error));
        }
        let mut index = shared.index();
        let mut offset = start;
        let mut accepted = 0u64;
        for events in outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()) {
            accepted += 1;
            for event in events {
                let len = line_len(&lines, offset - start);
                let at = LineRef { offset, len: len as u32, number: (index.lines + 1) as u32 };
                index.add(&LineHead::of(event), at);
                let position = index.conversations[event.conversation_id.as_str()].lines.len() - 1;
                shared.tails.appended(event, position);
                offset += len as u64 + 1;
            }
        }
        shared.writing_to.store(0, Ordering::Release);
        drop(index);
        let counters = &shared.counters;
        counters.batches.fetch_add(accepted, Ordering::Relaxed);
        counters.events.fetch_add(accepted_events(&outcomes), Ordering::Relaxed);
        Ok(())
    })();
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        let answer = match (outcomes.next(), &written) {
            (Some(Ok(_)) | None, Err(error)) => Err(copy_error(error)),
            (Some(outcome), Ok(())) => outcome,
            (Some(Err(refused)), Err(_)) => Err(refused),
            (None, Ok(())) => Err(io_error(&shared.path, std::io::Error::other("the batch was not written"))),
        };
        // The appender may have given up waiting; its events are stored all the same.
        let _ = reply.send(answer);
    }
}

fn accepted_events(outcomes: &[Result<Vec<ChatEvent>, StoreError>]) -> u64 {
    outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).map(|events| events.len() as u64).sum()
}

fn line_len(lines: &[u8], from: u64) -> usize {
    let rest = &lines[from as usize..];
    memchr::memchr(b'\n', rest).unwrap_or(rest.len())
}

fn write_and_sync(writer: &File, lines: &[u8], fsync: bool, counters: &Counters) -> std::io::Result<()> {
    // One `write_all` on an O_APPEND file: in practice a single `write` call, which a killed
    // process cannot split.
    (&*writer).write_all(lines)?;
    counters.writes.fetch_add(1, Ordering::Relaxed);
    if fsync {
        writer.sync_data()?;
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// `StoreError` holds an `io::Error`, which is not `Clone`; every batch of a failed group
/// gets the same message.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Io { path, source } => {
            StoreError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        StoreError::Corrupt { path, line, message } => {
            StoreError::Corrupt { path: path.clone(), line: *line, message: message.clone() }
        }
        StoreError::ConversationOwned { conversation_id } => {
            StoreError::ConversationOwned { conversation_id: conversation_id.clone() }
        }
        StoreError::DuplicateRequest { request_id, conversation_id, event_id } => StoreError::DuplicateRequest {
            request_id: request_id.clone(),
            conversation_id: conversation_id.clone(),
            event_id: event_id.clone(),
        },
        StoreError::Unavailable { store, message } => {
            StoreError::Unavailable { store: store.clone(), message: message.clone() }
        }
    }
}

#[async_trait]
impl EventStore for JsonlStore {
    async fn append(&self, mut batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for event in &mut batch {
            if event.kind == EventType::UserMessage && event.request_id.is_some() {
                event.extra.insert(OWNER_KEY.to_owned(), super::process::this_process().into());
            }
        }
        self.write(Work::Append(batch)).await
    }

    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        let conversation_id = conversation_id.to_string();
        self.blocking(move |shared| shared.conversation(&conversation_id)).await
    }

    async fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<Arc<ChatEvent>>, StoreError> {
        let conversation_id = conversation_id.to_string();
        self.indexed(move |shared| shared.recent(&conversation_id, limit)).await
    }

    async fn request(&self, user: &str, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        let (user, request_id) = (user.to_string(), request_id.to_string());
        self.indexed(move |shared| shared.request(&user, &request_id)).await
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        let user = user.to_string();
        self.blocking(move |shared| shared.conversations(&user)).await
    }

    async fn tokens_spent(&self, user: &str, day: &str) -> Result<u64, StoreError> {
        let (user, day) = (user.to_string(), day.to_string());
        self.indexed(move |shared| shared.tokens_spent(&user, &day)).await
    }

    fn sweep_every(&self) -> Option<std::time::Duration> {
        Some(SWEEP_EVERY)
    }

    async fn finish_orphans(&self) -> Result<Vec<ChatEvent>, StoreError> {
        // Looked at first without the lock: the writer and the lock are needed only when a
        // process is gone.
        let any = self
            .blocking(|shared| {
                shared.refresh()?;
                Ok(!shared.index().orphan_ends().is_empty())
            })
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(Work::FinishOrphans).await
    }
}
