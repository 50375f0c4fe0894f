//! Servers differ in how they stream: hand-written SSE bodies, served over HTTP by an axum
//! route in this test, in the shapes real OpenAI-compatible servers and Anthropic send.

mod support;

use std::collections::HashSet;

use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use mcp_platform::config::ProviderKind;
use mcp_platform::domain::FinishReason;
use mcp_platform::llm;
use serde_json::json;
use support::llm::*;

/// SSE bodies by name: `data:` lines, as the server would send them.
fn body(case: &str) -> String {
    let lines: &[&str] = match case {
        // No `index` anywhere; the second call is told apart by its new id.
        "no-index" => &[
            r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"id":"a1","type":"function","function":{"name":"demo__sum","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\": 2,"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":" \"b\": 3}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"b2","function":{"name":"demo__multiply","arguments":"{\"a\": 6, \"b\": 7}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
            "[DONE]",
        ],
        // Whole calls in one chunk each, every one numbered 0 (seen from some servers), usage
        // empty at first and then given in the last chunk with the finish reason; no [DONE].
        "whole-calls" => &[
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"demo__sum","arguments":"{\"a\":1,\"b\":2}"}}]},"finish_reason":null}],"usage":{}}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c2","type":"function","function":{"name":"demo__sum","arguments":"{\"a\":3,\"b\":4}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}"#,
        ],
        // No ids at all (older llama.cpp), a name repeated in every delta, arguments as an
        // object (some local servers), and a server that says "stop" although it called tools.
        "no-ids" => &[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"demo__sum","arguments":"{\"a\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"demo__sum","arguments":"5,\"b\":6}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"demo__divide","arguments":{"a":8,"b":2}}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ],
        // Text with keep-alive comments, CRLF line ends, and Groq's usage under x_groq.
        "groq-text" => &[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hello"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" world"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}}"#,
            "[DONE]",
        ],
        // An error reported inside a stream that started well (OpenRouter does this).
        "error-mid-stream" => &[
            r#"{"choices":[{"index":0,"delta":{"content":"Partial"}}]}"#,
            r#"{"error":{"message":"upstream model overloaded","code":502}}"#,
        ],
        // Ends without a finish reason or [DONE]: the answer is incomplete.
        "truncated" => &[r#"{"choices":[{"index":0,"delta":{"content":"Half an"}}]}"#],
        other => panic!("unknown case {other}"),
    };
    let separator = if case == "groq-text" { "\r\n" } else { "\n" };
    let mut text = String::new();
    if case == "groq-text" {
        text.push_str(": keep-alive\r\n\r\n");
    }
    for line in lines {
        text.push_str(&format!("data: {line}{separator}{separator}"));
    }
    text
}

