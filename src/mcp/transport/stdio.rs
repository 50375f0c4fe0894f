//! The stdio transport: the server is a child process speaking MCP over its stdin and
//! stdout. The process itself (its group, its stderr, the stop sequence) is `process`; this
//! is what turns it into a [`McpLink`].

use std::time::Duration;

use async_trait::async_trait;
use rmcp::transport::async_rw::AsyncRwTransport;

use super::process::{self, McpServerProcess};
use super::{LinkEnd, McpLink, McpTransport, Opening, WatchedTransport};
use crate::config::ServerConfig;
use crate::mcp::session::{self, ClientEvents};

/// How long a stopping server gets at each step (after stdin closes, after SIGTERM).
const STOP_GRACE: Duration = Duration::from_secs(2);

pub struct StdioTransport {
    server: String,
    command: String,
    config: ServerConfig,
}

impl StdioTransport {
    pub fn new(server: &str, command: &str, config: &ServerConfig) -> Self {
        Self { server: server.to_owned(), command: command.to_owned(), config: config.clone() }
    }
}

impl McpTransport for StdioTransport {
    fn open(&self, client: ClientEvents) -> Result<Opening, String> {
        let (process, stdout, stdin) = process::spawn(&self.server, &self.command, &self.config)?;
        let stdout_closed = LinkEnd::default();
        let transport =
            WatchedTransport { inner: AsyncRwTransport::new_client(stdout, stdin), end: stdout_closed.clone() };
        let handshake = Box::pin(session::handshake(client, transport));
        let link = StdioLink { server: self.server.clone(), process, stdout_closed, ended: false };
        Ok(Opening { link: Box::new(link), handshake })
    }
}

struct StdioLink {
    server: String,
    process: McpServerProcess,
    stdout_closed: LinkEnd,
    /// Set once the process was seen gone, so a stop kills its leftovers at once.
    ended: bool,
}

fn exit_reason(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => format!("the process exited ({status})"),
        Err(error) => format!("the process could not be watched: {error}"),
    }
}

#[async_trait]
impl McpLink for StdioLink {
    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    async fn ended(&mut self) -> String {
        let reason = tokio::select! {
            status = self.process.exited() => exit_reason(status),
            _ = self.stdout_closed.wait() => {
                // Usually the process is exiting: its status says more than the EOF.
                match tokio::time::timeout(Duration::from_millis(200), self.process.exited()).await {
                    Ok(Ok(status)) => exit_reason(Ok(status)),
                    _ => "the server closed its stdout".to_owned(),
                }
            }
        };
        self.ended = true;
        reason
    }

    fn last_words(&self) -> Option<String> {
        self.process.last_stderr().map(|line| format!("its last stderr line: {line}"))
    }

    /// Stops the server the way the MCP stdio transport asks: the session's close already
    /// closed its stdin.
    async fn stop(&mut self) {
        if self.ended {
            self.process.reap_group().await;
        } else {
            let status = self.process.stop(STOP_GRACE).await;
            tracing::debug!(server = %self.server, ?status, "MCP server process stopped");
        }
    }
}
