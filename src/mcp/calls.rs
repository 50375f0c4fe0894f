//! One request to one MCP server: waiting for a restart in progress, the timeout, progress
//! routing, cancellation (`notifications/cancelled`), the circuit breaker's verdict, the one
//! safe retry, and turning the answer into text for the model.
//!
//! Separate from the supervisor: a call only reads the server's live session, so the rules
//! of a call change without touching how servers are kept running.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotificationParam, ClientRequest, ErrorCode, RequestId,
    ServerResult,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::breaker::Verdict;
use super::session::McpSession;
use super::supervisor::{McpServer, McpServerState, lock};
use super::{ToolError, ToolProgress, convert};

enum CallFailure {
    /// The request never reached the server: safe to send again.
    NotSent(String),
    Failed(String, Verdict),
}

/// The live session, waiting for a restart in progress until `deadline`.
async fn live_session(
    server: &McpServer,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<Arc<McpSession>, String> {
    let mut sessions = server.sessions();
    loop {
        if let Some(session) = sessions.borrow_and_update().clone()
            && !session.dead.is_cancelled()
            && !session.peer.is_transport_closed()
        {
            return Ok(session);
        }
        if matches!(server.status().state, McpServerState::Failed | McpServerState::Stopped) {
            return Err(server.unavailable_reason());
        }
        tokio::select! {
            changed = sessions.changed() => if changed.is_err() {
                return Err(server.unavailable_reason());
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "{} (waited {:.1}s for it to come back)",
                    server.unavailable_reason(),
                    server.tool_timeout.as_secs_f64()
                ));
            }
            _ = cancel.cancelled() => return Err("cancelled before the call was sent".into()),
        }
    }
}

/// Sends `notifications/cancelled` without making the caller wait for the write.
fn send_cancel(session: &McpSession, id: RequestId, reason: &str) {
    let peer = session.peer.clone();
    let param = CancelledNotificationParam::new(Some(id), Some(reason.to_owned()));
    tokio::spawn(async move {
        if let Err(error) = peer.notify_cancelled(param).await {
            tracing::debug!(%error, "could not send notifications/cancelled");
        }
    });
}

async fn call_once(
    server: &McpServer,
    tool: &str,
    arguments: &Map<String, Value>,
    progress: &mpsc::UnboundedSender<ToolProgress>,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<(bool, String), CallFailure> {
    let name = &server.name;
    let session =
        live_session(server, deadline, cancel).await.map_err(|reason| CallFailure::Failed(reason, Verdict::Neutral))?;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone()),
    ));
    let mut handle = session
        .peer
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .map_err(|error| CallFailure::NotSent(format!("server `{name}` could not be reached: {error}")))?;
    let route = server.progress.register(session.generation, handle.progress_token.clone(), progress.clone());
    let stopped_while_running = || {
        format!("server `{name}` stopped while `{tool}` was running: {}; it is being restarted", session.death_reason())
    };
    let answer = tokio::select! {
        biased;
        answer = &mut handle.rx => answer,
        _ = session.dead.cancelled() => return Err(CallFailure::Failed(stopped_while_running(), Verdict::Failure)),
        _ = cancel.cancelled() => {
            send_cancel(&session, handle.id.clone(), "cancelled by the user");
            return Err(CallFailure::Failed(format!("`{tool}` was cancelled"), Verdict::Neutral));
        }
        _ = tokio::time::sleep_until(deadline) => {
            send_cancel(&session, handle.id.clone(), "timed out");
            return Err(CallFailure::Failed(format!(
                "`{tool}` on server `{name}` timed out after {:.1}s (the server's tool_timeout); it was asked to cancel",
                server.tool_timeout.as_secs_f64()
            ), Verdict::Failure));
        }
    };
    drop(route);
    match answer {
        Ok(Ok(ServerResult::CallToolResult(result))) => Ok(convert::result_text(&result)),
        Ok(Ok(_)) => {
            Err(CallFailure::Failed(format!("server `{name}` sent an unexpected answer to `{tool}`"), Verdict::Failure))
        }
        Ok(Err(ServiceError::TransportSend(error))) => {
            Err(CallFailure::NotSent(format!("server `{name}` could not be sent the call: {error}")))
        }
        Ok(Err(ServiceError::McpError(error))) => {
            let verdict = if error.code == ErrorCode::INVALID_PARAMS || error.code == ErrorCode::METHOD_NOT_FOUND {
                Verdict::Neutral
            } else {
                Verdict::Failure
            };
            Err(CallFailure::Failed(
                format!("server `{name}` answered `{tool}` with an error: {} (code {})", error.message, error.code.0),
                verdict,
            ))
        }
        Ok(Err(error)) => {
            Err(CallFailure::Failed(format!("server `{name}` failed on `{tool}`: {error}"), Verdict::Failure))
        }
        Err(_closed) => {
            // The session ended; the supervisor learns why a moment later.
            let _ = tokio::time::timeout(Duration::from_millis(500), session.dead.cancelled()).await;
            Err(CallFailure::Failed(stopped_while_running(), Verdict::Failure))
        }
    }
}

/// Runs a tool call with the breaker, the timeout and the one safe retry: `(ok, text)`.
pub async fn call_tool(
    server: &McpServer,
    tool: &str,
    arguments: &Map<String, Value>,
    progress: &mpsc::UnboundedSender<ToolProgress>,
    cancel: &CancellationToken,
) -> (bool, String) {
    let trial = match lock(&server.breaker).admit(&server.name) {
        Ok(trial) => trial,
        Err(refusal) => return (false, refusal),
    };
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + server.tool_timeout;
    let mut outcome = call_once(server, tool, arguments, progress, cancel, deadline).await;
    if let Err(CallFailure::NotSent(first)) = &outcome {
        tracing::info!(server = %server.name, tool, "retrying a call that was never sent: {first}");
        outcome = call_once(server, tool, arguments, progress, cancel, deadline).await;
    }
    let (verdict, result) = match outcome {
        Ok(answer) => (Verdict::Success, answer),
        Err(CallFailure::NotSent(message)) => (Verdict::Failure, (false, message)),
        Err(CallFailure::Failed(message, verdict)) => (verdict, (false, message)),
    };
    lock(&server.breaker).record(verdict, trial);
    crate::metrics::tool_call(&server.name, tool, result.0, started.elapsed());
    result
}

/// Any other request (prompts/get, resources/read), within the server's tool timeout.
pub async fn request(server: &McpServer, request: ClientRequest) -> Result<ServerResult, ToolError> {
    let name = &server.name;
    let deadline = tokio::time::Instant::now() + server.tool_timeout;
    let session = live_session(server, deadline, &CancellationToken::new()).await.map_err(ToolError)?;
    let answer = tokio::time::timeout(
        server.tool_timeout,
        session.peer.send_request_with_option(request, PeerRequestOptions::with_timeout(server.tool_timeout)),
    )
    .await
    .map_err(|_| ToolError(format!("server `{name}` did not take the request")))?
    .map_err(|error| ToolError(format!("server `{name}`: {error}")))?;
    tokio::select! {
        answer = answer.await_response() => answer.map_err(|error| ToolError(format!("server `{name}`: {error}"))),
        _ = session.dead.cancelled() => Err(ToolError(format!("server `{name}` stopped: {}", session.death_reason()))),
    }
}