/// Anthropic streams by name: (event, data) pairs.
fn anthropic_body(case: &str) -> String {
    let events: &[(&str, &str)] = match case {
        // Cached prompt tokens, a thinking block the chat does not show, text, a tool call
        // whose input arrives in pieces, and usage updated at the end.
        "anthropic-full" => &[
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":1}}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Let me add."}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"demo__sum","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 2, "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"b\": 3}"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":2}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":25}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ],
        "anthropic-overloaded" => &[
            ("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#),
            ("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        ],
        other => panic!("unknown case {other}"),
    };
    events.iter().map(|(event, data)| format!("event: {event}\ndata: {data}\n\n")).collect()
}

async fn serve() -> String {
    let sse = |text: String| ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response();
    let app = axum::Router::new()
        .route(
            "/{case}/chat/completions",
            post(move |Path(case): Path<String>| async move {
                if case == "json" {
                    // A server that ignores `stream: true`.
                    return axum::Json(json!({"choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "All at once."}}]}))
                    .into_response();
                }
                sse(body(&case))
            }),
        )
        .route("/{case}/v1/messages", post(move |Path(case): Path<String>| async move { sse(anthropic_body(&case)) }));
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

async fn run(server: &str, case: &str) -> Outcome {
    let kind = if case.starts_with("anthropic") { ProviderKind::Anthropic } else { ProviderKind::Openai };
    let base_url = format!("{server}/{case}");
    let provider = llm::from_settings(&settings(kind, &base_url, "", 5.0, 0)).expect("provider builds");
    chat(&provider, ask("go", vec![tool("demo__sum")], true)).await
}

#[tokio::test]
async fn calls_without_index_are_told_apart_by_their_ids() {
    let outcome = run(&serve().await, "no-index").await;
    assert_eq!(outcome.error, None);
    assert_eq!(
        outcome.tool_calls,
        [call("a1", "demo__sum", json!({"a": 2, "b": 3})), call("b2", "demo__multiply", json!({"a": 6, "b": 7})),]
    );
    assert_eq!(outcome.usage, None, "usage: null is no usage");
    assert_eq!(outcome.finish, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn whole_calls_in_one_chunk_sharing_an_index_and_an_empty_usage_are_read() {
    let outcome = run(&serve().await, "whole-calls").await;
    assert_eq!(outcome.error, None);
    assert_eq!(
        outcome.tool_calls,
        [call("c1", "demo__sum", json!({"a": 1, "b": 2})), call("c2", "demo__sum", json!({"a": 3, "b": 4})),]
    );
    assert_eq!(outcome.usage, Some(usage(20, 9)));
    assert_eq!(outcome.finish, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn calls_without_ids_get_distinct_ids_and_repeated_names_are_not_doubled() {
    let outcome = run(&serve().await, "no-ids").await;
    assert_eq!(outcome.error, None);
    let calls = &outcome.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].name.as_str(), &calls[0].arguments), ("demo__sum", &json!({"a": 5, "b": 6})));
    assert_eq!((calls[1].name.as_str(), &calls[1].arguments), ("demo__divide", &json!({"a": 8, "b": 2})));
    let ids: HashSet<&str> = calls.iter().map(|call| call.id.as_str()).collect();
    assert!(ids.len() == 2 && !ids.contains(""), "{ids:?}");
    assert_eq!(outcome.finish, Some(FinishReason::ToolCalls), "calls decide over \"stop\"");
}

#[tokio::test]
async fn text_with_comments_crlf_and_groq_usage_is_read() {
    let outcome = run(&serve().await, "groq-text").await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.texts, ["Hello", " world"]);
    assert_eq!(outcome.usage, Some(usage(7, 2)));
    assert_eq!(outcome.finish, Some(FinishReason::Stop));
}

#[tokio::test]
async fn an_error_inside_the_stream_ends_the_call_with_the_providers_message() {
    let outcome = run(&serve().await, "error-mid-stream").await;
    assert_eq!(outcome.texts, ["Partial"]);
    assert_eq!(outcome.error_code, Some(502));
    assert!(outcome.error.unwrap_or_default().contains("upstream model overloaded"));
}

#[tokio::test]
async fn a_stream_that_just_stops_is_an_incomplete_answer() {
    let outcome = run(&serve().await, "truncated").await;
    assert_eq!(outcome.texts, ["Half an"]);
    assert_eq!(outcome.error_code, Some(502));
    assert_eq!(outcome.finish, None);
}

#[tokio::test]
async fn anthropic_thinking_blocks_cached_tokens_and_pieced_input_are_read() {
    let outcome = run(&serve().await, "anthropic-full").await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.texts, ["Let me add."], "thinking is not shown");
    assert_eq!(outcome.tool_calls, [call("toolu_1", "demo__sum", json!({"a": 2, "b": 3}))]);
    assert_eq!(outcome.usage, Some(usage(100, 25)), "cached prompt tokens count");
    assert_eq!(outcome.finish, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn an_anthropic_error_event_ends_the_call_with_its_message() {
    let outcome = run(&serve().await, "anthropic-overloaded").await;
    assert_eq!(outcome.error_code, Some(502));
    assert!(outcome.error.unwrap_or_default().contains("Overloaded"));
}

#[tokio::test]
async fn a_server_that_ignores_streaming_is_read_as_a_whole_answer() {
    let outcome = run(&serve().await, "json").await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.texts, ["All at once."]);
    assert_eq!(outcome.finish, Some(FinishReason::Stop));
}

#[tokio::test]
async fn the_connection_opened_ahead_of_the_first_call_is_the_one_the_call_uses() {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::extract::ConnectInfo;
    use axum::http::{Method, StatusCode};
    use axum::routing::any;

    let seen: Arc<Mutex<Vec<(Method, SocketAddr)>>> = Arc::default();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        any({
            let seen = seen.clone();
            move |method: Method, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                seen.lock().unwrap().push((method.clone(), peer));
                if method != Method::POST {
                    return StatusCode::METHOD_NOT_ALLOWED.into_response();
                }
                axum::Json(json!({"choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Reused."}}]}))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    let provider = llm::from_settings(&settings(ProviderKind::Openai, &format!("http://{address}/v1"), "", 5.0, 0))
        .expect("provider builds");

    provider.connect_ahead().await;
    assert_eq!(seen.lock().unwrap().iter().map(|(method, _)| method.clone()).collect::<Vec<_>>(), [Method::GET]);
    let outcome = chat(&provider, ask("go", vec![], false)).await;
    assert_eq!(outcome.text(), "Reused.");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, Method::POST);
    assert_eq!(seen[0].1, seen[1].1, "the call went over the connection opened ahead of it");
}

#[tokio::test]
async fn a_provider_out_of_reach_at_start_does_not_fail_the_connection_ahead() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let provider = llm::from_settings(&settings(ProviderKind::Anthropic, &format!("http://{address}"), "k", 5.0, 0))
        .expect("provider builds");
    provider.connect_ahead().await;
    let outcome = chat(&provider, ask("go", vec![], false)).await;
    assert_eq!(outcome.error_code, Some(502), "the first call reports it: {outcome:?}");
}
