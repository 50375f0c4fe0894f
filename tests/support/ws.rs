//! A WebSocket test client that speaks the chat protocol.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected message may take before the test fails.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat")).await.expect("connect to /ws/chat");
        Self { socket }
    }

    /// Upgrades with these extra request headers (`Authorization`, `Origin`,
    /// `Sec-WebSocket-Protocol`); a refused upgrade is its HTTP answer. The socket's selected
    /// subprotocol comes with it.
    pub async fn connect_with(
        addr: std::net::SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<(Self, Option<String>), Refusal> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws/chat").into_client_request().expect("a request");
        for (name, value) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            request.headers_mut().insert(name, value.parse().expect("a header value"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, response)) => {
                let protocol = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|value| value.to_str().expect("ascii").to_owned());
                Ok((Self { socket }, protocol))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refusal {
                status: response.status().as_u16(),
                www_authenticate: response
                    .headers()
                    .get("www-authenticate")
                    .map(|value| value.to_str().expect("ascii").to_owned()),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().expect("ascii").to_owned()),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            }),
            Err(error) => panic!("upgrade failed without an HTTP answer: {error}"),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.expect("send frame");
    }

    /// The next JSON message; panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(RECEIVE_TIMEOUT, self.socket.next())
                .await
                .expect("a message within the timeout")
                .expect("socket still open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("server frames are JSON"),
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next close frame (code, reason), skipping other messages.
    pub async fn recv_close(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(RECEIVE_TIMEOUT, self.socket.next()).await.expect("close within the timeout") {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|frame| (u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Messages of `request_id` up to and including its terminal one; messages of other
    /// requests are set aside in `others`.
    pub async fn collect(&mut self, request_id: &str, others: &mut Vec<Value>) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await;
            if message["request_id"] != request_id {
                others.push(message);
                continue;
            }
            let terminal = is_terminal(&message);
            messages.push(message);
            if terminal {
                return messages;
            }
        }
    }

    /// Messages of `request_id` up to and including its first chunk of type `kind` (a
    /// question, to answer while the request waits); messages of other requests are skipped.
    pub async fn until_chunk(&mut self, request_id: &str, kind: &str) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await;
            if message["request_id"] != request_id {
                continue;
            }
            assert!(!is_terminal(&message), "the request ended before a {kind} chunk: {message}");
            let found = message["chunk"]["type"] == kind;
            messages.push(message);
            if found {
                return messages;
            }
        }
    }

    /// A chat request and everything it produces.
    pub async fn chat(&mut self, request_id: &str, payload: Value) -> Vec<Value> {
        self.send(serde_json::json!({"action": "chat", "request_id": request_id, "payload": payload})).await;
        self.collect(request_id, &mut Vec::new()).await
    }
}

/// The HTTP answer to a refused upgrade.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
}

pub fn is_terminal(message: &Value) -> bool {
    matches!(message["status"].as_str(), Some("complete" | "cancelled" | "error"))
}

/// The text chunks of a request, joined.
pub fn text_of(messages: &[Value]) -> String {
    chunks(messages, "text").iter().filter_map(|data| data.as_str()).collect()
}

/// The `data` of every chunk of one type.
pub fn chunks(messages: &[Value], kind: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|message| message["chunk"]["type"] == kind)
        .map(|message| message["chunk"]["data"].clone())
        .collect()
}

/// Asserts SPEC §2.2's framing: `processing` first at seq 0, one terminal last, seq gap-free.
pub fn assert_well_formed(messages: &[Value]) {
    assert_eq!(messages[0]["status"], "processing", "first message: {}", messages[0]);
    for (index, message) in messages.iter().enumerate() {
        assert_eq!(message["seq"], index as u64, "seq must be gap-free: {message}");
    }
    assert!(is_terminal(messages.last().expect("messages")), "last message must be terminal");
    assert_eq!(messages.iter().filter(|message| is_terminal(message)).count(), 1, "exactly one terminal message");
}
