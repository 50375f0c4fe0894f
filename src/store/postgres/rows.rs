//! The rows of the events table in chain order, for `export` and `replay --verify`: streamed,
//! so a large store is never held in memory.

use futures::{StreamExt, pin_mut};

use super::{connect_pool, redacted_url};
use crate::store::StoreError;

/// One row as stored: the line and the columns kept beside it.
#[derive(Debug)]
pub struct StoredRow {
    pub position: i64,
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub prev: String,
    pub hash: String,
    pub line: String,
}

/// Calls `visit` for each row (of one conversation when given) in chain order; stops at the
/// first error of `visit`.
pub async fn for_each_row<E: From<StoreError>>(
    url: &str,
    conversation: Option<&str>,
    mut visit: impl FnMut(StoredRow) -> Result<(), E>,
) -> Result<(), E> {
    let shown = redacted_url(url);
    let unavailable =
        |error: &dyn std::fmt::Display| StoreError::Unavailable { store: shown.clone(), message: error.to_string() };
    let pool = connect_pool(url, 1)?;
    let client = pool.get().await.map_err(|error| unavailable(&error))?;
    let sql = "SELECT position, id, conversation_id, seq, prev, hash, line FROM events
               WHERE $1::text IS NULL OR conversation_id = $1 ORDER BY position";
    let rows = client.query_raw(sql, [conversation]).await.map_err(|error| unavailable(&error))?;
    pin_mut!(rows);
    while let Some(row) = rows.next().await {
        let row = row.map_err(|error| unavailable(&error))?;
        visit(StoredRow {
            position: row.get(0),
            id: row.get(1),
            conversation_id: row.get(2),
            seq: row.get(3),
            prev: row.get(4),
            hash: row.get(5),
            line: row.get(6),
        })?;
    }
    Ok(())
}
