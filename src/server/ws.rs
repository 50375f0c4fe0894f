//! `/ws/chat`: one reader loop, one writer task with a bounded queue, and one forwarder per
//! request the socket follows.
//!
//! The reader never waits for a turn, and a turn never waits for a socket: forwarders copy a
//! run's messages into the writer's queue at the client's pace. A client that stops reading
//! fills its queue; it is then disconnected with a close reason instead of being buffered
//! without bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::chat::{Run, SerializedMessage, Subscription};
use crate::protocol::{self, ClientMessage, ErrorBody, ServerMessage};

/// The WebSocket subprotocol of this protocol (SPEC §8), selected whenever a client offers it.
pub const SUBPROTOCOL: &str = "mcp-platform.v1";
/// Frames queued for one socket before its client counts as not reading.
const SEND_QUEUE_FRAMES: usize = 256;
/// How long a full queue may stay full before the client is disconnected.
pub const SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

/// One socket's shared state.
struct Connection {
    queue: mpsc::Sender<SerializedMessage>,
    /// Cancelled to end the connection; the writer then sends `close_frame`.
    closing: CancellationToken,
    close_frame: Mutex<Option<(u16, String)>>,
    /// Created at the first chat that names no conversation.
    conversation_id: String,
    /// Runs this socket follows, for the in-flight limit.
    following: Mutex<Vec<Arc<Run>>>,
}

impl Connection {
    fn close(&self, code: u16, reason: impl Into<String>) {
        let mut frame = self.close_frame.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        frame.get_or_insert((code, reason.into()));
        self.closing.cancel();
    }

    /// Queues a frame; false once the connection is gone. A queue that stays full closes it.
    async fn send(&self, frame: SerializedMessage) -> bool {
        match tokio::time::timeout(SLOW_CLIENT_TIMEOUT, self.queue.send(frame)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::warn!("client stopped reading; disconnecting it");
                self.close(CLOSE_POLICY, "client too slow: its send queue stayed full");
                false
            }
        }
    }

    async fn reply(&self, message: ServerMessage) -> bool {
        self.send(message.to_json().into()).await
    }

    fn in_flight(&self) -> usize {
        let mut following = self.following.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        following.retain(|run| !run.is_finished());
        following.len()
    }
}

pub async fn serve_socket(socket: WebSocket, state: Arc<AppState>) {
    let _open = crate::metrics::Open::socket();
    let (sink, mut stream) = socket.split();
    let (queue, outgoing) = mpsc::channel(SEND_QUEUE_FRAMES);
    let connection = Arc::new(Connection {
        queue,
        closing: state.shutdown.child_token(),
        close_frame: Mutex::new(None),
        conversation_id: uuid::Uuid::now_v7().to_string(),
        following: Mutex::new(Vec::new()),
    });
    let writer = tokio::spawn(write_frames(sink, outgoing, connection.clone()));
    loop {
        let message = tokio::select! {
            _ = connection.closing.cancelled() => break,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => handle_frame(text.as_str(), &connection, &state).await,
            Some(Ok(Message::Binary(_))) => {
                let error =
                    ErrorBody::new(400, "binary frames are not supported; send each message as a JSON text frame");
                connection.reply(ServerMessage::rejection(None, error)).await;
            }
            Some(Ok(Message::Close(_))) | None => {
                connection.close(CLOSE_NORMAL, "");
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "websocket read failed");
                if matches!(error.into_inner().downcast_ref(), Some(tokio_tungstenite::tungstenite::Error::Capacity(_)))
                {
                    connection.close(
                        CLOSE_TOO_BIG,
                        format!("frame over the hard limit of {} bytes", state.hard_frame_limit()),
                    );
                } else {
                    connection.close(CLOSE_PROTOCOL, "websocket protocol error");
                }
                break;
            }
        }
    }
    // Requests keep running without their socket; only this socket's forwarders stop.
    connection.closing.cancel();
    let _ = writer.await;
}

async fn write_frames(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut outgoing: mpsc::Receiver<SerializedMessage>,
    connection: Arc<Connection>,
) {
    // Queued frames go out before the close: a drained turn's last messages reach the client.
    // Only a client that does not read loses them, after the close timeout.
    loop {
        let frame = tokio::select! {
            biased;
            frame = outgoing.recv() => frame,
            _ = connection.closing.cancelled() => break,
        };
        let Some(frame) = frame else { break };
        let send = sink.send(Message::Text(Utf8Bytes::from(&*frame)));
        tokio::pin!(send);
        let sent = tokio::select! {
            sent = &mut send => sent,
            _ = connection.closing.cancelled() => match tokio::time::timeout(CLOSE_TIMEOUT, &mut send).await {
                Ok(sent) => sent,
                Err(_) => break,
            },
        };
        if sent.is_err() {
            connection.closing.cancel();
            return;
        }
    }
    let (code, reason) = connection
        .close_frame
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
        .unwrap_or((CLOSE_GOING_AWAY, "server shutting down".to_owned()));
    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close)).await;
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
            if let Err(error) = state.chat.cancel(&request_id) {
                connection.reply(ServerMessage::rejection(Some(request_id), error)).await;
            }
            return;
        }
        ClientMessage::Chat { request_id, payload } => {
            let limit = state.settings.websocket.max_in_flight_per_connection;
            if connection.in_flight() >= limit {
                Err(ErrorBody::new(
                    429,
                    format!(
                        "{limit} requests already in flight on this connection (websocket.max_in_flight_per_connection); wait for one to finish"
                    ),
                ))
            } else {
                state.chat.submit(request_id, payload, &connection.conversation_id).await
            }
        }
        ClientMessage::Resume { request_id, after_seq } => state.chat.resume(&request_id, after_seq).await,
    };
    match subscription {
        Ok(subscription) => {
            connection.following.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(subscription.run.clone());
            state.forwarders.spawn(forward(subscription, connection.clone()));
        }
        Err(error) => {
            connection.reply(ServerMessage::rejection(Some(request_id), error)).await;
        }
    }
}

/// Copies a request's messages to the socket until the request ends or the socket goes.
async fn forward(Subscription { run, from }: Subscription, connection: Arc<Connection>) {
    let mut cursor = from;
    loop {
        let messages = tokio::select! {
            _ = connection.closing.cancelled() => return,
            messages = run.next(cursor) => messages,
        };
        let Some(messages) = messages else { return };
        cursor += messages.len();
        for message in messages {
            if !connection.send(message).await {
                return;
            }
        }
    }
}
