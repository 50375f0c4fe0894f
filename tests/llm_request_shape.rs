//! What each provider kind sends to the model: only standard fields of its API, the model
//! parameters of the settings, tool names as given (`<server>__<tool>`), and its auth headers.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use mcp_platform::config::ProviderKind;
use mcp_platform::domain::{Image, Message, ToolSpec};
use mcp_platform::llm::{self, LlmRequest};
use serde_json::{Value, json};
use support::llm::*;

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

/// A conversation with every kind of message: system, user, an assistant turn with two
/// parallel tool calls, their two results, an assistant answer and a new user message.
fn full_conversation(streaming: bool) -> LlmRequest {
    LlmRequest {
        model: None,
        messages: [
            Message::system("Be brief."),
            Message::user("what is 2+3 and 6*7"),
            Message::assistant(
                "",
                vec![
                    call("call_1", "demo__sum", json!({"a": 2, "b": 3})),
                    call("call_2", "demo__multiply", json!({"a": 6, "b": 7})),
                ],
            ),
            Message::tool("call_1", "5"),
            Message::tool("call_2", "42"),
            Message::assistant("5 and 42.", vec![]),
            Message::user("thanks"),
        ]
        .map(Arc::new)
        .into(),
        tools: vec![Arc::new(tool("demo__sum")), Arc::new(tool("demo__multiply"))],
        streaming,
    }
}

/// Sends `request` to a mock through a provider of `kind` and returns what the mock received.
async fn sent(kind: ProviderKind, api_key: &str, request: LlmRequest) -> mock_llm::RecordedRequest {
    let mock = mock(json!([])).await;
    let provider =
        llm::from_settings(&settings(kind, &base_url(&mock, kind), api_key, 10.0, 0)).expect("provider builds");
    let outcome = chat(&provider, request).await;
    assert_eq!(outcome.error, None);
    let mut requests = mock.requests();
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

#[tokio::test]
async fn openai_requests_hold_only_standard_chat_completions_fields() {
    let request = sent(ProviderKind::Openai, "sk-test", full_conversation(true)).await;
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers.get("authorization").map(String::as_str), Some("Bearer sk-test"));
    let body = &request.body;
    assert_eq!(
        keys(body),
        set(&["model", "messages", "stream", "temperature", "max_tokens", "top_p", "tools", "stream_options"])
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        (body["temperature"].clone(), body["max_tokens"].clone(), body["top_p"].clone()),
        (json!(0.5), json!(321), json!(0.9))
    );

    let messages = body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap_or("?")).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool", "assistant", "user"]);
    for (position, message) in messages.iter().enumerate() {
        let expected = match (message["role"].as_str(), position) {
            (Some("tool"), _) => set(&["role", "tool_call_id", "content"]),
            (Some("assistant"), 2) => set(&["role", "content", "tool_calls"]),
            _ => set(&["role", "content"]),
        };
        assert_eq!(keys(message), expected, "message {position}");
    }
    assert_eq!(messages[2]["content"], Value::Null, "a tools-only turn has null content");
    let calls = messages[2]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(keys(call), set(&["id", "type", "function"]));
        assert_eq!(call["type"], "function");
        assert_eq!(keys(&call["function"]), set(&["name", "arguments"]));
        assert!(call["function"]["arguments"].is_string(), "arguments travel as a JSON string");
    }
    assert_eq!(calls[1]["id"], "call_2");
    assert_eq!(calls[1]["function"]["name"], "demo__multiply");
    let arguments: Value =
        serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap_or("")).expect("JSON");
    assert_eq!(arguments, json!({"a": 6, "b": 7}));
    assert_eq!((messages[4]["tool_call_id"].clone(), messages[4]["content"].clone()), (json!("call_2"), json!("42")));

    let tools = body["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().map(|t| t["function"]["name"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, ["demo__sum", "demo__multiply"]);
    for tool in tools {
        assert_eq!(keys(tool), set(&["type", "function"]));
        assert_eq!(keys(&tool["function"]), set(&["name", "description", "parameters"]));
        assert_eq!(tool["function"]["parameters"]["required"], json!(["a", "b"]));
    }
}

#[tokio::test]
async fn openai_requests_without_tools_or_streaming_or_key_leave_those_fields_out() {
    let mut request = ask("hello", vec![], false);
    request.model = Some("llama-3.3-70b-versatile".to_owned());
    let sent = sent(ProviderKind::Openai, "", request).await;
    assert_eq!(keys(&sent.body), set(&["model", "messages", "stream", "temperature", "max_tokens", "top_p"]));
    assert_eq!(sent.body["model"], "llama-3.3-70b-versatile", "the request's model wins");
    assert_eq!(sent.body["stream"], false);
    assert!(!sent.headers.contains_key("authorization"), "no key, no bearer (Ollama)");
}

