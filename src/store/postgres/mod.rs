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
//!
//! # Statements
//! Every statement is prepared once per pooled connection and cached there, so a turn's
//! reads and the group's writes cost one round trip each, not a parse and a round trip more.

mod followers;
mod frames;
pub mod migrations;
pub mod rows;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::chain::Work;
use super::recent::RecentCut;
use super::{
    ChatEvent, ConversationSummary, EventStore, FollowersWanted, FrameBatch, FrameFeed, NewEvent, RecentLimit,
    StoreError,
};
use followers::Waiting;
use writer::{Job, write_loop};

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
    /// This process's requests whose followers are not known yet.
    waiting: Arc<Waiting>,
    /// Stops the listening for followers when the store is dropped.
    stop: CancellationToken,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.shown_url).finish_non_exhaustive()
    }
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
        let waiting = Arc::new(Waiting::default());
        let stop = CancellationToken::new();
        tokio::spawn(write_loop(pool.clone(), shown_url.clone(), owner.clone(), waiting.clone(), queue));
        tokio::spawn(followers::listen(url.to_owned(), owner.to_string(), Arc::downgrade(&waiting), stop.clone()));
        Ok(PostgresStore { pool, shown_url, url: url.to_owned(), owner, jobs, waiting, stop })
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
        let failed = |error: tokio_postgres::Error| unavailable(&self.shown_url)(error.to_string());
        let statement = client.prepare_cached(sql).await.map_err(failed)?;
        let rows = client.query(&statement, parameters).await.map_err(failed)?;
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

    /// Settles the waiting requests that have followers: those whose notification went astray.
    async fn settle_followed(&self, client: &deadpool_postgres::Object) -> Result<(), StoreError> {
        let waiting = self.waiting.keys();
        if waiting.is_empty() {
            return Ok(());
        }
        let (users, request_ids): (Vec<&str>, Vec<&str>) =
            waiting.iter().map(|(user, request_id)| (user.as_str(), request_id.as_str())).unzip();
        let followed = client
            .query(
                "SELECT \"user\", request_id FROM followers
                 WHERE (\"user\", request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                &[&users, &request_ids],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        for row in followed {
            self.waiting.settle(row.get(0), row.get(1), true);
        }
        Ok(())
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

    async fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<Arc<ChatEvent>>, StoreError> {
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
                newest_first.push(Arc::new(event));
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
        if !requests.is_empty() {
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
        }
        self.settle_followed(&client).await
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

    fn followers(&self, user: &str, request_id: &str) -> FollowersWanted {
        self.waiting.register(user, request_id)
    }

    async fn follow_frames(&self, user: &str, request_id: &str) -> Result<Option<FrameFeed>, StoreError> {
        self.follow(user, request_id).await
    }
}
