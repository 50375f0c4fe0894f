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
//! down at that moment) is no longer renewed. A lease that runs out belongs to a process
//! that is gone: [`EventStore::finish_orphans`] deletes it and stores the request's end in
//! the same transaction, so exactly one process finishes it.

mod frames;
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

use super::chain::{Claim, Ledger, Staging, Work};
use super::recent::RecentCut;
use super::record::{END_KEY, interrupted};
use super::{
    ChatEvent, ConversationSummary, EventStore, EventType, FrameBatch, FrameFeed, NewEvent, RecentLimit, StoreError,
};

/// How long a claim stays leased without renewal: longer than any stall of a live process,
/// short enough that a client waiting on a dead one gets its answer soon.
pub const LEASE: Duration = Duration::from_secs(6);
/// How long the frames of an ended request stay for followers still reading them.
const FRAMES_KEPT: Duration = Duration::from_secs(60);
/// How often a live process renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Rows of the first page `recent` reads, newest first; each further page is twice as long,
/// up to [`RECENT_MAX_PAGE`], so a short context costs one small query and a long one a few.
const RECENT_FIRST_PAGE: i64 = 32;
const RECENT_MAX_PAGE: i64 = 1024;

/// Upper bound of batches merged into one transaction, so one group cannot hold the chain
/// lock for long.
const MAX_GROUP_BATCHES: usize = 1024;

