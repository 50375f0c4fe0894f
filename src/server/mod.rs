//! The HTTP and WebSocket face of the server (SPEC §2, §3), its start-up and its shutdown.
//!
//! Shutdown order matters: first refuse new work (readiness 503, new chats 503), then let
//! running turns finish within the grace period, then cancel what is left (those clients get
//! a 503), then close the sockets with 1001, then stop the MCP servers. An upgraded socket
//! outlives its HTTP connection, so sockets are tracked here, apart from the listener's
//! connections.
//!
//! Start-up is visible: [`Starting`] binds the port and answers `/healthz` (200) and
//! `/readyz` (503) before the store is open; the application's routes replace those once it
//! is built ([`Starting::serve`]).

mod admission;
mod http;
mod limits;
mod listener;
mod page;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::chat::ChatService;
use crate::config::Settings;
use listener::{ConnectionLimits, ConnectionSlot, HttpServer};

/// A frame this many times `websocket.max_message_bytes` is not even read: the socket is
/// closed with 1009. Frames between the two limits get a 413 error and the socket stays.
const HARD_LIMIT_FACTOR: usize = 16;
/// Read buffer of each WebSocket: a client sends small requests (a chat's text, a cancel), and
/// every idle socket holds this buffer; larger frames still arrive, in several reads.
const SOCKET_READ_BUFFER_BYTES: usize = 2048;
/// Write buffer of each WebSocket: answers stream out in chunks of a few hundred bytes.
const SOCKET_WRITE_BUFFER_BYTES: usize = 4096;
/// How long closing sockets may take once their last messages are out.
const SOCKET_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

/// What every handler shares.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub chat: Arc<ChatService>,
    pub mcp: Arc<crate::mcp::McpManager>,
    /// What opening the store found wrong but served anyway (a broken hash chain), for `/readyz`.
    store_problem: Option<String>,
    authenticator: Arc<Authenticator>,
    limits: Arc<limits::Limits>,
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

/// The listener during start-up: `/healthz` answers and `/readyz` says 503 from the moment
/// the port is bound, while the store opens and the provider is configured.
pub struct Starting {
    http: HttpServer,
}

impl Starting {
    pub fn listen(listener: TcpListener, settings: &Settings) -> std::io::Result<Self> {
        let limits = ConnectionLimits {
            max_connections: settings.limits.max_connections as usize,
            header_timeout: seconds(settings.websocket.header_timeout),
        };
        Ok(Self { http: HttpServer::start(listener, http::starting_routes(), limits)? })
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr
    }

    /// Serves the application on this listener from now on.
    pub fn serve(
        self,
        settings: Arc<Settings>,
        chat: Arc<ChatService>,
        mcp: Arc<crate::mcp::McpManager>,
        authenticator: Arc<Authenticator>,
        store_problem: Option<String>,
    ) -> RunningServer {
        let limits = limits::Limits::new(settings.limits.clone());
        let state = Arc::new(AppState {
            settings,
            chat,
            mcp,
            store_problem,
            authenticator,
            limits,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            forwarders: TaskTracker::new(),
        });
        self.http.set_routes(router(state.clone()));
        RunningServer { addr: self.http.addr, state, http: self.http }
    }

    /// Stops a start-up that never served.
    pub async fn stop(self) {
        self.http.stop().await;
    }
}

/// A server running on a listener, as `serve` and the tests start it.
pub struct RunningServer {
    pub addr: SocketAddr,
    state: Arc<AppState>,
    http: HttpServer,
}

impl RunningServer {
    /// Serves `chat` (and `mcp` for `/api`) to the callers `authenticator` admits, on
    /// `listener`; see [`crate::app::App::serve`].
    pub async fn start(
        settings: Arc<Settings>,
        chat: Arc<ChatService>,
        mcp: Arc<crate::mcp::McpManager>,
        authenticator: Arc<Authenticator>,
        listener: TcpListener,
    ) -> std::io::Result<Self> {
        Ok(Starting::listen(listener, &settings)?.serve(settings, chat, mcp, authenticator, None))
    }

    /// The one shutdown path of a serving process: refuse new work, drain turns, close the
    /// sockets, stop the HTTP server, then the MCP servers.
    pub async fn shutdown(self) {
        let grace = seconds(self.state.settings.shutdown.grace_seconds.max(0.0));
        tracing::info!(grace_seconds = grace.as_secs_f64(), "shutting down: draining running turns");
        self.state.chat.drain(grace).await;
        // Let followers deliver the last messages of the drained turns before the sockets close;
        // a client that does not read is cut off by the writer's own slow-client timeout.
        self.state.forwarders.close();
        let slow_client = seconds(self.state.settings.websocket.slow_client_timeout);
        let _ = tokio::time::timeout(slow_client, self.state.forwarders.wait()).await;
        self.state.shutdown.cancel();
        self.state.connections.close();
        let _ = tokio::time::timeout(SOCKET_CLOSE_TIMEOUT, self.state.connections.wait()).await;
        self.http.stop().await;
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
        .route("/api/me", get(http::me))
        .route("/api/servers", get(http::servers))
        .route("/api/servers/{name}/restart", axum::routing::post(http::restart_server))
        .route("/api/servers/{name}/breaker/reset", axum::routing::post(http::reset_breaker))
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

/// Admits a socket only after its `Origin`, credential and connection limits check out, so a
/// refused one gets a plain HTTP answer and no upgrade.
async fn upgrade(
    State(state): State<Arc<AppState>>,
    Extension(slot): Extension<ConnectionSlot>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !state.is_ready() {
        return http::unavailable("the server is shutting down; connect to another instance").into_response();
    }
    if let Err(refused) = admission::check_origin(&headers, &state.settings.auth.allowed_origins) {
        return refused.into_response();
    }
    let authenticated = match admission::authenticate_upgrade(&state, &headers) {
        Ok(authenticated) => authenticated,
        Err(refused) => return refused.into_response(),
    };
    let user_slot = match state.limits.open_socket(&authenticated.principal.user, peer.ip()) {
        Ok(user_slot) => user_slot,
        Err(message) => return admission::Refused::too_many(message).into_response(),
    };
    let limit = state.hard_frame_limit();
    let tracked = state.clone();
    upgrade
        // Browsers offer it beside `bearer.<credential>` (SPEC §8) and fail the socket unless one is selected.
        .protocols([ws::SUBPROTOCOL])
        // tungstenite's default buffers are 128 KiB each; an idle socket should cost a few KiB.
        .read_buffer_size(SOCKET_READ_BUFFER_BYTES)
        .write_buffer_size(SOCKET_WRITE_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tracked.connections.track_future(async move {
                ws::serve_socket(socket, state, authenticated).await;
                // The socket counts toward limits.max_connections and the per-user and
                // per-address limits until here.
                drop(user_slot);
                drop(slot);
            })
        })
}
