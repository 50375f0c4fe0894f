//! `/ws/chat`: one reader loop, one writer task with a byte-bounded queue, and one forwarder
//! per running request the socket follows.
//!
//! The reader never waits for a turn, and a turn never waits for a socket: forwarders copy a
//! run's messages into the writer's queue at the client's pace.
//!
//! # What one socket can make the server hold
//! Everything queued for the client (answers, replays, pongs, errors) takes its size from one
//! budget of `websocket.send_buffer_bytes`. Whoever queues waits while the budget is spent,
//! the reader included, so a client that does not read stops being read (backpressure) and
//! its frames stay in the kernel's socket buffer instead of becoming work here. A budget that
//! stays spent for `websocket.slow_client_timeout` closes the socket with 1008. A finished
//! request's replay is sent by the reader itself, so a socket has at most one replay in
//! memory at a time; live requests it follows (chats, resumes, duplicate chats of running
//! requests) count toward `max_in_flight_per_connection`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use super::{AppState, seconds};
use crate::auth::{Authenticated, Principal};
use crate::chat::{Run, SerializedMessage, Subscription};
use crate::protocol::{self, ClientMessage, ErrorBody, ServerMessage};
use crate::ready::Round;

/// The WebSocket subprotocol of this protocol (SPEC §8), selected whenever a client offers it.
pub const SUBPROTOCOL: &str = "mcp-platform.v1";
/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time a client closed by policy gets to read again and learn why: one that was
/// busy for a moment (a pause, a loaded machine) still gets the reason, not a reset.
const POLICY_CLOSE_WINDOW: Duration = Duration::from_secs(5);
/// `cancel`s remembered per socket, so a repeated one is answered once (SPEC §2.2: nothing
/// follows a request's terminal message).
const REMEMBERED_CANCELS: usize = 256;

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

/// A frame in the writer's queue, holding its share of the socket's byte budget until sent.
struct Queued {
    frame: SerializedMessage,
    _budget: OwnedSemaphorePermit,
}

/// One socket's shared state.
struct Connection {
    /// Who the socket acts as, for every request it sends.
    principal: Principal,
    /// Unbounded because the budget bounds it; futures' channel allocates per message, where
    /// tokio's allocates a block of 32 slots up front, a kilobyte on every idle socket.
    queue: mpsc::UnboundedSender<Queued>,
    /// One permit per byte of `websocket.send_buffer_bytes`: what bounds `queue`.
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    slow_client_timeout: Duration,
    /// Cancelled to end the connection; the writer then sends `close_frame`.
    closing: CancellationToken,
    close_frame: Mutex<Option<(u16, String)>>,
    /// Created at the first chat that names no conversation.
    conversation_id: String,
    /// Live runs this socket follows, for the in-flight limit.
    following: Mutex<Vec<Arc<Run>>>,
    /// `request_id`s this socket already cancelled (or was told it cannot cancel).
    cancels: Mutex<VecDeque<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connection {
    fn close(&self, code: u16, reason: impl Into<String>) {
        lock(&self.close_frame).get_or_insert((code, reason.into()));
        self.closing.cancel();
    }

    /// How long the frame being written, and then the close frame, may take once closing. A
    /// client closed for not reading gets at least as long as it had to start reading, so one
    /// that reads again can still learn why.
    fn close_window(&self) -> Duration {
        match *lock(&self.close_frame) {
            Some((CLOSE_POLICY, _)) => self.slow_client_timeout.max(POLICY_CLOSE_WINDOW),
            _ => CLOSE_TIMEOUT,
        }
    }

    /// Queues a frame once the budget has room for it; false once the connection is gone. A
    /// budget that stays spent closes it.
    async fn send(&self, frame: SerializedMessage) -> bool {
        // A frame larger than the whole budget waits for all of it, so it still goes out alone.
        let cost = u32::try_from(frame.len()).unwrap_or(u32::MAX).clamp(1, self.budget_bytes);
        // While the client keeps up the budget has room: the frame is queued without the timer
        // and the closing watch that waiting needs, each registered and taken off per frame.
        let permit = match self.budget.clone().try_acquire_many_owned(cost) {
            Ok(permit) => permit,
            Err(_) => match self.wait_for_budget(cost).await {
                Some(permit) => permit,
                None => return false,
            },
        };
        self.queue.unbounded_send(Queued { frame, _budget: permit }).is_ok()
    }

    /// Waits for `cost` bytes of the budget; `None` once the connection is gone, or after
    /// closing it when the budget stayed spent for `websocket.slow_client_timeout`.
    async fn wait_for_budget(&self, cost: u32) -> Option<OwnedSemaphorePermit> {
        let permit = tokio::select! {
            permit = tokio::time::timeout(self.slow_client_timeout, self.budget.clone().acquire_many_owned(cost)) => permit,
            _ = self.closing.cancelled() => return None,
        };
        match permit {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_closed)) => None,
            Err(_) => {
                tracing::warn!(
                    buffered_bytes = self.budget_bytes,
                    "client stopped reading; disconnecting it (websocket.slow_client_timeout)"
                );
                self.close(CLOSE_POLICY, "client too slow: its send buffer stayed full");
                None
            }
        }
    }

    async fn reply(&self, message: ServerMessage) -> bool {
        self.send(message.to_json().into()).await
    }

    fn in_flight(&self) -> usize {
        let mut following = lock(&self.following);
        following.retain(|run| !run.is_finished());
        following.len()
    }

    /// Whether this is the first `cancel` of `request_id` on this socket.
    fn first_cancel(&self, request_id: &str) -> bool {
        let mut cancels = lock(&self.cancels);
        if cancels.iter().any(|known| known == request_id) {
            return false;
        }
        if cancels.len() == REMEMBERED_CANCELS {
            cancels.pop_front();
        }
        cancels.push_back(request_id.to_owned());
        true
    }
}

