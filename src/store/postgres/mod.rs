//! The [`EventStore`] on PostgreSQL (SPEC §6, `store.backend: postgres`): several server
//! processes on several hosts share one database and one chain.
//!
//! # One chain, serialised in the database
//! Every row keeps its exact JSONL line, `prev` and `hash`, built by [`super::chain`] as the
//! JSONL store builds them. An append locks the single row of `chain_head`
//! (`SELECT … FOR UPDATE`) for the length of its transaction, so appends of all processes
//! are ordered; under the lock it reads the `seq` and claims its batches depend on, inserts
//! the rows and moves the head. The database also enforces the uniqueness of `(user,
//! request_id)` claims and `(conversation_id, seq)`, so even a writer that bypassed the
//! lock could not fork a conversation or take a claim twice.
//!
//! # Group commit
//! One writer task per process owns the appends: batches that arrive while a transaction
//! is in flight go out together in the next one (one lock, one multi-row insert, one
//! commit), so the chain costs a handful of round trips per group, not per event. Each batch
//! is still accepted or refused on its own.
//!
//! # Leases
//! The transaction that stores a claim (`user_message`) also leases the request to this
//! process for [`LEASE`]; the event that ends it (`extra.status`) drops the lease. While the
//! process runs the request it renews the lease (one statement for all its running requests
//! every [`RENEW_EVERY`]); a request it stopped without storing the end (the database was
//! down at that moment) is no longer renewed. A lease
//! that runs out belongs to a process that is gone: [`EventStore::take_orphans`] deletes it
//! and hands the request to one caller, which stores its end.

pub mod migrations;
pub mod rows;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use super::chain::{Claim, Ledger, Staging};
use super::record::END_KEY;
use super::{ChatEvent, ConversationSummary, EventStore, EventType, NewEvent, Orphan, StoreError};

/// How long a claim stays leased without renewal: longer than any stall of a live process,
/// short enough that a client waiting on a dead one gets its answer soon.
pub const LEASE: Duration = Duration::from_secs(6);
/// How often a live process renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Upper bound of batches merged into one transaction, so one group cannot hold the chain
/// lock for long.
const MAX_GROUP_BATCHES: usize = 1024;

/// The PostgreSQL event store. Dropping it lets the queued appends finish.
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown_url: String,
    /// This process among those sharing the database: host, pid and a random part, so a
    /// restarted process with the same pid is another owner.
    owner: Arc<str>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.shown_url).finish_non_exhaustive()
    }
}

struct Job {
    batch: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<ChatEvent>, StoreError>>,
}

/// `url` without its password, safe to log.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "a postgres:// URL that does not parse".to_owned(),
    }
}

/// A pool of `size` connections to `url`; connections are made when first needed.
pub fn connect_pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let shown = redacted_url(url);
    let config = tokio_postgres::Config::from_str(url).map_err(|error| StoreError::Unavailable {
        store: shown.clone(),
        message: format!("store.postgres.url is not a valid PostgreSQL URL: {error}"),
    })?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(size.max(1)).build().map_err(|error| StoreError::Unavailable {
        store: shown,
        message: format!("cannot build the connection pool: {error}"),
    })
}

impl PostgresStore {
    /// Connects, applies the pending migrations and starts the writer task. Needs a tokio
    /// runtime.
    pub async fn open(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        let shown_url = redacted_url(url);
        let pool = connect_pool(url, pool_size)?;
        {
            let unavailable = unavailable(&shown_url);
            let mut client = pool.get().await.map_err(|error| unavailable(error.to_string()))?;
            let applied = migrations::migrate(&mut client).await.map_err(|error| unavailable(error.to_string()))?;
            if !applied.is_empty() {
                tracing::info!(url = %shown_url, versions = ?applied, "applied database migrations");
            }
        }
        let owner: Arc<str> = owner_name().into();
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool.clone(), shown_url.clone(), owner.clone(), queue));
        Ok(PostgresStore { pool, shown_url, owner, jobs })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|error| unavailable(&self.shown_url)(error.to_string()))
    }

    async fn lines(&self, sql: &str, key: &str) -> Result<Vec<ChatEvent>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(sql, &[&key]).await.map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        rows.iter()
            .map(|row| {
                let position: i64 = row.get(0);
                let line: &str = row.get(1);
                serde_json::from_str(line).map_err(|error| StoreError::Corrupt {
                    path: self.shown_url.clone(),
                    line: position as u64,
                    message: format!(
                        "row at position {position} is not a valid event: {error}. Run `mcp-platform \
                         replay --verify <url>` to inspect the database"
                    ),
                })
            })
            .collect()
    }
}

fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}/{}/{}", host.trim(), std::process::id(), &random[..8])
}

fn unavailable(shown_url: &str) -> impl Fn(String) -> StoreError + '_ {
    move |message| StoreError::Unavailable { store: shown_url.to_owned(), message }
}

/// The `seq` and claims a group's batches depend on, read under the chain lock.
#[derive(Default)]
struct Prefetched {
    last_seqs: HashMap<String, u64>,
    claims: HashMap<String, Claim>,
}

impl Ledger for Prefetched {
    fn last_seq(&self, conversation_id: &str) -> u64 {
        self.last_seqs.get(conversation_id).copied().unwrap_or(0)
    }

    fn claim(&self, request_id: &str) -> Option<Claim> {
        self.claims.get(request_id).cloned()
    }
}

async fn write_loop(pool: Pool, shown_url: String, owner: Arc<str>, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.batch, job.reply)).unzip();
        let outcomes = match commit_group(&pool, &owner, batches).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::warn!(url = %shown_url, %error, "appending to the database failed");
                let message = format!("the append was not stored: {error}");
                replies.iter().map(|_| Err(unavailable(&shown_url)(message.clone()))).collect()
            }
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The appender may have given up waiting; a committed batch is stored all the same.
            let _ = reply.send(outcome);
        }
    }
}

/// One transaction for the whole group: lock the head, stage every batch on what the
/// database holds, insert the accepted rows, move the head, commit.
async fn commit_group(
    pool: &Pool,
    owner: &str,
    batches: Vec<Vec<NewEvent>>,
) -> Result<Vec<Result<Vec<ChatEvent>, StoreError>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let head = transaction.query_one("SELECT position, hash FROM chain_head FOR UPDATE", &[]).await?;
    let mut position: i64 = head.get(0);
    let prev: String = head.get(1);
    let ledger = prefetch(&transaction, &batches).await?;
    let mut staging = Staging::new(prev);
    let outcomes: Vec<_> = batches.into_iter().map(|batch| staging.stage(&ledger, batch)).collect();
    let accepted: Vec<&ChatEvent> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).flatten().collect();
    if accepted.is_empty() {
        return Ok(outcomes);
    }
    let mut columns = Rows::default();
    let lines = std::str::from_utf8(&staging.lines)?;
    for (event, line) in accepted.iter().zip(lines.lines()) {
        position += 1;
        columns.push(position, event, line);
    }
    transaction
        .execute(
            "INSERT INTO events (position, id, conversation_id, seq, request_id, kind, timestamp, line, prev, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::text[], $10::text[])",
            &[
                &columns.position,
                &columns.id,
                &columns.conversation_id,
                &columns.seq,
                &columns.request_id,
                &columns.kind,
                &columns.timestamp,
                &columns.line,
                &columns.prev,
                &columns.hash,
            ],
        )
        .await?;
    transaction.execute("UPDATE chain_head SET position = $1, hash = $2", &[&position, &staging.prev]).await?;
    update_leases(&transaction, owner, &accepted).await?;
    transaction.commit().await?;
    Ok(outcomes)
}

