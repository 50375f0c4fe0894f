//! Store and replay tests: events built in code, and the lines of an events file.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use mcp_platform::domain::{Role, ToolCall, Usage};
use mcp_platform::store::{ChatEvent, EventStore, EventType, NewEvent};
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

/// `turns` rounds of a whole tool-calling turn in conversations "a" and "b", appended through
/// `store` (request ids `a-0`, `b-0`, `a-1`, …); the events stored.
pub async fn append_turns(store: &dyn EventStore, turns: usize) -> Vec<ChatEvent> {
    let mut written = Vec::new();
    for turn in 0..turns {
        for conversation in ["a", "b"] {
            let request = format!("{conversation}-{turn}");
            let mut batch = vec![user(conversation, &request, "hi")];
            batch.extend(tool_turn(conversation, &request, "gpt-4o"));
            batch.push(assistant(conversation, &request, "5", "gpt-4o"));
            written.extend(store.append(batch).await.unwrap());
        }
    }
    written
}

/// `count` whole requests in `conversation`: a question, a tool call with its result, an answer.
pub fn tool_requests(conversation: &str, count: usize) -> Vec<NewEvent> {
    (0..count)
        .flat_map(|turn| {
            let request = format!("{conversation}-{turn}");
            let mut events = vec![user(conversation, &request, "q")];
            events.extend(tool_turn(conversation, &request, "m"));
            events.push(assistant(conversation, &request, "a", "m"));
            events
        })
        .collect()
}

pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

pub fn parsed_lines(path: &Path) -> Vec<ChatEvent> {
    file_lines(path).iter().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// `appenders` tasks, released together, each appending one user turn to conversation
/// `c{n % conversations}` through `handles[n % handles.len()]`; the ids stored.
pub async fn append_concurrently(
    handles: &[Arc<dyn EventStore>],
    appenders: usize,
    conversations: usize,
) -> HashSet<String> {
    let start = Arc::new(tokio::sync::Barrier::new(appenders));
    let tasks: Vec<_> = (0..appenders)
        .map(|n| {
            let store = Arc::clone(&handles[n % handles.len()]);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store.append(vec![user(&format!("c{}", n % conversations), &format!("r{n}"), "hi")]).await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap()[0].id.clone());
    }
    ids
}
