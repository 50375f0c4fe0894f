//! One request to one MCP server: waiting for a restart in progress, the timeouts (a quiet
//! period that progress restarts, within a total, neither running while the server waits for
//! the user), progress routing, the server's questions (`input_required` rounds of
//! 2026-07-28), cancellation (`notifications/cancelled`), the circuit breaker's verdict, the one
//! safe retry, and reading the answer (its structured content checked against the outputSchema).
//!
//! Separate from the supervisor: a call only reads the server's live session, so the rules
//! of a call change without touching how servers are kept running.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotificationParam, ClientRequest, ErrorCode, InputRequest,
    InputRequiredResult, InputResponses, RequestId, RequestMetaObject, ServerResult,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::breaker::Verdict;
use super::server::{McpServer, McpServerState, lock};
use super::session::McpSession;
use super::{ToolError, ToolProgress, UserInput, convert, elicitation};
use crate::domain::ElicitationReply;

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

/// `input_required` rounds one call may take: a server that keeps asking is cut off.
const MAX_INPUT_ROUNDS: usize = 10;

/// When a call gives up: `tool_timeout` after the last sign of life (the call being sent, a
/// progress notification), and `max_tool_timeout` after it began, whatever it reports. The
/// time a person spends answering the server's questions counts against neither.
struct Deadlines {
    quiet: tokio::time::Instant,
    total: tokio::time::Instant,
}

impl Deadlines {
    fn new(server: &McpServer) -> Self {
        let now = tokio::time::Instant::now();
        Self { quiet: now + server.tool_timeout, total: now + server.max_tool_timeout }
    }

    fn heard_from(&mut self, server: &McpServer) {
        self.quiet = tokio::time::Instant::now() + server.tool_timeout;
    }

    /// The server is waiting for a person: both clocks are given a quiet period from now,
    /// checked again when it has passed.
    fn waiting_for_user(&mut self, server: &McpServer) {
        self.heard_from(server);
        self.total = self.total.max(self.quiet);
    }

    /// A person answered an `input_required` round for `asked`: the total moves on by as much
    /// (the quiet period starts again when the call is sent anew).
    fn answered(&mut self, asked: Duration) {
        self.total += asked;
    }

    fn next(&self) -> tokio::time::Instant {
        self.quiet.min(self.total)
    }

    fn timeout_message(&self, server: &McpServer, tool: &str) -> String {
        if self.total <= self.quiet {
            format!(
                "`{tool}` on server `{}` ran past {:.1}s in total (the server's max_tool_timeout); it was asked to cancel",
                server.name,
                server.max_tool_timeout.as_secs_f64()
            )
        } else {
            format!(
                "`{tool}` on server `{}` timed out after {:.1}s without an answer or progress (the server's \
                 tool_timeout); it was asked to cancel",
                server.name,
                server.tool_timeout.as_secs_f64()
            )
        }
    }
}

