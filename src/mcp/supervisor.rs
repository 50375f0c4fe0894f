//! Supervision of one MCP server: start, connection timeout, restart with backoff, giving
//! up, list_changed refreshes, shutdown. What it learns goes into the server's [`McpServer`],
//! which the registry, calls and views read.
//!
//! The supervisor reaches its server only through a [`McpTransport`]: it knows that a link
//! ended and why, never which process or connection carried it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::server::{McpServer, McpServerState, seconds};
use super::session::{self, ClientEvents, McpService, McpSession, list_all};
use super::transport::{McpLink, McpTransport, Opening};
use crate::config::McpConnectionSettings;

/// How long a session gets to close its transport before the link is stopped.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The delay before start attempt number `failed_attempts + 1`: doubling from the initial
/// delay, capped, plus up to 20% jitter so many servers do not retry in lockstep.
fn backoff(settings: &McpConnectionSettings, failed_attempts: u32) -> Duration {
    let exponent = failed_attempts.saturating_sub(1).min(30);
    let base = (settings.initial_reconnect_delay * f64::from(1u32 << exponent)).min(settings.max_reconnect_delay);
    let jittered = base * (1.0 + rand::random_range(0.0..=0.2));
    seconds(jittered.min(settings.max_reconnect_delay.max(base)))
}

/// Called whenever a server's lists (or whether it offers them) change.
pub type ListsChanged = Arc<dyn Fn() + Send + Sync>;

/// A running session and what carries it, owned by the server's supervisor task.
struct Live {
    link: Box<dyn McpLink>,
    service: McpService,
    session: Arc<McpSession>,
    /// Relays list_changed notifications of a session that has to listen for them.
    listener: Option<JoinHandle<()>>,
}

impl Live {
    /// Closes the session, then stops what carried it.
    async fn close(mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        let _ = self.service.close_with_timeout(SESSION_CLOSE_GRACE).await;
        self.link.stop().await;
    }
}

enum Ended {
    Shutdown,
    Died(String),
}

pub struct Supervisor {
    server: Arc<McpServer>,
    transport: Box<dyn McpTransport>,
    shutdown: CancellationToken,
    lists_changed: ListsChanged,
    /// Links of timed-out start attempts, still being stopped in the background so the
    /// first attempt is reported without waiting for their grace periods.
    stopping: Vec<JoinHandle<()>>,
    /// Whether the next start begins with the discovery probe. Until the server has
    /// connected, each failed attempt switches it, so a server that the probe breaks is
    /// met with the `initialize` handshake alone on the next attempt; once connected, what
    /// worked is kept for restarts.
    probe_discovery: bool,
    connected_once: bool,
}

impl Supervisor {
    pub fn new(
        server: Arc<McpServer>,
        transport: Box<dyn McpTransport>,
        shutdown: CancellationToken,
        lists_changed: ListsChanged,
    ) -> Self {
        Self {
            server,
            transport,
            shutdown,
            lists_changed,
            stopping: Vec::new(),
            probe_discovery: true,
            connected_once: false,
        }
    }

