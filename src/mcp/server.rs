//! [`McpServer`]: one configured MCP server and everything known about it (its state, what it
//! offers, its live session, its breaker and the routes of its calls' progress and questions),
//! with the entry's rules for its tools (filters, approval).
//!
//! Separate from the supervisor, the one writer of its status and session, because calls, the
//! registry and the views read it without depending on how servers are kept running.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::breaker::{Breaker, CircuitState};
use super::elicitation::ElicitationRouter;
use super::progress::ProgressRouter;
use super::session::{Lists, McpSession};
use crate::config::{ApprovalPolicy, McpConnectionSettings, McpSettings, ServerConfig};

/// `max_tool_timeout` when the entry does not set it: long tools that keep reporting progress
/// get ten quiet periods' worth of time.
const DEFAULT_MAX_TOOL_TIMEOUT_FACTOR: u32 = 10;

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
    /// The MCP revision the live session speaks (`2026-07-28`, `2025-06-18`).
    pub protocol_version: Option<String>,
    pub lists: Lists,
    /// Counts sessions, so progress of an old session never reaches a new call.
    pub generation: u64,
}

/// One configured MCP server and everything known about it.
pub struct McpServer {
    pub name: String,
    pub config: ServerConfig,
    pub(super) connection_settings: McpConnectionSettings,
    /// How long a call may go without an answer or a progress notification.
    pub tool_timeout: Duration,
    /// How long a call may run in total, however much progress it reports.
    pub max_tool_timeout: Duration,
    status: Mutex<Status>,
    pub(super) session: watch::Sender<Option<Arc<McpSession>>>,
    pub breaker: Mutex<Breaker>,
    pub progress: Arc<ProgressRouter>,
    pub elicitations: Arc<ElicitationRouter>,
    /// Woken by list_changed notifications.
    pub(super) relist: Arc<Notify>,
    /// Woken by an admin's restart: the live session is stopped and started again.
    pub(super) restart: Notify,
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

impl McpServer {
    pub fn new(name: String, config: ServerConfig, settings: &McpSettings, tool_timeout: Duration) -> Self {
        let tool_timeout = config.tool_timeout.map_or(tool_timeout, seconds);
        let max_tool_timeout =
            config.max_tool_timeout.map_or(tool_timeout * DEFAULT_MAX_TOOL_TIMEOUT_FACTOR, seconds).max(tool_timeout);
        Self {
            name,
            config,
            connection_settings: settings.connection.clone(),
            tool_timeout,
            max_tool_timeout,
            status: Mutex::new(Status {
                state: McpServerState::Connecting,
                last_error: None,
                restarts: 0,
                failed_attempts: 0,
                next_attempt_at: None,
                pid: None,
                server_info: None,
                protocol_version: None,
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

    pub(super) fn set_status(&self, update: impl FnOnce(&mut Status)) {
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
