//! Live resume on demand, the owner's side: a process shares the frames of a request it runs
//! only once a process on another host follows it, so that the common request, which nobody
//! follows, writes no frame and sends no notification.
//!
//! A follower registers in `followers` while it holds a key-share lock on the request's lease
//! (see [`super::frames`]) and notifies `followers`. The owner learns of it three ways, each
//! enough on its own for the answer to arrive:
//! - the notification, on the one connection per process that `LISTEN`s (at once);
//! - the lease beat, which looks up the followers of the requests still waiting (a
//!   notification lost to a reconnect costs at most [`super::RENEW_EVERY`]);
//! - the request's end: the transaction storing it deletes the lease, which waits for a
//!   registering follower's lock, and then deletes the request's followers and sees every one
//!   that registered. A follower that comes after finds no lease and reads the stored end.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::store::FollowersWanted;

/// How long the owner waits before listening again after its connection failed.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// The requests this process claimed whose followers are not known yet, by `(user, request_id)`.
#[derive(Default)]
pub(super) struct Waiting(Mutex<HashMap<(String, String), oneshot::Sender<bool>>>);

impl Waiting {
    pub fn register(&self, user: &str, request_id: &str) -> FollowersWanted {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert((user.to_owned(), request_id.to_owned()), sender);
        // A store dropped before the request ended shares nothing more.
        Box::pin(async move { receiver.await.unwrap_or(false) })
    }

    /// Settles a request: `followed` or not. A request not waiting (another process's, or one
    /// already settled) is left alone.
    pub fn settle(&self, user: &str, request_id: &str, followed: bool) {
        if let Some(sender) = self.lock().remove(&(user.to_owned(), request_id.to_owned())) {
            let _ = sender.send(followed);
        }
    }

    pub fn keys(&self) -> Vec<(String, String)> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), oneshot::Sender<bool>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Listens for followers of this process's requests until `stop`, reconnecting after a
/// failure (the lease beat covers what it misses meanwhile).
pub(super) async fn listen(url: String, owner: String, waiting: Weak<Waiting>, stop: CancellationToken) {
    loop {
        let listened = tokio::select! {
            _ = stop.cancelled() => return,
            listened = listen_once(&url, &owner, &waiting) => listened,
        };
        if let Err(error) = listened {
            tracing::warn!(%error, "cannot listen for followers of this process's requests; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELISTEN_AFTER) => {}
        }
    }
}

async fn listen_once(url: &str, owner: &str, waiting: &Weak<Waiting>) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |context| connection.poll_message(context));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if notified.send(notification.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute("LISTEN followers").await?;
    while let Some(payload) = notifications.recv().await {
        let Ok((named_owner, user, request_id)) = serde_json::from_str::<(String, String, String)>(&payload) else {
            continue;
        };
        let Some(waiting) = waiting.upgrade() else { return Ok(()) };
        if named_owner == owner {
            waiting.settle(&user, &request_id, true);
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}
