//! Store and replay tests: events built in code, and the lines of an events file.

use std::path::Path;

use mcp_platform::domain::{Role, ToolCall, Usage};
use mcp_platform::store::{ChatEvent, EventType, NewEvent};
use serde_json::{Map, json};

pub fn user(conversation: &str, request: &str, text: &str) -> NewEvent {
    NewEvent {
        conversation_id: conversation.into(),
        request_id: Some(request.into()),
        user: "anonymous".into(),
        kind: EventType::UserMessage,
        role: Some(Role::User),
        content: Some(text.into()),
        tool_calls: None,
        tool_call_id: None,
        model: None,
        usage: None,
        token_count: 3,
        extra: Map::new(),
    }
}

pub fn assistant(conversation: &str, request: &str, text: &str, model: &str) -> NewEvent {
    NewEvent {
        kind: EventType::AssistantMessage,
        role: Some(Role::Assistant),
        model: Some(model.into()),
        usage: Some(Usage { prompt_tokens: 30, completion_tokens: 12, total_tokens: 42 }),
        token_count: 12,
        ..user(conversation, request, text)
    }
}

/// A tool-calling turn: the assistant asks for `demo__sum`, the tool answers.
pub fn tool_turn(conversation: &str, request: &str, model: &str) -> Vec<NewEvent> {
    vec![
        NewEvent {
            tool_calls: Some(vec![ToolCall {
                id: "call_1".into(),
                name: "demo__sum".into(),
                arguments: json!({"a": 2, "b": 3}),
            }]),
            content: Some(String::new()),
            token_count: 20,
            ..assistant(conversation, request, "", model)
        },
        NewEvent {
            kind: EventType::ToolResult,
            role: Some(Role::Tool),
            content: Some("5".into()),
            tool_call_id: Some("call_1".into()),
            token_count: 1,
            ..user(conversation, request, "")
        },
    ]
}

pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

pub fn parsed_lines(path: &Path) -> Vec<ChatEvent> {
    file_lines(path).iter().map(|line| serde_json::from_str(line).unwrap()).collect()
}
