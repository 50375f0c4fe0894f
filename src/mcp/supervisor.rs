//! Supervision of one MCP server: start, connection timeout, restart with backoff, giving
//! up, list_changed refreshes, shutdown, and [`McpServer`], everything known about the
//! server, which the supervisor writes and the registry, calls and views read.
//!
//! The supervisor reaches its server only through a [`McpTransport`]: it knows that a link
//! ended and why, never which process or connection carried it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::breaker::{Breaker, CircuitState};
use super::elicitation::ElicitationRouter;
use super::progress::ProgressRouter;
use super::session::{ClientEvents, Lists, McpService, McpSession, list_all};
use super::transport::{McpLink, McpTransport, Opening};
use crate::config::{ApprovalPolicy, McpConnectionSettings, McpSettings, ServerConfig};

/// How long a session gets to close its transport before the link is stopped.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum McpServerState {
    Connecting,
    Connected,
    Restarting,
    /// Gave up after `max_reconnect_attempts`.
    Failed,
    /// Connected, but its circuit breaker refuses calls.
    CircuitOpen,
    Stopped,
}

impl McpServerState {
    /// Every state, for a gauge per state (`/metrics`).
    pub const ALL: [McpServerState; 6] = [
        McpServerState::Connecting,
        McpServerState::Connected,
        McpServerState::Restarting,
        McpServerState::Failed,
        McpServerState::CircuitOpen,
        McpServerState::Stopped,
    ];

    /// The name the JSON views use.
    pub fn as_str(self) -> &'static str {
        match self {
            McpServerState::Connecting => "connecting",
            McpServerState::Connected => "connected",
            McpServerState::Restarting => "restarting",
            McpServerState::Failed => "failed",
            McpServerState::CircuitOpen => "circuit_open",
            McpServerState::Stopped => "stopped",
        }
    }
}

/// What the supervisor last learned about its server.
pub struct Status {
    pub state: McpServerState,
    pub last_error: Option<String>,
    /// Restarts after the server had been connected.
    pub restarts: u32,
    /// Consecutive failed start attempts.
    pub failed_attempts: u32,
    pub next_attempt_at: Option<SystemTime>,
    /// The local process of the live link, as the transport reports it.
    pub pid: Option<u32>,
    pub server_info: Option<String>,
    pub lists: Lists,
    /// Counts sessions, so progress of an old session never reaches a new call.
    pub generation: u64,
}

/// One configured MCP server and everything known about it.
pub struct McpServer {
    pub name: String,
    config: ServerConfig,
    connection_settings: McpConnectionSettings,
    pub tool_timeout: Duration,
    status: Mutex<Status>,
    session: watch::Sender<Option<Arc<McpSession>>>,
    pub breaker: Mutex<Breaker>,
    pub progress: Arc<ProgressRouter>,
    pub elicitations: Arc<ElicitationRouter>,
    /// Woken by list_changed notifications.
    relist: Arc<Notify>,
    /// Woken by an admin's restart: the live session is stopped and started again.
    restart: Notify,
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

/// The delay before start attempt number `failed_attempts + 1`: doubling from the initial
/// delay, capped, plus up to 20% jitter so many servers do not retry in lockstep.
fn backoff(settings: &McpConnectionSettings, failed_attempts: u32) -> Duration {
    let exponent = failed_attempts.saturating_sub(1).min(30);
    let base = (settings.initial_reconnect_delay * f64::from(1u32 << exponent)).min(settings.max_reconnect_delay);
    let jittered = base * (1.0 + rand::random_range(0.0..=0.2));
    seconds(jittered.min(settings.max_reconnect_delay.max(base)))
}

impl McpServer {
    pub fn new(name: String, config: ServerConfig, settings: &McpSettings, tool_timeout: Duration) -> Self {
        let tool_timeout = config.tool_timeout.map_or(tool_timeout, seconds);
        Self {
            name,
            config,
            connection_settings: settings.connection.clone(),
            tool_timeout,
            status: Mutex::new(Status {
                state: McpServerState::Connecting,
                last_error: None,
                restarts: 0,
                failed_attempts: 0,
                next_attempt_at: None,
                pid: None,
                server_info: None,
                lists: Lists::default(),
                generation: 0,
            }),
            session: watch::Sender::new(None),
            breaker: Mutex::new(Breaker::new(
                settings.circuit_breaker.failure_threshold,
                seconds(settings.circuit_breaker.cooldown),
            )),
            progress: Arc::default(),
            elicitations: Arc::default(),
            relist: Arc::default(),
            restart: Notify::new(),
        }
    }

    pub fn status(&self) -> MutexGuard<'_, Status> {
        lock(&self.status)
    }

    fn set_status(&self, update: impl FnOnce(&mut Status)) {
        update(&mut self.status());
    }

    /// The state as shown: a connected server whose circuit is open is `circuit_open`.
    pub fn state(&self) -> McpServerState {
        Self::shown_state(self.status().state, lock(&self.breaker).state())
    }

