//! The HTTP and WebSocket face of the server (SPEC §2, §3), its start-up and its shutdown.
//!
//! Shutdown order matters: first refuse new work (readiness 503, new chats 503), then let
//! running turns finish within the grace period, then cancel what is left (those clients get
//! a 503), then close the sockets with 1001, then stop the MCP servers. `axum::serve`'s own
//! graceful shutdown does not wait for upgraded WebSocket tasks, so they are tracked here.

mod http;
mod page;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::ChatService;
use crate::config::Settings;

/// A frame this many times `websocket.max_message_bytes` is not even read: the socket is
/// closed with 1009. Frames between the two limits get a 413 error and the socket stays.
const HARD_LIMIT_FACTOR: usize = 16;
/// Read and write buffer of each WebSocket; larger frames still arrive, in several reads.
const SOCKET_BUFFER_BYTES: usize = 4096;
/// How long closing sockets may take once their last messages are out.
const SOCKET_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler shares.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub chat: Arc<ChatService>,
    pub mcp: Arc<crate::mcp::McpManager>,
    /// Cancelled when the sockets must close (after the turns are drained).
    shutdown: CancellationToken,
    /// One task per upgraded socket.
    connections: TaskTracker,
    /// One task per request a socket follows.
    forwarders: TaskTracker,
}

impl AppState {
    fn hard_frame_limit(&self) -> usize {
        self.settings.websocket.max_message_bytes.saturating_mul(HARD_LIMIT_FACTOR)
    }

    fn is_ready(&self) -> bool {
        self.chat.is_accepting()
    }
}

/// A server running on a listener, as `serve` and the tests start it.
pub struct RunningServer {
    pub addr: SocketAddr,
    state: Arc<AppState>,
    stopped: CancellationToken,
    serve_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Serves `chat` (and `mcp` for `/api`) on `listener`; see [`crate::app::App::serve`].
    pub async fn start(
        settings: Arc<Settings>,
        chat: Arc<ChatService>,
        mcp: Arc<crate::mcp::McpManager>,
        listener: TcpListener,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            settings,
            chat,
            mcp,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            forwarders: TaskTracker::new(),
        });
        let stopped = CancellationToken::new();
        let app = router(state.clone());
        // Small frames go out at once: with Nagle's algorithm a streamed chunk can wait for the
        // client's delayed ACK (~40 ms).
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(stopped.clone().cancelled_owned());
        let serve_task = tokio::spawn(async move { serve.await });
        Ok(Self { addr, state, stopped, serve_task })
    }

    /// The one shutdown path of a serving process: refuse new work, drain turns, close the
    /// sockets, stop the HTTP server, then the MCP servers.
    pub async fn shutdown(self) {
        let grace = Duration::from_secs_f64(self.state.settings.shutdown.grace_seconds.max(0.0));
        tracing::info!(grace_seconds = grace.as_secs_f64(), "shutting down: draining running turns");
        self.state.chat.drain(grace).await;
        // Let followers deliver the last messages of the drained turns before the sockets close;
        // a client that does not read is cut off by the writer's own slow-client timeout.
        self.state.forwarders.close();
        let _ = tokio::time::timeout(ws::SLOW_CLIENT_TIMEOUT, self.state.forwarders.wait()).await;
        self.state.shutdown.cancel();
        self.state.connections.close();
        let _ = tokio::time::timeout(SOCKET_CLOSE_TIMEOUT, self.state.connections.wait()).await;
        self.stopped.cancel();
        match self.serve_task.await {
            Ok(Err(error)) => tracing::error!(%error, "HTTP server failed"),
            Err(error) => tracing::error!(%error, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        self.state.mcp.shutdown().await;
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/assets/{version}/{*file}", get(page::asset))
        .route("/ws/chat", get(upgrade))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        // Admin-only endpoints (SPEC §3, §8): the admin check belongs on these two routes.
        .route("/api/servers", get(http::servers))
        .route("/metrics", get(http::metrics))
        .route("/api/tools", get(http::tools))
        .route("/api/prompts", get(http::prompts))
        .route("/api/resources", get(http::resources))
        .route("/api/conversations", get(http::conversations))
        .route("/api/conversations/{id}", get(http::conversation))
        // A 503 while draining is expected, not a failure worth an error line.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

async fn upgrade(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    if !state.is_ready() {
        return http::unavailable("the server is shutting down; connect to another instance").into_response();
    }
    let limit = state.hard_frame_limit();
    let tracked = state.clone();
    upgrade
        // Browsers offer it beside `bearer.<credential>` (SPEC §8) and fail the socket unless one is selected.
        .protocols([ws::SUBPROTOCOL])
        // tungstenite's default buffers are 128 KiB each; an idle socket should cost a few KiB.
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| tracked.connections.track_future(ws::serve_socket(socket, state.clone())))
}