/// The PostgreSQL event store. Dropping it lets the queued appends finish.
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown_url: String,
    /// For the dedicated connection of each follower's `LISTEN`.
    url: String,
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
    work: Work,
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
        Ok(PostgresStore { pool, shown_url, url: url.to_owned(), owner, jobs })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|error| unavailable(&self.shown_url)(error.to_string()))
    }

    async fn write(&self, work: Work) -> Result<Vec<ChatEvent>, StoreError> {
        let stopped = || unavailable(&self.shown_url)("the store's writer task has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { work, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn lines(
        &self,
        sql: &str,
        parameters: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ChatEvent>, StoreError> {
        let client = self.client().await?;
        let rows =
            client.query(sql, parameters).await.map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
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

/// The `seq`, owners and claims a group's batches depend on, read under the chain lock.
#[derive(Default)]
struct Prefetched {
    last_seqs: HashMap<String, u64>,
    owners: HashMap<String, String>,
    /// By `(user, request_id)`.
    claims: HashMap<(String, String), Claim>,
}

impl Ledger for Prefetched {
    fn last_seq(&self, conversation_id: &str) -> u64 {
        self.last_seqs.get(conversation_id).copied().unwrap_or(0)
    }

    fn claim(&self, user: &str, request_id: &str) -> Option<Claim> {
        self.claims.get(&(user.to_owned(), request_id.to_owned())).cloned()
    }

    fn owner(&self, conversation_id: &str) -> Option<String> {
        self.owners.get(conversation_id).cloned()
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
        let (work, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.work, job.reply)).unzip();
        let outcomes = match commit_group(&pool, &owner, work).await {
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

/// One transaction for the whole group: lock the head, take the expired leases if asked to,
/// stage every batch on what the database holds, insert the accepted rows, move the head,
/// commit.
async fn commit_group(
    pool: &Pool,
    owner: &str,
    work: Vec<Work>,
) -> Result<Vec<Result<Vec<ChatEvent>, StoreError>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let head = transaction.query_one("SELECT position, hash FROM chain_head FOR UPDATE", &[]).await?;
    let mut position: i64 = head.get(0);
    let prev: String = head.get(1);
    let mut orphans = Some(());
    let mut batches = Vec::with_capacity(work.len());
    for work in work {
        batches.push(match work {
            Work::Append(batch) => batch,
            // Once per group: the later sweeps of the group would find the same leases.
            Work::FinishOrphans if orphans.take().is_some() => take_orphans(&transaction).await?,
            Work::FinishOrphans => Vec::new(),
        });
    }
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
            "INSERT INTO events (position, id, conversation_id, seq, request_id, \"user\", kind, timestamp, tokens,
                                 line, prev, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[])",
            &[
                &columns.position,
                &columns.id,
                &columns.conversation_id,
                &columns.seq,
                &columns.request_id,
                &columns.user,
                &columns.kind,
                &columns.timestamp,
                &columns.tokens,
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

/// Deletes the leases that ran out and returns the ends their requests need; their followers
/// on other replicas get the empty terminal frame that sends them to the stored end.
async fn take_orphans(transaction: &tokio_postgres::Transaction<'_>) -> Result<Vec<NewEvent>, tokio_postgres::Error> {
    let rows = transaction
        .query(
            "WITH gone AS (DELETE FROM leases WHERE expires_at < now() RETURNING conversation_id, request_id, \"user\"),
                  ended AS (INSERT INTO frames (\"user\", request_id, seq, frame, terminal)
                            SELECT g.\"user\", g.request_id,
                                   coalesce((SELECT max(seq) + 1 FROM frames f
                                             WHERE f.\"user\" = g.\"user\" AND f.request_id = g.request_id), 0),
                                   '', true
                            FROM gone g ON CONFLICT DO NOTHING)
             SELECT conversation_id, request_id, \"user\" FROM gone",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| interrupted(row.get(0), row.get(1), row.get(2))).collect())
}

/// Leases the requests the group claims to `owner` and drops those it ends.
async fn update_leases(
    transaction: &tokio_postgres::Transaction<'_>,
    owner: &str,
    accepted: &[&ChatEvent],
) -> Result<(), tokio_postgres::Error> {
    let (mut claimed, mut conversations, mut claimed_by) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ended, mut ended_by) = (Vec::new(), Vec::new());
    for event in accepted {
        let Some(request_id) = event.request_id.as_deref() else { continue };
        if event.kind == EventType::UserMessage {
            claimed.push(request_id);
            conversations.push(event.conversation_id.as_str());
            claimed_by.push(event.user());
        } else if event.extra.contains_key(END_KEY) {
            ended.push(request_id);
            ended_by.push(event.user());
        }
    }
    if !claimed.is_empty() {
        transaction
            .execute(
                "INSERT INTO leases (\"user\", request_id, conversation_id, owner, expires_at)
                 SELECT \"user\", request_id, conversation_id, $4, now() + make_interval(secs => $5)
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS claimed(\"user\", request_id, conversation_id)",
                &[&claimed_by, &claimed, &conversations, &owner, &LEASE.as_secs_f64()],
            )
            .await?;
    }
    if !ended.is_empty() {
        transaction
            .execute(
                "DELETE FROM leases WHERE (\"user\", request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                &[&ended_by, &ended],
            )
            .await?;
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
    let (users, requests): (Vec<&str>, Vec<&str>) = events
        .filter(|event| event.kind == EventType::UserMessage)
        .filter_map(|event| Some((event.user.as_str(), event.request_id.as_deref()?)))
        .unzip();
    let mut ledger = Prefetched::default();
    // Each conversation's newest and first row through the (conversation_id, seq) index, so
    // the cost does not grow with the conversation.
    let known = transaction
        .query(
            "SELECT c.id, newest.seq, first.\"user\" FROM UNNEST($1::text[]) AS c(id)
             CROSS JOIN LATERAL (SELECT seq FROM events WHERE conversation_id = c.id ORDER BY seq DESC LIMIT 1) newest
             CROSS JOIN LATERAL (SELECT \"user\" FROM events WHERE conversation_id = c.id AND seq = 1) first",
            &[&conversations],
        )
        .await?;
    for row in known {
        let conversation_id: String = row.get(0);
        ledger.last_seqs.insert(conversation_id.clone(), row.get::<_, i64>(1) as u64);
        ledger.owners.insert(conversation_id, row.get(2));
    }
    if !requests.is_empty() {
        let claims = transaction
            .query(
                "SELECT \"user\", request_id, conversation_id, id FROM events
                 WHERE kind = 'user_message' AND (\"user\", request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                &[&users, &requests],
            )
            .await?;
        for row in claims {
            ledger.claims.insert((row.get(0), row.get(1)), Claim { conversation_id: row.get(2), event_id: row.get(3) });
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
    user: Vec<&'a str>,
    kind: Vec<&'static str>,
    timestamp: Vec<&'a str>,
    /// The model tokens of its `usage`, summed for the daily budget.
    tokens: Vec<i64>,
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
        self.user.push(event.user());
        self.kind.push(kind_name(event.kind));
        self.timestamp.push(&event.timestamp);
        self.tokens.push(event.usage.map_or(0, |usage| usage.total_tokens as i64));
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
        self.write(Work::Append(batch)).await
    }

    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.lines("SELECT position, line FROM events WHERE conversation_id = $1 ORDER BY seq", &[&conversation_id])
            .await
    }

    async fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<ChatEvent>, StoreError> {
        let mut cut = RecentCut::new(limit);
        let mut newest_first = Vec::new();
        let mut before = i64::MAX;
        let mut page = RECENT_FIRST_PAGE;
        loop {
            let rows = self
                .lines(
                    "SELECT position, line FROM events WHERE conversation_id = $1 AND seq < $2
                     ORDER BY seq DESC LIMIT $3",
                    &[&conversation_id, &before, &page],
                )
                .await?;
            let exhausted = rows.len() < page as usize;
            for event in rows {
                if !cut.take(&event) {
                    newest_first.reverse();
                    return Ok(newest_first);
                }
                before = event.seq as i64;
                newest_first.push(event);
            }
            if exhausted {
                newest_first.reverse();
                return Ok(newest_first);
            }
            page = (page * 2).min(RECENT_MAX_PAGE);
        }
    }

    async fn request(&self, user: &str, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.lines(
            "SELECT position, line FROM events WHERE \"user\" = $1 AND request_id = $2 ORDER BY position",
            &[&user, &request_id],
        )
        .await
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT first.conversation_id, count(*), first.timestamp, (array_agg(e.timestamp ORDER BY e.seq DESC))[1]
                 FROM events first JOIN events e ON e.conversation_id = first.conversation_id
                 WHERE first.\"user\" = $1 AND first.seq = 1
                 GROUP BY first.conversation_id, first.timestamp ORDER BY first.timestamp",
                &[&user],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(rows
            .iter()
            .map(|row| ConversationSummary {
                conversation_id: row.get(0),
                user: user.to_owned(),
                events: row.get::<_, i64>(1) as u64,
                first_timestamp: row.get(2),
                last_timestamp: row.get(3),
            })
            .collect())
    }

    async fn tokens_spent(&self, user: &str, day: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(sum(tokens), 0)::bigint FROM events WHERE \"user\" = $1 AND left(timestamp, 10) = $2",
                &[&user, &day],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn sweep_every(&self) -> Option<Duration> {
        Some(RENEW_EVERY)
    }

    async fn renew_leases(&self, requests: &[(String, String)]) -> Result<(), StoreError> {
        let client = self.client().await?;
        // The frames of requests that ended a while ago: their followers have read them, and a
        // later `resume` replays the stored request.
        client
            .execute(
                "DELETE FROM frames f USING frames ended
                 WHERE ended.terminal AND ended.written_at < now() - make_interval(secs => $1)
                   AND f.\"user\" = ended.\"user\" AND f.request_id = ended.request_id",
                &[&FRAMES_KEPT.as_secs_f64()],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        if requests.is_empty() {
            return Ok(());
        }
        let (users, request_ids): (Vec<&str>, Vec<&str>) =
            requests.iter().map(|(user, request_id)| (user.as_str(), request_id.as_str())).unzip();
        client
            .execute(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $2)
                 WHERE owner = $1 AND (\"user\", request_id) IN (SELECT * FROM UNNEST($3::text[], $4::text[]))",
                &[&&*self.owner, &LEASE.as_secs_f64(), &users, &request_ids],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(())
    }

    async fn finish_orphans(&self) -> Result<Vec<ChatEvent>, StoreError> {
        self.write(Work::FinishOrphans).await
    }

    fn shares_frames(&self) -> bool {
        true
    }

    async fn share_frames(&self, batch: FrameBatch<'_>) -> Result<(), StoreError> {
        self.insert_frames(batch).await
    }

    async fn follow_frames(&self, user: &str, request_id: &str) -> Result<FrameFeed, StoreError> {
        self.follow(user, request_id).await
    }
}
