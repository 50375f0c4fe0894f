//! What only the PostgreSQL store does: the database itself refuses a second claim of a
//! user's `request_id` and a second row at a conversation's `seq`, whoever writes, and a
//! database of an earlier schema version is migrated with its rows. The contract both stores
//! keep is `store_conformance.rs`.

mod support;

use mcp_platform::store::EventStore;
use mcp_platform::store::memory::MemoryStore;
use mcp_platform::store::postgres::PostgresStore;
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
    assert_eq!(versions.trim(), "1,2,3,4");
    let day = mcp_platform::store::chain::utc_day(&last.timestamp);
    assert_eq!(store.tokens_spent("alice", day).await.unwrap(), 42, "tokens filled from the lines");
    assert_eq!(store.request("alice", "r-1").await.unwrap(), events, "users filled from the lines");
    assert_eq!(store.conversations("alice").await.unwrap().len(), 1);
    let next = store.append(vec![user("b", "r-9", "after the migration")]).await.unwrap();
    assert_eq!(next[0].prev, last.hash, "the chain continues");
}