#[tokio::test]
async fn anthropic_requests_hold_only_standard_messages_api_fields() {
    let request = sent(ProviderKind::Anthropic, "ak-test", full_conversation(true)).await;
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers.get("x-api-key").map(String::as_str), Some("ak-test"));
    assert_eq!(request.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    assert!(!request.headers.contains_key("authorization"));
    let body = &request.body;
    assert_eq!(keys(body), set(&["model", "max_tokens", "system", "messages", "stream", "temperature", "tools"]));
    assert_eq!(body["system"], "Be brief.");
    assert_eq!((body["max_tokens"].clone(), body["temperature"].clone()), (json!(321), json!(0.5)));

    let messages = body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap_or("?")).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"], "strictly alternating");
    for message in messages {
        assert_eq!(keys(message), set(&["role", "content"]));
    }
    assert_eq!(messages[0]["content"], "what is 2+3 and 6*7");
    let uses = messages[1]["content"].as_array().expect("tool_use blocks");
    assert_eq!(uses.len(), 2);
    for block in uses {
        assert_eq!(keys(block), set(&["type", "id", "name", "input"]));
        assert_eq!(block["type"], "tool_use");
    }
    assert_eq!((uses[0]["name"].clone(), uses[0]["input"].clone()), (json!("demo__sum"), json!({"a": 2, "b": 3})));
    let results = messages[2]["content"].as_array().expect("tool_result blocks");
    assert_eq!(results.len(), 2, "consecutive tool results share one user message");
    for block in results {
        assert_eq!(keys(block), set(&["type", "tool_use_id", "content"]));
        assert_eq!(block["type"], "tool_result");
    }
    assert_eq!((results[1]["tool_use_id"].clone(), results[1]["content"].clone()), (json!("call_2"), json!("42")));
    assert_eq!(messages[3]["content"], "5 and 42.");

    let tools = body["tools"].as_array().expect("tools");
    for tool in tools {
        assert_eq!(keys(tool), set(&["name", "description", "input_schema"]));
    }
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, ["demo__sum", "demo__multiply"]);
}

#[tokio::test]
async fn anthropic_requests_without_tools_leave_the_field_out() {
    let sent = sent(ProviderKind::Anthropic, "ak-test", ask("hello", vec![], false)).await;
    assert_eq!(keys(&sent.body), set(&["model", "max_tokens", "system", "messages", "stream", "temperature"]));
    assert_eq!(sent.body["stream"], false);
}

/// A tool turn whose first result carries an image, as server-everything's tiny image does.
fn turn_with_an_image() -> LlmRequest {
    let mut image_result = Message::tool("call_1", "[image: image/png, 8 bytes]");
    image_result.images = vec![Image { mime_type: "image/png".into(), data: "iVBORw0KGgo=".into() }];
    LlmRequest {
        model: None,
        messages: [
            Message::user("show the image and the sum"),
            Message::assistant(
                "",
                vec![
                    call("call_1", "everything__get-tiny-image", json!({})),
                    call("call_2", "demo__sum", json!({"a": 2, "b": 3})),
                ],
            ),
            image_result,
            Message::tool("call_2", "5"),
        ]
        .map(Arc::new)
        .into(),
        tools: Vec::new(),
        streaming: false,
    }
}

fn body(kind: ProviderKind, vision: bool) -> Value {
    let mut settings = settings(kind, "http://127.0.0.1:1/v1", "key", 10.0, 0);
    let provider = settings.providers.get_mut("test").expect("the provider");
    provider.vision = vision;
    match kind {
        ProviderKind::Openai => {
            let bytes = llm::openai::request_body(&turn_with_an_image(), provider);
            serde_json::from_slice(&bytes).expect("the request body is JSON")
        }
        ProviderKind::Anthropic => llm::anthropic::request_body(&turn_with_an_image(), provider),
    }
}

#[test]
fn tool_images_reach_a_vision_model_in_its_api_shape_and_no_other_model() {
    let openai = body(ProviderKind::Openai, true);
    let messages = openai["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().filter_map(|message| message["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "user"], "the images follow every tool result");
    assert_eq!(
        messages[4]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
    );

    let anthropic = body(ProviderKind::Anthropic, true);
    let results = &anthropic["messages"][2]["content"];
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[0]["content"][0], json!({"type": "text", "text": "[image: image/png, 8 bytes]"}));
    assert_eq!(
        results[0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(results[1]["content"], "5");

    for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
        let without = body(kind, false).to_string();
        assert!(!without.contains("iVBORw0KGgo"), "{kind:?} without vision: {without}");
        assert!(without.contains("[image: image/png, 8 bytes]"), "the model still reads that there was an image");
    }
}

#[test]
fn a_message_sent_again_reads_as_it_did_the_first_time() {
    let settings = settings(ProviderKind::Openai, "http://127.0.0.1:1/v1", "key", 10.0, 0);
    let provider = &settings.providers["test"];
    let turn = LlmRequest { tools: vec![Arc::new(tool("demo__sum"))], ..turn_with_an_image() };
    // The second body reuses every message's and tool's encoding from the first; a copy of the
    // turn (no encodings kept) is encoded afresh. All three must be the same request.
    let first = llm::openai::request_body(&turn, provider);
    let again = llm::openai::request_body(&turn, provider);
    let copied = LlmRequest {
        messages: turn.messages.iter().map(|message| Arc::new(Message::clone(message))).collect(),
        tools: turn.tools.iter().map(|tool| Arc::new(ToolSpec::clone(tool))).collect(),
        ..turn_with_an_image()
    };
    assert_eq!(again, first);
    assert_eq!(llm::openai::request_body(&copied, provider), first);
    let body: Value = serde_json::from_slice(&first).expect("JSON");
    assert_eq!(body["messages"][1]["tool_calls"][1]["function"]["arguments"], r#"{"a":2,"b":3}"#);
    assert_eq!(body["tools"][0]["function"]["name"], "demo__sum");
    assert_eq!(body["tools"][0]["function"]["parameters"]["required"], json!(["a", "b"]));
}
