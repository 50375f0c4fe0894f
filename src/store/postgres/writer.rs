//! The writer task of a [`PostgresStore`](super::PostgresStore): group commit under the
//! chain lock, and the leases that go with claims and ends (see the parent module).

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::followers::Waiting;
use super::{LEASE, unavailable};
use crate::store::chain::{Claim, Ledger, Staging, Work};
use crate::store::record::{END_KEY, interrupted};
use crate::store::{ChatEvent, EventType, NewEvent, StoreError};

/// Upper bound of batches merged into one transaction, so one group cannot hold the chain
/// lock for long.
const MAX_GROUP_BATCHES: usize = 1024;

pub(super) struct Job {
    pub work: Work,
    pub reply: oneshot::Sender<Result<Vec<ChatEvent>, StoreError>>,
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

pub(super) async fn write_loop(
    pool: Pool,
    shown_url: String,
    owner: Arc<str>,
    waiting: Arc<Waiting>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (work, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|job| (job.work, job.reply)).unzip();
        let mut settled = Settled { requests: ending(&work), ..Settled::default() };
        let outcomes = match commit_group(&pool, &owner, work, &mut settled).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::warn!(url = %shown_url, %error, "appending to the database failed");
                let message = format!("the append was not stored: {error}");
                replies.iter().map(|_| Err(unavailable(&shown_url)(message.clone()))).collect()
            }
        };
        // After the transaction, before the appenders hear of it: a request whose end is stored
        // shares its frames only if someone follows it. One whose end was refused or not
        // stored shares none: its followers get its end from the lease sweep.
        for request in &settled.requests {
            waiting.settle(&request.0, &request.1, settled.followed.contains(request));
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The appender may have given up waiting; a committed batch is stored all the same.
            let _ = reply.send(outcome);
        }
    }
}

/// The requests a group ends (or finds orphaned), by `(user, request_id)`, and those of them
/// with followers.
#[derive(Default)]
struct Settled {
    requests: Vec<(String, String)>,
    followed: std::collections::HashSet<(String, String)>,
}

/// The requests whose ends the group's batches carry.
fn ending(work: &[Work]) -> Vec<(String, String)> {
    let events = work.iter().flat_map(|work| match work {
        Work::Append(batch) => batch.as_slice(),
        Work::FinishOrphans => &[],
    });
    events
        .filter(|event| event.extra.contains_key(END_KEY))
        .filter_map(|event| Some((event.user.clone(), event.request_id.clone()?)))
        .collect()
}

/// Runs a statement prepared once per connection.
async fn execute(
    transaction: &Transaction<'_>,
    sql: &str,
    parameters: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = transaction.prepare_cached(sql).await?;
    transaction.execute(&statement, parameters).await
}

async fn query(
    transaction: &Transaction<'_>,
    sql: &str,
    parameters: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = transaction.prepare_cached(sql).await?;
    transaction.query(&statement, parameters).await
}

