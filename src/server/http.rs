//! The plain HTTP endpoints (SPEC §3): health, readiness, and what the MCP servers and the
//! store hold right now, each `/api` one for the caller it authenticates.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::admission::{Admin, Caller};
use crate::chat::not_your_conversation;
use crate::store::{EventType, NewEvent};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 once serving and not draining; the body lists each MCP server's state either way
/// (servers still making their first attempt do not hold readiness up), and a problem the
/// store was opened with.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if state.is_ready() { "ready" } else { "draining" },
        "llm_provider": state.settings.llm.active,
        "mcp_servers": state.mcp.server_states(),
        "mcp_servers_starting": state.mcp.still_starting(),
        "store": match &state.store_problem {
            None => json!({"status": "ok"}),
            Some(problem) => json!({"status": "chain_broken", "problem": problem}),
        },
    });
    (status, Json(body)).into_response()
}

/// The routes of start-up, before the store is open: alive, not ready, nothing else.
pub fn starting_routes() -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(starting)).fallback(starting)
}

async fn starting() -> Response {
    let body =
        json!({"status": "starting", "error": "the server is starting (opening the store); try again in a moment"});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn servers(_: Admin, State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "servers": state.mcp.servers_view() }))
}

/// `POST /api/servers/{name}/restart`: logged as a `meta` event naming the admin, then done.
pub async fn restart_server(
    Admin(admin): Admin,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    admin_action(&state, &admin.user, "restart", &name, |mcp| mcp.restart(&name)).await
}

/// `POST /api/servers/{name}/breaker/reset`.
pub async fn reset_breaker(
    Admin(admin): Admin,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    admin_action(&state, &admin.user, "breaker_reset", &name, |mcp| mcp.reset_breaker(&name)).await
}

/// The conversation admin actions are logged in: an audit trail beside the users' own.
const ADMIN_CONVERSATION: &str = "admin-actions";

async fn admin_action(
    state: &AppState,
    admin: &str,
    action: &str,
    server: &str,
    act: impl FnOnce(&crate::mcp::McpManager) -> bool,
) -> Response {
    if state.mcp.server(server).is_none() {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no enabled MCP server named {server:?}")})))
            .into_response();
    }
    let mut extra = serde_json::Map::new();
    extra.insert("action".to_owned(), json!(action));
    extra.insert("server".to_owned(), json!(server));
    let event = NewEvent {
        conversation_id: ADMIN_CONVERSATION.to_owned(),
        request_id: None,
        user: admin.to_owned(),
        kind: EventType::Meta,
        role: None,
        content: Some(format!("{admin}: {action} of MCP server {server}")),
        tool_calls: None,
        tool_call_id: None,
        model: None,
        usage: None,
        token_count: 0,
        extra,
    };
    // Logged before it is done: an action the log does not hold never happened.
    if let Err(error) = state.chat.store().append(vec![event]).await {
        return internal(&error);
    }
    tracing::info!(%admin, action, server, "admin action");
    act(&state.mcp);
    Json(json!({ "server": server, "action": action, "by": admin })).into_response()
}

/// `GET /metrics`: admin only once authentication is on (SPEC §3, §8), like `/api/servers`.
pub async fn metrics(_: Admin, State(state): State<Arc<AppState>>) -> Response {
    let body = crate::metrics::render(&state.mcp.server_states());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

pub async fn tools(_: Caller, State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "tools": state.mcp.tools_view() }))
}

pub async fn prompts(_: Caller, State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "prompts": state.mcp.prompts_view() }))
}

pub async fn resources(_: Caller, State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "resources": state.mcp.resources_view() }))
}

/// `GET /api/me`: who the caller is, their limits and what is left of them.
pub async fn me(Caller(principal): Caller, State(state): State<Arc<AppState>>) -> Response {
    match state.limits.allowance(&principal.user, state.chat.store().as_ref()).await {
        Ok(limits) => Json(json!({ "user": principal.user, "role": principal.role, "limits": limits })).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": error.message}))).into_response(),
    }
}

pub async fn conversations(Caller(principal): Caller, State(state): State<Arc<AppState>>) -> Response {
    match state.chat.store().conversations(&principal.user).await {
        Ok(conversations) => Json(json!({ "conversations": conversations })).into_response(),
        Err(error) => internal(&error),
    }
}

/// One conversation: the caller's own, or any for an admin. Another user's is a 404 in the
/// same words as one that does not exist.
pub async fn conversation(
    Caller(principal): Caller,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    match state.chat.store().conversation(&id).await {
        Ok(mut events)
            if events.first().is_some_and(|first| principal.is_admin() || first.user() == principal.user) =>
        {
            // Only an admin sees others' events in it (an admin action logged in a conversation
            // a user happened to name `admin-actions`).
            if !principal.is_admin() {
                events.retain(|event| event.user() == principal.user);
            }
            Json(json!({ "conversation_id": id, "events": events })).into_response()
        }
        Ok(_) => (StatusCode::NOT_FOUND, Json(json!({"error": not_your_conversation(&id).message}))).into_response(),
        Err(error) => internal(&error),
    }
}

pub fn unavailable(message: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": message}))).into_response()
}

fn internal(error: &dyn std::fmt::Display) -> Response {
    let error = crate::chat::internal_error(error);
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": error.message}))).into_response()
}