/// Leases the requests the group claims to `owner` and drops those it ends.
async fn update_leases(
    transaction: &tokio_postgres::Transaction<'_>,
    owner: &str,
    accepted: &[&ChatEvent],
) -> Result<(), tokio_postgres::Error> {
    let (mut claimed, mut conversations, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for event in accepted {
        let Some(request_id) = event.request_id.as_deref() else { continue };
        if event.kind == EventType::UserMessage {
            claimed.push(request_id);
            conversations.push(event.conversation_id.as_str());
        } else if event.extra.contains_key(END_KEY) {
            ended.push(request_id);
        }
    }
    if !claimed.is_empty() {
        transaction
            .execute(
                "INSERT INTO leases (request_id, conversation_id, owner, expires_at)
                 SELECT request_id, conversation_id, $3, now() + make_interval(secs => $4)
                 FROM UNNEST($1::text[], $2::text[]) AS claimed(request_id, conversation_id)",
                &[&claimed, &conversations, &owner, &LEASE.as_secs_f64()],
            )
            .await?;
    }
    if !ended.is_empty() {
        transaction.execute("DELETE FROM leases WHERE request_id = ANY($1)", &[&ended]).await?;
    }
    Ok(())
}

async fn prefetch(
    transaction: &tokio_postgres::Transaction<'_>,
    batches: &[Vec<NewEvent>],
) -> Result<Prefetched, tokio_postgres::Error> {
    let events = batches.iter().flatten();
    let mut conversations: Vec<&str> = events.clone().map(|event| event.conversation_id.as_str()).collect();
    conversations.sort_unstable();
    conversations.dedup();
    let requests: Vec<&str> = events
        .filter(|event| event.kind == EventType::UserMessage)
        .filter_map(|event| event.request_id.as_deref())
        .collect();
    let mut ledger = Prefetched::default();
    let seqs = transaction
        .query(
            "SELECT conversation_id, max(seq) FROM events WHERE conversation_id = ANY($1) GROUP BY conversation_id",
            &[&conversations],
        )
        .await?;
    for row in seqs {
        ledger.last_seqs.insert(row.get(0), row.get::<_, i64>(1) as u64);
    }
    if !requests.is_empty() {
        let claims = transaction
            .query(
                "SELECT request_id, conversation_id, id FROM events
                 WHERE kind = 'user_message' AND request_id = ANY($1)",
                &[&requests],
            )
            .await?;
        for row in claims {
            ledger.claims.insert(row.get(0), Claim { conversation_id: row.get(1), event_id: row.get(2) });
        }
    }
    Ok(ledger)
}

/// The inserted rows as one array per column, for a single `INSERT … SELECT FROM UNNEST`.
#[derive(Default)]
struct Rows<'a> {
    position: Vec<i64>,
    id: Vec<&'a str>,
    conversation_id: Vec<&'a str>,
    seq: Vec<i64>,
    request_id: Vec<Option<&'a str>>,
    kind: Vec<&'static str>,
    timestamp: Vec<&'a str>,
    line: Vec<&'a str>,
    prev: Vec<&'a str>,
    hash: Vec<&'a str>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, position: i64, event: &'a ChatEvent, line: &'a str) {
        self.position.push(position);
        self.id.push(&event.id);
        self.conversation_id.push(&event.conversation_id);
        self.seq.push(event.seq as i64);
        self.request_id.push(event.request_id.as_deref());
        self.kind.push(kind_name(event.kind));
        self.timestamp.push(&event.timestamp);
        self.line.push(line);
        self.prev.push(&event.prev);
        self.hash.push(&event.hash);
    }
}

fn kind_name(kind: EventType) -> &'static str {
    match kind {
        EventType::UserMessage => "user_message",
        EventType::AssistantMessage => "assistant_message",
        EventType::ToolResult => "tool_result",
        EventType::SystemUpdate => "system_update",
        EventType::Meta => "meta",
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let stopped = || unavailable(&self.shown_url)("the store's writer task has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { batch, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.lines("SELECT position, line FROM events WHERE conversation_id = $1 ORDER BY seq", conversation_id).await
    }

    async fn request(&self, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.lines("SELECT position, line FROM events WHERE request_id = $1 ORDER BY position", request_id).await
    }

    async fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT conversation_id, count(*), min(timestamp), max(timestamp) FROM events
                 GROUP BY conversation_id ORDER BY min(timestamp)",
                &[],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(rows
            .iter()
            .map(|row| ConversationSummary {
                conversation_id: row.get(0),
                events: row.get::<_, i64>(1) as u64,
                first_timestamp: row.get(2),
                last_timestamp: row.get(3),
            })
            .collect())
    }

    fn lease_renewal(&self) -> Option<Duration> {
        Some(RENEW_EVERY)
    }

    async fn renew_leases(&self, request_ids: &[String]) -> Result<(), StoreError> {
        if request_ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $2)
                 WHERE owner = $1 AND request_id = ANY($3)",
                &[&&*self.owner, &LEASE.as_secs_f64(), &request_ids],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(())
    }

    async fn take_orphans(&self) -> Result<Vec<Orphan>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("DELETE FROM leases WHERE expires_at < now() RETURNING request_id, conversation_id", &[])
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(rows.iter().map(|row| Orphan { request_id: row.get(0), conversation_id: row.get(1) }).collect())
    }
}
