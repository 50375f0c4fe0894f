//! The plain HTTP endpoints (SPEC §3): health, readiness, and what the MCP servers and the
//! store hold right now.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 once serving and not draining; the body lists each MCP server's state either way.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if state.is_ready() { "ready" } else { "draining" },
        "llm_provider": state.settings.llm.active,
        "mcp_servers": state.mcp.server_states(),
    });
    (status, Json(body)).into_response()
}

pub async fn servers(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "servers": state.mcp.servers_view() }))
}

/// Admin only once authentication is on (SPEC §3), like `/api/servers`: the router applies
/// the admin check to both routes in one place.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = crate::metrics::render(&state.mcp.server_states());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

pub async fn tools(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "tools": state.mcp.tools_view() }))
}

pub async fn prompts(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "prompts": state.mcp.prompts_view() }))
}

pub async fn resources(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "resources": state.mcp.resources_view() }))
}

pub async fn conversations(State(state): State<Arc<AppState>>) -> Response {
    match state.chat.store().conversations().await {
        Ok(conversations) => Json(json!({ "conversations": conversations })).into_response(),
        Err(error) => internal(&error),
    }
}

pub async fn conversation(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.chat.store().conversation(&id).await {
        Ok(events) if events.is_empty() => {
            (StatusCode::NOT_FOUND, Json(json!({"error": format!("no conversation {id:?} in the store")})))
                .into_response()
        }
        Ok(events) => Json(json!({ "conversation_id": id, "events": events })).into_response(),
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