async fn call_once(
    server: &McpServer,
    tool: &str,
    arguments: &Map<String, Value>,
    context: &CallContext<'_>,
    deadlines: &mut Deadlines,
) -> Result<convert::ToolAnswer, CallFailure> {
    let name = &server.name;
    let CallContext { progress, cancel, user } = context;
    let session = live_session(server, deadlines.quiet, cancel)
        .await
        .map_err(|reason| CallFailure::Failed(reason, Verdict::Neutral))?;
    let mut params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone());
    for _round in 0..MAX_INPUT_ROUNDS {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
        // Listed before the send: the server may ask before the send returns.
        let in_flight = server.elicitations.register(session.generation, (*user).clone());
        let mut handle = session
            .peer
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(|error| CallFailure::NotSent(format!("server `{name}` could not be reached: {error}")))?;
        in_flight.sent(handle.id.clone());
        deadlines.heard_from(server);
        // Progress passes through here on its way to the caller: each notification is a sign of
        // life that starts the quiet period again.
        let (heard, mut news) = mpsc::unbounded_channel();
        let route = server.progress.register(session.generation, handle.progress_token.clone(), heard);
        let stopped_while_running = || {
            format!(
                "server `{name}` stopped while `{tool}` was running: {}; it is being restarted",
                session.death_reason()
            )
        };
        let answer = loop {
            tokio::select! {
                biased;
                answer = &mut handle.rx => break answer,
                _ = session.dead.cancelled() => return Err(CallFailure::Failed(stopped_while_running(), Verdict::Failure)),
                _ = cancel.cancelled() => {
                    send_cancel(&session, handle.id.clone(), "cancelled by the user");
                    return Err(CallFailure::Failed(format!("`{tool}` was cancelled"), Verdict::Neutral));
                }
                Some(update) = news.recv() => {
                    deadlines.heard_from(server);
                    let _ = progress.send(update);
                }
                _ = tokio::time::sleep_until(deadlines.next()) => {
                    // A person answering the server's question is not the tool being slow.
                    if in_flight.is_asking() {
                        deadlines.waiting_for_user(server);
                        continue;
                    }
                    send_cancel(&session, handle.id.clone(), "timed out");
                    return Err(CallFailure::Failed(deadlines.timeout_message(server, tool), Verdict::Failure));
                }
            }
        };
        drop(route);
        drop(in_flight);
        // Progress that arrived with the answer still reaches the caller, in order.
        while let Ok(update) = news.try_recv() {
            let _ = progress.send(update);
        }
        match answer {
            Ok(Ok(ServerResult::CallToolResult(result))) => {
                let output_schema = server
                    .status()
                    .lists
                    .tools
                    .iter()
                    .find(|listed| listed.name == tool)
                    .and_then(|listed| listed.output_schema.clone());
                return Ok(convert::tool_answer(tool, &result, output_schema.as_deref()));
            }
            Ok(Ok(ServerResult::InputRequiredResult(result))) => {
                let asked = tokio::time::Instant::now();
                (params.input_responses, params.request_state) = answer_input_requests(name, result, user).await;
                deadlines.answered(asked.elapsed());
            }
            Ok(Ok(_)) => {
                return Err(CallFailure::Failed(
                    format!("server `{name}` sent an unexpected answer to `{tool}`"),
                    Verdict::Failure,
                ));
            }
            Ok(Err(ServiceError::TransportSend(error))) => {
                return Err(CallFailure::NotSent(format!("server `{name}` could not be sent the call: {error}")));
            }
            Ok(Err(ServiceError::McpError(error))) => {
                let verdict = if error.code == ErrorCode::INVALID_PARAMS || error.code == ErrorCode::METHOD_NOT_FOUND {
                    Verdict::Neutral
                } else {
                    Verdict::Failure
                };
                return Err(CallFailure::Failed(
                    format!(
                        "server `{name}` answered `{tool}` with an error: {} (code {})",
                        error.message, error.code.0
                    ),
                    verdict,
                ));
            }
            Ok(Err(error)) => {
                return Err(CallFailure::Failed(
                    format!("server `{name}` failed on `{tool}`: {error}"),
                    Verdict::Failure,
                ));
            }
            Err(_closed) => {
                // The session ended; the supervisor learns why a moment later.
                let _ = tokio::time::timeout(Duration::from_millis(500), session.dead.cancelled()).await;
                return Err(CallFailure::Failed(stopped_while_running(), Verdict::Failure));
            }
        }
    }
    Err(CallFailure::Failed(
        format!("server `{name}` asked for input more than {MAX_INPUT_ROUNDS} times during `{tool}`; it was stopped"),
        Verdict::Failure,
    ))
}

/// Answers the questions a 2026-07-28 server returned with the call: elicitations go to the
/// call's user.
async fn answer_input_requests(
    server: &str,
    result: InputRequiredResult,
    user: &Arc<dyn UserInput>,
) -> (Option<InputResponses>, Option<String>) {
    let mut responses = InputResponses::new();
    for (key, request) in result.input_requests.unwrap_or_default() {
        let response = match request {
            InputRequest::Elicitation(request) => {
                // The question's `_meta` (whether its answer is sensitive) was taken off the
                // parameters while it was read.
                let meta = request.extensions.get::<RequestMetaObject>();
                let reply = match elicitation::question(server, request.params, meta) {
                    Some(question) => user.elicit(question).await,
                    None => ElicitationReply::declined(),
                };
                serde_json::to_value(elicitation::result(reply))
            }
            // Sampling and roots are not offered: the server gets no answer to those.
            _ => continue,
        };
        if let Ok(response) = response {
            responses.insert(key, response);
        }
    }
    ((!responses.is_empty()).then_some(responses), result.request_state)
}

/// Who a call serves: where its progress goes, what cancels it, whom its server may ask.
pub struct CallContext<'a> {
    pub progress: &'a mpsc::UnboundedSender<ToolProgress>,
    pub cancel: &'a CancellationToken,
    pub user: &'a Arc<dyn UserInput>,
}

/// Runs a tool call with the breaker, the timeout and the one safe retry.
pub async fn call_tool(
    server: &McpServer,
    tool: &str,
    arguments: &Map<String, Value>,
    context: &CallContext<'_>,
) -> convert::ToolAnswer {
    let trial = match lock(&server.breaker).admit(&server.name) {
        Ok(trial) => trial,
        Err(refusal) => return convert::ToolAnswer::failed(refusal),
    };
    let started = std::time::Instant::now();
    let mut deadlines = Deadlines::new(server);
    let mut outcome = call_once(server, tool, arguments, context, &mut deadlines).await;
    if let Err(CallFailure::NotSent(first)) = &outcome {
        tracing::info!(server = %server.name, tool, "retrying a call that was never sent: {first}");
        outcome = call_once(server, tool, arguments, context, &mut deadlines).await;
    }
    let (verdict, result) = match outcome {
        Ok(answer) => (Verdict::Success, answer),
        Err(CallFailure::NotSent(message)) => (Verdict::Failure, convert::ToolAnswer::failed(message)),
        Err(CallFailure::Failed(message, verdict)) => (verdict, convert::ToolAnswer::failed(message)),
    };
    lock(&server.breaker).record(verdict, trial);
    crate::metrics::tool_call(&server.name, tool, result.ok, started.elapsed());
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