/// One transaction for the whole group: lock the head, take the expired leases if asked to,
/// stage every batch on what the database holds, insert the accepted rows, move the head,
/// commit.
async fn commit_group(
    pool: &Pool,
    owner: &str,
    work: Vec<Work>,
    settled: &mut Settled,
) -> Result<Vec<Result<Vec<ChatEvent>, StoreError>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let head = query(&transaction, "SELECT position, hash FROM chain_head FOR UPDATE", &[]).await?;
    let head = head.first().ok_or("the chain_head row is missing")?;
    let mut position: i64 = head.get(0);
    let prev: String = head.get(1);
    let mut orphans = Some(());
    let mut batches = Vec::with_capacity(work.len());
    for work in work {
        batches.push(match work {
            Work::Append(batch) => batch,
            // Once per group: the later sweeps of the group would find the same leases.
            Work::FinishOrphans if orphans.take().is_some() => {
                let orphaned = take_orphans(&transaction).await?;
                settled
                    .requests
                    .extend(orphaned.iter().filter_map(|end| Some((end.user.clone(), end.request_id.clone()?))));
                orphaned
            }
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
    // The group's writes do not depend on each other's results: they go out together, in one
    // round trip rather than one each.
    let insert = async {
        execute(
            &transaction,
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
        .await
    };
    let head = async {
        execute(&transaction, "UPDATE chain_head SET position = $1, hash = $2", &[&position, &staging.prev]).await
    };
    futures::try_join!(
        insert,
        head,
        lease_claims(&transaction, owner, &accepted),
        end_leases(&transaction, &accepted, settled)
    )?;
    transaction.commit().await?;
    Ok(outcomes)
}

/// Deletes the leases that ran out and returns the ends their requests need; their followers
/// on other replicas get the empty terminal frame that sends them to the stored end.
async fn take_orphans(transaction: &Transaction<'_>) -> Result<Vec<NewEvent>, tokio_postgres::Error> {
    let rows = query(
        transaction,
        "WITH gone AS (DELETE FROM leases WHERE expires_at < now() RETURNING conversation_id, request_id, \"user\"),
              unfollowed AS (DELETE FROM followers f USING gone g
                             WHERE f.\"user\" = g.\"user\" AND f.request_id = g.request_id),
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

/// Leases the requests the group claims to `owner`.
async fn lease_claims(
    transaction: &Transaction<'_>,
    owner: &str,
    accepted: &[&ChatEvent],
) -> Result<(), tokio_postgres::Error> {
    let (mut claimed, mut conversations, mut claimed_by) = (Vec::new(), Vec::new(), Vec::new());
    for event in accepted.iter().filter(|event| event.kind == EventType::UserMessage) {
        let Some(request_id) = event.request_id.as_deref() else { continue };
        claimed.push(request_id);
        conversations.push(event.conversation_id.as_str());
        claimed_by.push(event.user());
    }
    if !claimed.is_empty() {
        execute(
            transaction,
            "INSERT INTO leases (\"user\", request_id, conversation_id, owner, expires_at)
             SELECT \"user\", request_id, conversation_id, $4, now() + make_interval(secs => $5)
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS claimed(\"user\", request_id, conversation_id)",
            &[&claimed_by, &claimed, &conversations, &owner, &LEASE.as_secs_f64()],
        )
        .await?;
    }
    Ok(())
}

/// Drops the leases of the requests the group ends and, after that, their followers: the
/// lease's deletion waited for every follower registering under its lock, so this later
/// statement sees them all.
async fn end_leases(
    transaction: &Transaction<'_>,
    accepted: &[&ChatEvent],
    settled: &mut Settled,
) -> Result<(), tokio_postgres::Error> {
    let (mut ended, mut ended_by) = (Vec::new(), Vec::new());
    for event in accepted.iter().filter(|event| event.extra.contains_key(END_KEY)) {
        let Some(request_id) = event.request_id.as_deref() else { continue };
        ended.push(request_id);
        ended_by.push(event.user());
    }
    if ended.is_empty() {
        return Ok(());
    }
    execute(
        transaction,
        "DELETE FROM leases WHERE (\"user\", request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        &[&ended_by, &ended],
    )
    .await?;
    let followed = query(
        transaction,
        "DELETE FROM followers WHERE (\"user\", request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
         RETURNING \"user\", request_id",
        &[&ended_by, &ended],
    )
    .await?;
    settled.followed.extend(followed.iter().map(|row| (row.get(0), row.get(1))));
    Ok(())
}

async fn prefetch(
    transaction: &Transaction<'_>,
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
    // Each conversation's newest and first row through the (conversation_id, seq) index, so
    // the cost does not grow with the conversation; both reads go out together.
    let known = async {
        query(
            transaction,
            "SELECT c.id, newest.seq, first.\"user\" FROM UNNEST($1::text[]) AS c(id)
         CROSS JOIN LATERAL (SELECT seq FROM events WHERE conversation_id = c.id ORDER BY seq DESC LIMIT 1) newest
         CROSS JOIN LATERAL (SELECT \"user\" FROM events WHERE conversation_id = c.id AND seq = 1) first",
            &[&conversations],
        )
        .await
    };
    let claims = async {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        query(
            transaction,
            "SELECT \"user\", request_id, conversation_id, id FROM events
             WHERE kind = 'user_message' AND (\"user\", request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            &[&users, &requests],
        )
        .await
    };
    let (known, claims) = futures::try_join!(known, claims)?;
    let mut ledger = Prefetched::default();
    for row in known {
        let conversation_id: String = row.get(0);
        ledger.last_seqs.insert(conversation_id.clone(), row.get::<_, i64>(1) as u64);
        ledger.owners.insert(conversation_id, row.get(2));
    }
    for row in claims {
        ledger.claims.insert((row.get(0), row.get(1)), Claim { conversation_id: row.get(2), event_id: row.get(3) });
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
