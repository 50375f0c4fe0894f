//! Versioned schema migrations, applied at start-up and by `mcp-platform migrate`.
//!
//! Each migration runs once, in its own transaction, recorded in `schema_migrations`. Several
//! replicas starting together take turns on a transaction-scoped advisory lock, so exactly one
//! applies a migration and the others find it applied.

use tokio_postgres::Client;

/// The migrations in order; a released one is never edited, a change is a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "events", include_str!("migrations/0001_events.sql")),
    (2, "leases", include_str!("migrations/0002_leases.sql")),
    (3, "per_user_reads", include_str!("migrations/0003_per_user_reads.sql")),
    (4, "frames", include_str!("migrations/0004_frames.sql")),
    (5, "followers", include_str!("migrations/0005_followers.sql")),
];

/// Any constant the whole database agrees on; it names this lock in `pg_locks`.
const MIGRATION_LOCK: i64 = 0x006d_6370_5f6d_6967;

/// Applies what is missing and returns the versions it applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let transaction = client.transaction().await?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        let done = transaction.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?;
        if done.is_none() {
            transaction.batch_execute(sql).await?;
            transaction
                .execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
                .await?;
            applied.push(*version);
        }
        transaction.commit().await?;
    }
    Ok(applied)
}
