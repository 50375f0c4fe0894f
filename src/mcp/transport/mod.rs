//! How an MCP server is reached: the seam between the supervisor, which only knows that a
//! server is up, down or being restarted, and what carries its session.
//!
//! The supervisor opens a [`McpLink`] through a [`McpTransport`], runs the handshake it
//! returns, watches the link for its end and stops it. Child processes, process groups and
//! stderr belong to the `stdio` implementation alone; a remote server (streamable HTTP) is
//! another implementation of the same two traits, with no pid and nothing to reap.

mod http;
mod process;
mod stdio;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use rmcp::{
    RoleClient,
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio_util::sync::CancellationToken;

use super::session::{ClientEvents, McpService};
use crate::config::ServerConfig;

/// How one configured MCP server is reached, once per start attempt.
pub trait McpTransport: Send + Sync {
    /// Starts reaching the server without waiting for it: the link, and the MCP handshake
    /// over it (`session::handshake`) with `client` receiving the server's notifications.
    /// The caller bounds the handshake with `connection_timeout`. An error says what to fix
    /// in `servers_config.json` (a command that does not exist, say).
    fn open(&self, client: ClientEvents) -> Result<Opening, String>;
}

/// A start attempt under way.
pub struct Opening {
    pub link: Box<dyn McpLink>,
    pub handshake: BoxFuture<'static, Result<McpService, String>>,
}

/// What carries one session, owned by the supervisor from [`McpTransport::open`] until
/// [`McpLink::stop`].
#[async_trait]
pub trait McpLink: Send {
    /// The local process serving the link, shown in `/api/servers`; a remote server has none.
    fn pid(&self) -> Option<u32>;

    /// Resolves when the link ends on its own, saying why (`the process exited (signal: 9)`).
    /// Cancel-safe, and asking again after it resolved answers again at once.
    async fn ended(&mut self) -> String;

    /// The last thing the server said on its own, phrased for an error (`its last stderr
    /// line: …`): usually why a start failed, so it is added to the start error.
    fn last_words(&self) -> Option<String>;

    /// Ends the link for good, after the session was closed: a live server is asked to stop
    /// and then forced, one that ended on its own is cleaned up at once. Nothing of the
    /// server is left behind when this returns.
    async fn stop(&mut self);
}

/// How the server of a `servers_config.json` entry is reached: validation leaves every
/// entry with either a `url` (remote) or a `command` (local).
pub fn for_server(server: &str, config: &ServerConfig) -> Box<dyn McpTransport> {
    match &config.url {
        Some(url) => Box::new(http::HttpTransport::new(server, url, &config.headers)),
        None => Box::new(stdio::StdioTransport::new(server, config.command.as_deref().unwrap_or_default(), config)),
    }
}

/// The end of a link as its transport saw it: fired once, with the first reason given.
#[derive(Clone, Default)]
struct LinkEnd {
    fired: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl LinkEnd {
    fn fire(&self, reason: impl FnOnce() -> String) {
        let mut slot = self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason());
        }
        drop(slot);
        self.fired.cancel();
    }

    async fn wait(&self) -> String {
        self.fired.cancelled().await;
        let slot = self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.clone().unwrap_or_else(|| "the connection closed".to_owned())
    }
}

/// An rmcp transport that reports when the server's side of it ends (a closed stdout, a
/// closed stream) or can no longer be sent to (a remote server that is gone or forgot our
/// session), so a link learns of it even before a pending request fails.
struct WatchedTransport<T> {
    inner: T,
    end: LinkEnd,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for WatchedTransport<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let sent = self.inner.send(item);
        let end = self.end.clone();
        async move {
            let outcome = sent.await;
            if let Err(error) = &outcome {
                end.fire(|| format!("sending to the server failed: {error}"));
            }
            outcome
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.end.fire(|| "the server closed the connection".to_owned());
        }
        message
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