pub async fn serve_socket(socket: WebSocket, state: Arc<AppState>, authenticated: Authenticated) {
    let _open = crate::metrics::Open::socket();
    let (sink, mut stream) = socket.split();
    let (queue, outgoing) = mpsc::unbounded();
    let websocket = &state.settings.websocket;
    let budget_bytes =
        u32::try_from(websocket.send_buffer_bytes).unwrap_or(u32::MAX).min(Semaphore::MAX_PERMITS as u32);
    let credential_expired = credential_expiry(authenticated.expires_at);
    tokio::pin!(credential_expired);
    let connection = Arc::new(Connection {
        principal: authenticated.principal,
        queue,
        budget: Arc::new(Semaphore::new(budget_bytes as usize)),
        budget_bytes,
        slow_client_timeout: seconds(websocket.slow_client_timeout),
        closing: state.shutdown.child_token(),
        close_frame: Mutex::new(None),
        conversation_id: uuid::Uuid::now_v7().to_string(),
        following: Mutex::new(Vec::new()),
        cancels: Mutex::new(VecDeque::new()),
    });
    let writer = tokio::spawn(write_frames(sink, outgoing, connection.clone()));
    let first_frame_timeout = seconds(websocket.first_frame_timeout);
    let mut first = true;
    let mut peer_closed = false;
    loop {
        let next = async {
            if first {
                tokio::time::timeout(first_frame_timeout, stream.next()).await.map_err(|_| ())
            } else {
                Ok(stream.next().await)
            }
        };
        let message = tokio::select! {
            _ = connection.closing.cancelled() => break,
            () = &mut credential_expired => {
                // Its requests keep running; the client resumes them with a fresh credential.
                connection.close(CLOSE_POLICY, "credential expired");
                break;
            }
            message = next => message,
        };
        first = false;
        let message = match message {
            Ok(message) => message,
            Err(()) => {
                let reason =
                    format!("no frame within {}s (websocket.first_frame_timeout)", first_frame_timeout.as_secs_f64());
                connection.close(CLOSE_POLICY, reason);
                break;
            }
        };
        match message {
            Some(Ok(Message::Text(text))) => handle_frame(text.as_str(), &connection, &state).await,
            Some(Ok(Message::Binary(_))) => {
                let error =
                    ErrorBody::new(400, "binary frames are not supported; send each message as a JSON text frame");
                connection.reply(ServerMessage::rejection(None, error)).await;
            }
            Some(Ok(Message::Close(_))) | None => {
                peer_closed = true;
                connection.close(CLOSE_NORMAL, "");
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "websocket read failed");
                let (code, reason) = match error.into_inner().downcast_ref::<tungstenite::Error>() {
                    Some(tungstenite::Error::Capacity(_)) => {
                        (CLOSE_TOO_BIG, format!("frame over the hard limit of {} bytes", state.hard_frame_limit()))
                    }
                    Some(tungstenite::Error::Utf8(_)) => {
                        (CLOSE_INVALID_DATA, "text frame is not valid UTF-8".to_owned())
                    }
                    _ => (CLOSE_PROTOCOL, "websocket protocol error".to_owned()),
                };
                peer_closed = true;
                connection.close(code, reason);
                break;
            }
        }
    }
    // Requests keep running without their socket; only this socket's forwarders stop.
    connection.closing.cancel();
    let _ = writer.await;
    if !peer_closed {
        // A server shutting down does not wait for clients to answer.
        tokio::select! {
            _ = tokio::time::timeout(connection.close_window(), until_peer_closes(stream)) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

/// Reads and drops frames until the client answers our close frame. Dropping a socket with
/// unread bytes makes the kernel reset the connection, and a reset discards what the client
/// had not read yet: the close frame that says why it was closed.
async fn until_peer_closes(mut stream: futures::stream::SplitStream<WebSocket>) {
    while let Some(Ok(message)) = stream.next().await {
        if matches!(message, Message::Close(_)) {
            return;
        }
    }
}

/// Resolves when a credential that expires at `expires_at` stops being valid; never for one
/// that does not expire.
async fn credential_expiry(expires_at: Option<std::time::SystemTime>) {
    match expires_at {
        Some(at) => {
            let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

async fn write_frames(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut outgoing: mpsc::UnboundedReceiver<Queued>,
    connection: Arc<Connection>,
) {
    let mut batch = Vec::new();
    // One watch for the whole connection rather than one registered per frame.
    let closing = connection.closing.clone().cancelled_owned();
    tokio::pin!(closing);
    // Queued frames go out before the close: a drained turn's last messages reach the client.
    // Only a client that does not read loses them, after the close timeout.
    loop {
        let queued = tokio::select! {
            biased;
            queued = outgoing.next() => queued,
            () = &mut closing => break,
        };
        let Some(queued) = queued else { break };
        batch.push(queued);
        gather_batch(&mut outgoing, &mut batch).await;
        let written = {
            let write = write_batch(&mut sink, &batch);
            tokio::pin!(write);
            tokio::select! {
                written = &mut write => written,
                () = &mut closing => match tokio::time::timeout(connection.close_window(), &mut write).await {
                    Ok(written) => written,
                    Err(_) => break,
                },
            }
        };
        if written.is_err() {
            connection.closing.cancel();
            return;
        }
        // Only now, with the frames in the kernel's socket buffer, do they leave the budget:
        // a client that stops reading keeps it spent and is closed in time.
        batch.clear();
    }
    let (code, reason) =
        lock(&connection.close_frame).clone().unwrap_or((CLOSE_GOING_AWAY, "server shutting down".to_owned()));
    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let _ = tokio::time::timeout(connection.close_window(), sink.send(close)).await;
}

/// Adds to `batch` the frames queued now and in the next few scheduler rounds
/// ([`crate::ready`]), up to about one write buffer: the frames of one model read reach the
/// queue one task hand-off apart.
async fn gather_batch(outgoing: &mut mpsc::UnboundedReceiver<Queued>, batch: &mut Vec<Queued>) {
    let mut bytes: usize = batch.iter().map(|queued| queued.frame.len()).sum();
    crate::ready::gather(|| {
        let before = batch.len();
        while bytes < super::SOCKET_WRITE_BUFFER_BYTES
            && let Ok(queued) = outgoing.try_recv()
        {
            bytes += queued.frame.len();
            batch.push(queued);
        }
        if batch.len() == before || bytes >= super::SOCKET_WRITE_BUFFER_BYTES { Round::Enough } else { Round::More }
    })
    .await;
}

/// Writes `batch` with one flush, so the frames a busy socket has queued cost one system call
/// instead of one each.
async fn write_batch(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    batch: &[Queued],
) -> Result<(), axum::Error> {
    for queued in batch {
        sink.feed(Message::Text(Utf8Bytes::from(&*queued.frame))).await?;
    }
    sink.flush().await
}

async fn handle_frame(text: &str, connection: &Arc<Connection>, state: &Arc<AppState>) {
    let limit = state.settings.websocket.max_message_bytes;
    if text.len() > limit {
        let error = ErrorBody::new(
            413,
            format!("frame of {} bytes is over the limit of {limit} bytes (websocket.max_message_bytes)", text.len()),
        );
        connection.reply(ServerMessage::rejection(protocol::peek_request_id(text), error)).await;
        return;
    }
    let message = match protocol::parse_client_message(text) {
        Ok(message) => message,
        Err(rejection) => {
            connection.reply(ServerMessage::rejection(rejection.request_id, rejection.error)).await;
            return;
        }
    };
    let request_id = message.request_id().to_owned();
    let subscription = match message {
        ClientMessage::Ping { request_id } => {
            connection.reply(ServerMessage::pong(&request_id)).await;
            return;
        }
        ClientMessage::Cancel { request_id } => {
            // The first cancel stops the request (its terminal message comes through its run) or
            // learns it is not running; a repeated one must not add frames after the terminal one.
            if connection.first_cancel(&request_id)
                && let Err(error) = state.chat.cancel(&connection.principal.user, &request_id)
            {
                connection.reply(ServerMessage::rejection(Some(request_id), error)).await;
            }
            return;
        }
        // Answers are acknowledged by the request's own `approval` / `elicitation_result`
        // chunk; only a refused one gets a reply here.
        ClientMessage::Approve { request_id, answer } => {
            if let Err(error) = state.chat.approve(&connection.principal.user, &request_id, answer) {
                connection.reply(ServerMessage::rejection(Some(request_id), error)).await;
            }
            return;
        }
        ClientMessage::Elicit { request_id, answer } => {
            if let Err(error) = state.chat.elicit(&connection.principal.user, &request_id, answer) {
                connection.reply(ServerMessage::rejection(Some(request_id), error)).await;
            }
            return;
        }
        _ if connection.in_flight() >= state.settings.websocket.max_in_flight_per_connection => {
            Err(in_flight_limit(state.settings.websocket.max_in_flight_per_connection))
        }
        ClientMessage::Chat { request_id, payload } => {
            let user = &connection.principal.user;
            match state.limits.admit_chat(user, state.chat.store().as_ref()).await {
                Ok(()) => state.chat.submit(user, request_id, payload, &connection.conversation_id).await,
                Err(refused) => Err(refused),
            }
        }
        ClientMessage::Resume { request_id, after_seq } => {
            state.chat.resume(&connection.principal.user, &request_id, after_seq).await
        }
    };
    match subscription {
        // A finished request (a stored replay): sent from here, so the reader takes no other
        // frame meanwhile and the socket holds one replay at a time.
        Ok(subscription) if subscription.run.is_finished() => forward(subscription, connection.clone()).await,
        Ok(subscription) => {
            lock(&connection.following).push(subscription.run.clone());
            state.forwarders.spawn(forward(subscription, connection.clone()));
        }
        Err(error) => {
            connection.reply(ServerMessage::rejection(Some(request_id), error)).await;
        }
    }
}

fn in_flight_limit(limit: usize) -> ErrorBody {
    ErrorBody {
        data: Some(serde_json::json!({ "retry_after_seconds": 1 })),
        ..ErrorBody::new(
            429,
            format!(
                "{limit} requests already in flight on this connection (websocket.max_in_flight_per_connection); \
                 send it again once one of them has finished"
            ),
        )
    }
}

/// Copies a request's messages to the socket until the request ends or the socket goes.
async fn forward(Subscription { run, from }: Subscription, connection: Arc<Connection>) {
    let mut cursor = from;
    let closing = connection.closing.clone().cancelled_owned();
    tokio::pin!(closing);
    loop {
        let next = tokio::select! {
            () = &mut closing => return,
            next = run.next(cursor) => next,
        };
        let Some((messages, next_cursor)) = next else { return };
        cursor = next_cursor;
        for message in messages {
            if !connection.send(message).await {
                return;
            }
        }
    }
}
