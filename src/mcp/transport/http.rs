//! The streamable HTTP transport: a remote MCP server at a URL, reached with rmcp's
//! streamable HTTP client. There is no process to watch, so the link learns that the server
//! is gone from the transport (a stream that closes, a request that cannot be sent, a
//! session the server no longer knows) and from a heartbeat: a `ping` (or its 2026-07-28
//! equivalent) every [`HEARTBEAT_INTERVAL`], so a server that was stopped, restarted or hangs
//! is noticed while no call is running, and the supervisor reconnects with a new session
//! and lists again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::{
    Peer, RoleClient,
    model::{ClientRequest, DiscoverRequest, DiscoverRequestParams, PingRequest},
    service::ServiceError,
    transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
};
use tokio_util::sync::CancellationToken;

use super::{LinkEnd, McpLink, McpTransport, Opening, WatchedTransport};
use crate::mcp::session::{self, ClientEvents};

/// How often a connected remote server is pinged.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a ping may go unanswered before the server counts as gone.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpTransport {
    server: String,
    url: String,
    /// Validated when servers_config.json was loaded; kept as given so a value that still
    /// fails here is reported by name, never by value.
    headers: BTreeMap<String, String>,
}

impl HttpTransport {
    pub fn new(server: &str, url: &str, headers: &BTreeMap<String, String>) -> Self {
        Self { server: server.to_owned(), url: url.to_owned(), headers: headers.clone() }
    }

    fn header_map(&self) -> Result<HashMap<HeaderName, HeaderValue>, String> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let invalid = || {
                    format!("header `{name}` of server `{}` cannot be sent; fix it in servers_config.json", self.server)
                };
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
                let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect()
    }
}

/// rmcp's HTTP client is built without a bundled TLS crypto provider (the default one needs
/// a C toolchain); the binary uses ring, as the LLM client does. Installing it twice is a
/// no-op, so every transport may ask.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl McpTransport for HttpTransport {
    fn open(&self, client: ClientEvents) -> Result<Opening, String> {
        install_crypto_provider();
        // A server that forgot our session (it restarted) must be met with a new session
        // *and* new lists, which only the supervisor does: the transport must not quietly
        // open a session of its own.
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.as_str())
            .custom_headers(self.header_map()?)
            .reinit_on_expired_session(false);
        let end = LinkEnd::default();
        let transport =
            WatchedTransport { inner: StreamableHttpClientTransport::from_config(config), end: end.clone() };
        let stopped = CancellationToken::new();
        let heartbeat_end = end.clone();
        let heartbeat_stopped = stopped.clone();
        let handshake = Box::pin(async move {
            let service = session::handshake(client, transport).await?;
            tokio::spawn(heartbeat(service.peer().clone(), heartbeat_end, heartbeat_stopped));
            Ok(service)
        });
        Ok(Opening { link: Box::new(HttpLink { end, stopped }), handshake })
    }
}

/// The cheapest request the session's revision has: `ping` up to 2025-11-25; from
/// 2026-07-28 on, which drops `ping`, `server/discover`.
fn liveness_request(peer: &Peer<RoleClient>) -> ClientRequest {
    let modern = peer.peer_info().is_some_and(|info| !info.protocol_version.has_initialize());
    if modern {
        ClientRequest::DiscoverRequest(DiscoverRequest::new(DiscoverRequestParams {}))
    } else {
        ClientRequest::PingRequest(PingRequest::default())
    }
}

/// Pings until the link stops, firing `end` when a ping fails or goes unanswered.
async fn heartbeat(peer: Peer<RoleClient>, end: LinkEnd, stopped: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = stopped.cancelled() => return,
            _ = end.fired.cancelled() => return,
        }
        let ping = peer.send_request(liveness_request(&peer));
        let failure = tokio::select! {
            answer = tokio::time::timeout(PING_TIMEOUT, ping) => match answer {
                // Any answer proves the server there and our session known.
                Ok(Ok(_) | Err(ServiceError::McpError(_))) => continue,
                Ok(Err(error)) => format!("the server did not answer a ping: {error}"),
                Err(_) => format!("the server did not answer a ping within {}s", PING_TIMEOUT.as_secs()),
            },
            _ = stopped.cancelled() => return,
        };
        end.fire(|| failure);
        return;
    }
}

struct HttpLink {
    end: LinkEnd,
    stopped: CancellationToken,
}

#[async_trait]
impl McpLink for HttpLink {
    fn pid(&self) -> Option<u32> {
        None
    }

    async fn ended(&mut self) -> String {
        self.end.wait().await
    }

    fn last_words(&self) -> Option<String> {
        None
    }

    /// Closing the session already ended it on the server (`DELETE` of a legacy session);
    /// what is left here is the heartbeat.
    async fn stop(&mut self) {
        self.stopped.cancel();
    }
}