    /// Keeps the server running until shutdown or until it is given up. `started` fires when
    /// the first attempt has connected or failed.
    pub async fn run(mut self, started: oneshot::Sender<()>) {
        let server = self.server.clone();
        let settings = server.connection_settings.clone();
        let mut started = Some(started);
        let mut failed_attempts = 0u32;
        loop {
            match self.connect().await {
                Ok(mut live) => {
                    failed_attempts = 0;
                    self.connected_once = true;
                    tracing::info!(server = %server.name, "MCP server connected");
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                    match self.watch(&mut live).await {
                        Ended::Shutdown => {
                            server.session.send_replace(None);
                            live.session.mark_dead("the platform is shutting down");
                            live.close().await;
                            tracing::info!(server = %server.name, "MCP server stopped");
                            break;
                        }
                        Ended::Died(reason) => {
                            tracing::warn!(server = %server.name, "MCP server stopped: {reason}; restarting");
                            live.session.mark_dead(&reason);
                            server.session.send_replace(None);
                            server.set_status(|status| {
                                status.state = McpServerState::Restarting;
                                status.restarts += 1;
                                status.last_error = Some(reason);
                                status.pid = None;
                                status.protocol_version = None;
                            });
                            (self.lists_changed)();
                            live.close().await;
                        }
                    }
                }
                Err(error) => {
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                    failed_attempts += 1;
                    if !self.connected_once {
                        self.probe_discovery = !self.probe_discovery;
                    }
                    tracing::warn!(server = %server.name, attempt = failed_attempts, "MCP server did not start: {error}");
                    server.set_status(|status| {
                        status.failed_attempts = failed_attempts;
                        status.last_error = Some(error);
                        status.pid = None;
                        status.protocol_version = None;
                    });
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                }
            }
            if failed_attempts > settings.max_reconnect_attempts {
                tracing::error!(server = %server.name, "MCP server failed {failed_attempts} start attempts in a row; giving up");
                server.set_status(|status| {
                    status.state = McpServerState::Failed;
                    status.next_attempt_at = None;
                });
                server.session.send_replace(None);
                self.finish_stops().await;
                return;
            }
            let delay = backoff(&settings, failed_attempts);
            server.set_status(|status| {
                status.state = McpServerState::Restarting;
                status.next_attempt_at = Some(SystemTime::now() + delay);
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        server.set_status(|status| {
            status.state = McpServerState::Stopped;
            status.next_attempt_at = None;
            status.pid = None;
            status.protocol_version = None;
        });
        server.session.send_replace(None);
        self.finish_stops().await;
    }

    async fn finish_stops(&mut self) {
        for stop in std::mem::take(&mut self.stopping) {
            let _ = stop.await;
        }
    }

    async fn connect(&mut self) -> Result<Live, String> {
        let server = self.server.clone();
        let generation = {
            let mut status = server.status();
            status.generation += 1;
            status.generation
        };
        let client = ClientEvents {
            server: server.name.clone(),
            generation,
            probe_discovery: self.probe_discovery,
            progress: server.progress.clone(),
            elicitations: server.elicitations.clone(),
            relist: server.relist.clone(),
        };
        let Opening { mut link, handshake } = self.transport.open(client)?;
        server.set_status(|status| status.pid = link.pid());
        let timeout = seconds(server.connection_settings.connection_timeout);
        let relist = server.relist.clone();
        let setup = async {
            let service = handshake.await?;
            let capabilities = service.peer().peer_info().map(|info| info.capabilities.clone()).unwrap_or_default();
            let listener = session::listen_for_list_changes(&server.name, service.peer(), relist).await;
            let lists = list_all(service.peer(), &capabilities).await;
            let lists = lists.inspect_err(|_| listener.iter().for_each(JoinHandle::abort))?;
            Ok::<_, String>((service, lists, listener))
        };
        let mut timed_out = false;
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, setup) => outcome.unwrap_or_else(|_| {
                timed_out = true;
                Err(format!(
                    "no answer to initialize and the list requests within connection_timeout ({:.1}s)",
                    timeout.as_secs_f64()
                ))
            }),
            reason = link.ended() => Err(format!("{reason} during start-up")),
            _ = self.shutdown.cancelled() => Err("shutting down".to_owned()),
        };
        let (service, lists, listener) = match outcome {
            Ok(ready) => ready,
            Err(error) => {
                let error = if timed_out {
                    // Still running, perhaps ignoring being asked to stop: stopping it may
                    // take grace periods, which the report need not wait for.
                    let last_words = link.last_words();
                    self.stopping.push(tokio::spawn(async move { link.stop().await }));
                    with_last_words(error, last_words)
                } else {
                    // A server that ends makes the handshake fail first; how it ended says why.
                    let error = match tokio::time::timeout(Duration::from_millis(300), link.ended()).await {
                        Ok(reason) => format!("{reason} during start-up"),
                        Err(_) => error,
                    };
                    link.stop().await;
                    with_last_words(error, link.last_words())
                };
                return Err(error);
            }
        };
        let server_info = service
            .peer()
            .peer_info()
            .and_then(|info| info.server_info.clone())
            .map(|info| format!("{} {}", info.name, info.version));
        let protocol_version = session::revision(service.peer());
        let session = Arc::new(McpSession::new(service.peer().clone(), generation));
        server.set_status(|status| {
            status.state = McpServerState::Connected;
            status.lists = lists;
            status.server_info = server_info;
            status.protocol_version = protocol_version;
            status.failed_attempts = 0;
            status.next_attempt_at = None;
            status.last_error = None;
        });
        server.session.send_replace(Some(session.clone()));
        (self.lists_changed)();
        Ok(Live { link, service, session, listener })
    }

    /// Waits for the session to end, refreshing the lists on list_changed.
    async fn watch(&self, live: &mut Live) -> Ended {
        let server = &self.server;
        let refresh_timeout = seconds(server.connection_settings.connection_timeout);
        loop {
            let Live { link, listener, .. } = &mut *live;
            // A 2026-07-28 session has no connection of its own to lose: the end of its
            // list_changed subscription is how a restarted server shows, and the session
            // is opened again so that nothing it announces is missed.
            let listener_ended = async {
                match listener.as_mut() {
                    Some(handle) => {
                        let _ = handle.await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                reason = link.ended() => return Ended::Died(reason),
                () = listener_ended => {
                    listener.take();
                    return Ended::Died("the server ended the list_changed subscription".to_owned());
                }
                _ = self.shutdown.cancelled() => return Ended::Shutdown,
                _ = server.restart.notified() => return Ended::Died("restarted by an admin".to_owned()),
                _ = server.relist.notified() => {
                    let capabilities = live.session.peer.peer_info()
                        .map(|info| info.capabilities.clone())
                        .unwrap_or_default();
                    let listed = tokio::time::timeout(refresh_timeout, list_all(&live.session.peer, &capabilities)).await
                        .unwrap_or_else(|_| Err("no answer within connection_timeout".to_owned()));
                    match listed {
                        Ok(lists) => {
                            server.set_status(|status| {
                                status.lists = lists;
                                status.last_error = None;
                            });
                            (self.lists_changed)();
                        }
                        Err(error) => {
                            let error = format!("refreshing the lists after list_changed failed: {error}; the previous lists are kept");
                            tracing::warn!(server = %server.name, "{error}");
                            server.set_status(|status| status.last_error = Some(error));
                        }
                    }
                }
            }
        }
    }
}

fn with_last_words(error: String, last_words: Option<String>) -> String {
    match last_words {
        Some(words) => format!("{error}; {words}"),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap_with_jitter() {
        let settings = McpConnectionSettings {
            max_reconnect_attempts: 5,
            connection_timeout: 1.0,
            initial_reconnect_delay: 1.0,
            max_reconnect_delay: 5.0,
        };
        for (failed_attempts, base) in [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (40, 5.0)] {
            for _ in 0..50 {
                let delay = backoff(&settings, failed_attempts).as_secs_f64();
                assert!(delay >= base, "{failed_attempts}: {delay}");
                assert!(delay <= (base * 1.2).min(5.0), "{failed_attempts}: {delay}");
            }
        }
    }
}
