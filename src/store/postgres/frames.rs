//! Live resume across replicas: a follower on another replica registers (see
//! [`super::followers`]), then the process running the request shares its numbered frames in
//! the `frames` table from the first on and wakes followers with `NOTIFY frames`; the follower
//! reads them from its cursor on, woken by `LISTEN frames`, and polls as well so that a lost
//! notification (a reconnect) costs a moment, never the answer.
//!
//! A request ends for its followers with its terminal frame, or with the empty terminal frame
//! the sweep writes for a request whose process is gone (its end is then in `events`).
//! Frames of ended requests are deleted a while after their end, by the lease beat.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{PostgresStore, unavailable};
use crate::store::{FrameBatch, FrameFeed, SharedFrame, StoreError};

/// How often a follower looks for frames without being woken.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// The notification payload naming a request: JSON, so no user or id can be mistaken for another.
fn channel_key(user: &str, request_id: &str) -> String {
    serde_json::json!([user, request_id]).to_string()
}

impl PostgresStore {
    pub(super) async fn insert_frames(&self, batch: FrameBatch<'_>) -> Result<(), StoreError> {
        let FrameBatch { user, request_id, first_seq, frames, terminal } = batch;
        if frames.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = (0..frames.len()).map(|at| (first_seq as usize + at) as i64).collect();
        let texts: Vec<&str> = frames.iter().map(|frame| &**frame).collect();
        let ends: Vec<bool> = (0..frames.len()).map(|at| terminal && at + 1 == frames.len()).collect();
        let client = self.client().await?;
        // One statement, one round trip: a data-modifying CTE always runs, and the notification
        // goes out when the insert commits.
        client
            .execute(
                "WITH shared AS (INSERT INTO frames (\"user\", request_id, seq, frame, terminal)
                                 SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::text[], $5::bool[])
                                 ON CONFLICT DO NOTHING)
                 SELECT pg_notify('frames', $6)",
                &[&user, &request_id, &seqs, &texts, &ends, &channel_key(user, request_id)],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(())
    }

    /// Starts following; the feed ends after the terminal frame or at the first error. `None`
    /// when the request holds no lease any more: its end is stored.
    pub(super) async fn follow(&self, user: &str, request_id: &str) -> Result<Option<FrameFeed>, StoreError> {
        let (listener, mut connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        let key = channel_key(user, request_id);
        let (wake, mut woken) = mpsc::unbounded_channel::<()>();
        tokio::spawn({
            let key = key.clone();
            async move {
                let mut messages = futures::stream::poll_fn(move |context| connection.poll_message(context));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(notification) = message
                        && notification.payload() == key
                        && wake.send(()).is_err()
                    {
                        return;
                    }
                }
            }
        });
        listener
            .batch_execute("LISTEN frames")
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        if !self.register_follower(user, request_id).await? {
            return Ok(None);
        }
        let (feed, frames) = mpsc::unbounded_channel();
        let (pool, shown_url, user, request_id) =
            (self.pool.clone(), self.shown_url.clone(), user.to_owned(), request_id.to_owned());
        tokio::spawn(async move {
            // Held so the LISTEN connection lives as long as the follower.
            let _listener = listener;
            let mut next_seq = 0i64;
            loop {
                let rows = match pool.get().await {
                    Ok(client) => client
                        .query(
                            "SELECT seq, frame, terminal FROM frames WHERE \"user\" = $1 AND request_id = $2 AND seq >= $3
                             ORDER BY seq",
                            &[&user, &request_id, &next_seq],
                        )
                        .await
                        .map_err(|error| error.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(message) => {
                        let _ = feed.send(Err(unavailable(&shown_url)(message)));
                        return;
                    }
                };
                for row in rows {
                    if row.get::<_, i64>(0) != next_seq {
                        let missing = format!("frame {next_seq} of the request was never shared");
                        let _ = feed.send(Err(unavailable(&shown_url)(missing)));
                        return;
                    }
                    let frame: String = row.get(1);
                    let terminal: bool = row.get(2);
                    next_seq += 1;
                    if feed.send(Ok(SharedFrame { frame: frame.into(), terminal })).is_err() || terminal {
                        return;
                    }
                }
                // Woken by a notification, or at the poll; a closed listener leaves the poll.
                let _ = tokio::time::timeout(POLL_EVERY, woken.recv()).await;
            }
        });
        Ok(Some(frames))
    }

    /// Registers interest in a running request and wakes its owner; false when the request is
    /// no longer running. The key-share lock on the lease makes the owner's end, which deletes
    /// the lease, wait for this registration and then see it (see [`super::followers`]).
    async fn register_follower(&self, user: &str, request_id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH running AS (SELECT owner FROM leases WHERE \"user\" = $1 AND request_id = $2 FOR KEY SHARE),
                      registered AS (INSERT INTO followers (\"user\", request_id) SELECT $1, $2 FROM running
                                     ON CONFLICT DO NOTHING)
                 SELECT pg_notify('followers', json_build_array(owner, $1::text, $2::text)::text) FROM running",
                &[&user, &request_id],
            )
            .await
            .map_err(|error| unavailable(&self.shown_url)(error.to_string()))?;
        Ok(!rows.is_empty())
    }
}
