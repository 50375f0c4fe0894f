//! `/metrics` (SPEC §3): what the server does, in the Prometheus text format.
//!
//! Code records through the `metrics` facade with the names below; the Prometheus recorder is
//! installed once per process (the facade has one global recorder) and renders on request.
//! Recording is an atomic add on a pre-registered handle, cheap enough for every event of a
//! turn. Names follow Prometheus conventions: a `mcp_platform_` prefix, base units in the
//! name (`_seconds`), `_total` on counters, and histograms for durations.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::mcp::McpServerState;

pub const TURNS: &str = "mcp_platform_turns_total";
pub const TURN_DURATION: &str = "mcp_platform_turn_duration_seconds";
pub const MODEL_CALLS: &str = "mcp_platform_model_calls_total";
pub const MODEL_CALL_DURATION: &str = "mcp_platform_model_call_duration_seconds";
pub const MODEL_RETRIES: &str = "mcp_platform_model_retries_total";
pub const MODEL_TOKENS: &str = "mcp_platform_model_tokens_total";
pub const TOOL_CALLS: &str = "mcp_platform_tool_calls_total";
pub const TOOL_CALL_DURATION: &str = "mcp_platform_tool_call_duration_seconds";
pub const OPEN_SOCKETS: &str = "mcp_platform_open_websockets";
pub const IN_FLIGHT: &str = "mcp_platform_requests_in_flight";
pub const STORE_APPENDS: &str = "mcp_platform_store_appends_total";
pub const STORE_EVENTS: &str = "mcp_platform_store_appended_events_total";
pub const STORE_APPEND_DURATION: &str = "mcp_platform_store_append_duration_seconds";
pub const MCP_SERVER_STATE: &str = "mcp_platform_mcp_server_state";

/// From a millisecond store append to a minute-long turn.
const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use; every server in the process renders the same one.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first; its metrics are then its own.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only what it records");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TURNS, "Chat turns ended, by outcome (completed, failed, cancelled).");
    describe_histogram!(TURN_DURATION, Unit::Seconds, "Duration of chat turns, by outcome.");
    describe_counter!(MODEL_CALLS, "Model calls, by outcome (ok, error).");
    describe_histogram!(MODEL_CALL_DURATION, Unit::Seconds, "Duration of model calls.");
    describe_counter!(MODEL_RETRIES, "Model call attempts retried after a 429, 5xx or connect error.");
    describe_counter!(MODEL_TOKENS, "Model tokens, by kind (prompt, completion).");
    describe_counter!(TOOL_CALLS, "MCP tool calls, by server, tool and outcome (ok, error).");
    describe_histogram!(TOOL_CALL_DURATION, Unit::Seconds, "Duration of MCP tool calls, by server and tool.");
    describe_gauge!(OPEN_SOCKETS, "WebSocket connections open now.");
    describe_gauge!(IN_FLIGHT, "Chat requests running in this process now.");
    describe_counter!(STORE_APPENDS, "Event store appends (batches), by outcome (ok, refused, error).");
    describe_counter!(STORE_EVENTS, "Events appended to the store.");
    describe_histogram!(STORE_APPEND_DURATION, Unit::Seconds, "Time until an append is durable.");
    describe_gauge!(MCP_SERVER_STATE, "1 for the state each MCP server is in, 0 for the others.");
}

/// The text `/metrics` answers with; the MCP server states are read now, not tracked.
pub fn render(states: &std::collections::BTreeMap<String, McpServerState>) -> String {
    let handle = handle();
    for (server, current) in states {
        for state in McpServerState::ALL {
            let value = if state == *current { 1.0 } else { 0.0 };
            gauge!(MCP_SERVER_STATE, "server" => server.clone(), "state" => state.as_str()).set(value);
        }
    }
    handle.render()
}

pub fn turn_ended(outcome: &'static str, duration: Duration) {
    counter!(TURNS, "outcome" => outcome).increment(1);
    histogram!(TURN_DURATION, "outcome" => outcome).record(duration.as_secs_f64());
}

pub fn model_call(ok: bool, duration: Duration, prompt_tokens: u64, completion_tokens: u64) {
    counter!(MODEL_CALLS, "outcome" => if ok { "ok" } else { "error" }).increment(1);
    histogram!(MODEL_CALL_DURATION).record(duration.as_secs_f64());
    counter!(MODEL_TOKENS, "kind" => "prompt").increment(prompt_tokens);
    counter!(MODEL_TOKENS, "kind" => "completion").increment(completion_tokens);
}

pub fn model_retry() {
    counter!(MODEL_RETRIES).increment(1);
}

pub fn tool_call(server: &str, tool: &str, ok: bool, duration: Duration) {
    let (server, tool) = (server.to_owned(), tool.to_owned());
    counter!(TOOL_CALLS, "server" => server.clone(), "tool" => tool.clone(), "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
    histogram!(TOOL_CALL_DURATION, "server" => server, "tool" => tool).record(duration.as_secs_f64());
}

pub fn store_append(outcome: &'static str, events: usize, duration: Duration) {
    counter!(STORE_APPENDS, "outcome" => outcome).increment(1);
    counter!(STORE_EVENTS).increment(events as u64);
    histogram!(STORE_APPEND_DURATION).record(duration.as_secs_f64());
}

/// Counts something open (a socket, a running request) in a gauge for as long as it lives,
/// so every exit path, a panic included, takes it off again.
pub struct Open(&'static str);

impl Open {
    pub fn socket() -> Open {
        Open::new(OPEN_SOCKETS)
    }

    pub fn request() -> Open {
        Open::new(IN_FLIGHT)
    }

    fn new(name: &'static str) -> Open {
        gauge!(name).increment(1.0);
        Open(name)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        gauge!(self.0).decrement(1.0);
    }
}