    pub fn shown_state(state: McpServerState, circuit: CircuitState) -> McpServerState {
        if state == McpServerState::Connected && circuit == CircuitState::Open {
            McpServerState::CircuitOpen
        } else {
            state
        }
    }

    /// Whether the entry's `allowed_tools` / `excluded_tools` let the tool through.
    pub fn allowed(&self, tool: &str) -> bool {
        self.config.allowed_tools.as_ref().is_none_or(|allowed| allowed.iter().any(|name| name == tool))
            && !self.config.excluded_tools.iter().any(|name| name == tool)
    }

    /// The entry's verdict on `tool` by name: `approve_tools` asks, `auto_approve_tools` does
    /// not (that wins when a tool is in both: naming it there is the explicit exception).
    pub fn approval_rule(&self, tool: &str) -> Option<bool> {
        let named = |tools: &[String]| tools.iter().any(|name| name == tool);
        if named(&self.config.auto_approve_tools) {
            Some(false)
        } else if named(&self.config.approve_tools) {
            Some(true)
        } else {
            None
        }
    }

    /// The entry's `approval`, overriding the global policy.
    pub fn approval_policy(&self) -> Option<ApprovalPolicy> {
        self.config.approval
    }

    /// Whether the server's tool annotations are believed.
    pub fn trusted(&self) -> bool {
        self.config.trusted
    }

    pub fn unavailable_reason(&self) -> String {
        let status = self.status();
        let error = status.last_error.as_deref().map(|error| format!("; last error: {error}")).unwrap_or_default();
        match status.state {
            McpServerState::Failed => format!("server `{}` failed and is no longer restarted{error}", self.name),
            McpServerState::Stopped => format!("server `{}` is stopped", self.name),
            _ => format!("server `{}` is not connected{error}", self.name),
        }
    }

    /// Stops the live session so the supervisor starts the server again (an admin's restart).
    /// Asked while it is between sessions, the next session is restarted at once.
    pub fn request_restart(&self) {
        self.restart.notify_one();
    }

    /// The live session, if any, and every change of it: restarts replace it.
    pub fn sessions(&self) -> watch::Receiver<Option<Arc<McpSession>>> {
        self.session.subscribe()
    }
}

/// Called whenever a server's lists (or whether it offers them) change.
pub type ListsChanged = Arc<dyn Fn() + Send + Sync>;

/// A running session and what carries it, owned by the server's supervisor task.
struct Live {
    link: Box<dyn McpLink>,
    service: McpService,
    session: Arc<McpSession>,
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
}

impl Supervisor {
    pub fn new(
        server: Arc<McpServer>,
        transport: Box<dyn McpTransport>,
        shutdown: CancellationToken,
        lists_changed: ListsChanged,
    ) -> Self {
        Self { server, transport, shutdown, lists_changed, stopping: Vec::new() }
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
                    tracing::info!(server = %server.name, "MCP server connected");
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                    match self.watch(&mut live).await {
                        Ended::Shutdown => {
                            server.session.send_replace(None);
                            live.session.mark_dead("the platform is shutting down");
                            let _ = live.service.close_with_timeout(SESSION_CLOSE_GRACE).await;
                            live.link.stop().await;
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
                            });
                            (self.lists_changed)();
                            let _ = live.service.close_with_timeout(SESSION_CLOSE_GRACE).await;
                            live.link.stop().await;
                        }
                    }
                }
                Err(error) => {
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                    failed_attempts += 1;
                    tracing::warn!(server = %server.name, attempt = failed_attempts, "MCP server did not start: {error}");
                    server.set_status(|status| {
                        status.failed_attempts = failed_attempts;
                        status.last_error = Some(error);
                        status.pid = None;
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
            progress: server.progress.clone(),
            elicitations: server.elicitations.clone(),
            relist: server.relist.clone(),
        };
        let Opening { mut link, handshake } = self.transport.open(client)?;
        server.set_status(|status| status.pid = link.pid());
        let timeout = seconds(server.connection_settings.connection_timeout);
        let setup = async {
            let service = handshake.await?;
            let capabilities = service.peer().peer_info().map(|info| info.capabilities.clone()).unwrap_or_default();
            let lists = list_all(service.peer(), &capabilities).await?;
            Ok::<_, String>((service, lists))
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
        let (service, lists) = match outcome {
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
        let session = Arc::new(McpSession::new(service.peer().clone(), generation));
        server.set_status(|status| {
            status.state = McpServerState::Connected;
            status.lists = lists;
            status.server_info = server_info;
            status.failed_attempts = 0;
            status.next_attempt_at = None;
            status.last_error = None;
        });
        server.session.send_replace(Some(session.clone()));
        (self.lists_changed)();
        Ok(Live { link, service, session })
    }

    /// Waits for the session to end, refreshing the lists on list_changed.
    async fn watch(&self, live: &mut Live) -> Ended {
        let server = &self.server;
        let refresh_timeout = seconds(server.connection_settings.connection_timeout);
        loop {
            tokio::select! {
                reason = live.link.ended() => return Ended::Died(reason),
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
