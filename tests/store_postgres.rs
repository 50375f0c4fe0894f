//! What only the PostgreSQL store does: the database itself refuses a second claim of a
//! user's `request_id` and a second row at a conversation's `seq`, whoever writes, and a
//! database of an earlier schema version is migrated with its rows. The contract both stores
//! keep is `store_conformance.rs`.

mod support;

use std::sync::Arc;

use futures::FutureExt;
use mcp_platform::store::memory::MemoryStore;
use mcp_platform::store::postgres::PostgresStore;
use mcp_platform::store::{EventStore, FrameBatch};
use support::postgres::Postgres;
use support::store::*;

/// An `events` row holding `event`, as a writer that bypassed the store would insert it.
fn insert_row(position: i64, event: &mcp_platform::store::ChatEvent, user: &str) -> String {
    let line = serde_json::to_string(event).unwrap();
    let request = event.request_id.as_deref().map_or("NULL".to_owned(), |request| format!("'{request}'"));
    format!(
        "INSERT INTO events (position, id, conversation_id, seq, request_id, \"user\", kind, timestamp, line, prev, hash)
         VALUES ({position}, '{id}', '{conversation}', {seq}, {request}, '{user}', '{kind}', '{timestamp}',
                 $line${line}$line$, '{prev}', '{hash}')",
        id = event.id,
        conversation = event.conversation_id,
        seq = event.seq,
        kind = serde_json::to_value(event.kind).unwrap().as_str().unwrap(),
        timestamp = event.timestamp,
        prev = event.prev,
        hash = event.hash,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_a_second_claim_and_a_second_seq() {
    let Some(bin) = support::postgres::available("the_database_refuses_a_second_claim_and_a_second_seq") else {
        return;
    };
    let mut server = Postgres::start(&bin);
    let url = server.database();
    let store = PostgresStore::open(&url, 2).await.unwrap();
    let stored = store.append(vec![user("a", "r-1", "hi")]).await.unwrap();
    let claim = &stored[0];

    let mut same_claim = claim.clone();
    same_claim.id = "another-event".into();
    same_claim.conversation_id = "elsewhere".into();
    same_claim.seq = 1;
    let refused = server.try_psql(&url, &insert_row(2, &same_claim, "anonymous")).unwrap_err();
    assert!(refused.contains("events_claims"), "{refused}");

    let mut same_seq = claim.clone();
    same_seq.id = "another-event".into();
    same_seq.request_id = Some("r-2".into());
    let refused = server.try_psql(&url, &insert_row(2, &same_seq, "anonymous")).unwrap_err();
    assert!(refused.contains("events_conversation_seq"), "{refused}");

    // Another user's equal request_id is another request, in the database too.
    server.psql(&url, &format!("BEGIN; {}; ROLLBACK", insert_row(2, &same_claim, "bob")));
    assert_eq!(server.psql(&url, "SELECT count(*) FROM events").trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_schema_version_2_is_migrated_with_its_rows() {
    let Some(bin) = support::postgres::available("a_database_of_schema_version_2_is_migrated_with_its_rows") else {
        return;
    };
    let mut server = Postgres::start(&bin);
    let url = server.database();
    server.psql(&url, include_str!("../src/store/postgres/migrations/0001_events.sql"));
    server.psql(&url, include_str!("../src/store/postgres/migrations/0002_leases.sql"));
    server.psql(
        &url,
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO schema_migrations (version, name) VALUES (1, 'events'), (2, 'leases')",
    );
    // Rows as a version-2 writer stored them: no `user` column filled, no token column.
    let memory = MemoryStore::new();
    let mut question = user("a", "r-1", "hi");
    question.user = "alice".into();
    let mut answer = assistant("a", "r-1", "5", "m");
    answer.user = "alice".into();
    let events = memory.append(vec![question, answer]).await.unwrap();
    for (position, event) in events.iter().enumerate() {
        server.psql(&url, &insert_row(position as i64 + 1, event, "anonymous"));
    }
    let last = events.last().unwrap();
    server.psql(&url, &format!("UPDATE chain_head SET position = 2, hash = '{}'", last.hash));

    let store = PostgresStore::open(&url, 2).await.unwrap();
    let versions = server.psql(&url, "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations");
    assert_eq!(versions.trim(), "1,2,3,4,5");
    let day = mcp_platform::store::chain::utc_day(&last.timestamp);
    assert_eq!(store.tokens_spent("alice", day).await.unwrap(), 42, "tokens filled from the lines");
    assert_eq!(store.request("alice", "r-1").await.unwrap(), events, "users filled from the lines");
    assert_eq!(store.conversations("alice").await.unwrap().len(), 1);
    let next = store.append(vec![user("b", "r-9", "after the migration")]).await.unwrap();
    assert_eq!(next[0].prev, last.hash, "the chain continues");
}

/// The next frames of `anonymous`'s request `request_id`.
fn batch<'a>(request_id: &'a str, first_seq: u64, frames: &'a [Arc<str>], terminal: bool) -> FrameBatch<'a> {
    FrameBatch { user: "anonymous", request_id, first_seq, frames, terminal }
}

/// Live resume on demand: the process running a request shares none of its frames until a
/// process on another host follows it. The owner hears of a follower by notification; when it
/// missed that, by its lease beat; at the latest, by the transaction that stores the request's
/// end. A follower that comes after the end finds no lease and reads the stored end instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_shared_only_once_a_follower_registers_and_a_late_follower_finds_the_end() {
    let test = "frames_are_shared_only_once_a_follower_registers_and_a_late_follower_finds_the_end";
    let Some(bin) = support::postgres::available(test) else { return };
    let mut server = Postgres::start(&bin);
    let url = server.database();
    let owner = PostgresStore::open(&url, 2).await.unwrap();
    let follower = PostgresStore::open(&url, 2).await.unwrap();
    let settled =
        |wanted: mcp_platform::store::FollowersWanted| tokio::time::timeout(std::time::Duration::from_secs(10), wanted);
    let end = |request: &str| mcp_platform::store::record::interrupted("a".into(), request.into(), "anonymous".into());
    let frames: Vec<Arc<str>> = vec!["one".into(), "two".into(), "three".into()];

    // Followed while running: the notification wakes the owner, which shares from the first frame.
    owner.append(vec![user("a", "r-1", "hi")]).await.unwrap();
    let wanted = owner.followers("anonymous", "r-1");
    let mut feed = follower.follow_frames("anonymous", "r-1").await.unwrap().expect("r-1 is running");
    assert!(settled(wanted).await.expect("the owner hears of its follower"));
    owner.share_frames(batch("r-1", 0, &frames[..2], false)).await.unwrap();
    owner.share_frames(batch("r-1", 2, &frames[2..], true)).await.unwrap();
    let mut relayed = Vec::new();
    while let Some(frame) = feed.recv().await {
        relayed.push(frame.unwrap());
    }
    assert_eq!(relayed.iter().map(|shared| shared.frame.clone()).collect::<Vec<_>>(), frames);
    assert!(relayed.last().unwrap().terminal);

    // A follower whose notification the owner never got: the lease beat finds it.
    owner.append(vec![user("a", "r-2", "hi")]).await.unwrap();
    let mut wanted = owner.followers("anonymous", "r-2");
    server.psql(&url, "INSERT INTO followers (\"user\", request_id) VALUES ('anonymous', 'r-2')");
    assert_eq!((&mut wanted).now_or_never(), None, "nothing told the owner yet");
    owner.renew_leases(&[("anonymous".into(), "r-2".into())]).await.unwrap();
    assert_eq!(wanted.now_or_never(), Some(true));

    // ...and when the request ends before the beat, the transaction storing the end finds it.
    owner.append(vec![user("a", "r-3", "hi")]).await.unwrap();
    let wanted = owner.followers("anonymous", "r-3");
    server.psql(&url, "INSERT INTO followers (\"user\", request_id) VALUES ('anonymous', 'r-3')");
    owner.append(vec![end("r-3")]).await.unwrap();
    assert_eq!(wanted.now_or_never(), Some(true), "settled before the append returned");

    // Nobody follows: settled unfollowed at the end, nothing shared; a later follower finds the
    // request ended.
    owner.append(vec![user("a", "r-4", "hi")]).await.unwrap();
    let wanted = owner.followers("anonymous", "r-4");
    owner.append(vec![end("r-4")]).await.unwrap();
    assert_eq!(wanted.now_or_never(), Some(false));
    assert!(follower.follow_frames("anonymous", "r-4").await.unwrap().is_none());
    let shared = server.psql(&url, "SELECT string_agg(DISTINCT request_id, ',') FROM frames");
    assert_eq!(shared.trim(), "r-1", "only the followed request that shared wrote frames");
    assert_eq!(server.psql(&url, "SELECT count(*) FROM followers WHERE request_id IN ('r-3', 'r-4')").trim(), "0");
}
