//! Answers of both provider kinds over real HTTP against mock-llm: text, tool calls, usage,
//! finish reasons, streamed and not, with the same outcome either way.

mod support;

use mcp_platform::domain::FinishReason;
use serde_json::json;
use support::llm::*;

/// Runs `turn` streamed and not against each provider kind and returns both outcomes per kind.
async fn both_ways(turn: serde_json::Value, request_text: &str) -> Vec<(Outcome, Outcome)> {
    let mut results = Vec::new();
    for kind in KINDS {
        let mock = mock(json!([turn.clone(), turn.clone()])).await;
        let provider = provider(&mock, kind);
        let tools = vec![tool("demo__sum"), tool("demo__multiply")];
        let streamed = chat(&provider, ask(request_text, tools.clone(), true)).await;
        let whole = chat(&provider, ask(request_text, tools, false)).await;
        assert_eq!(mock.requests().len(), 2, "{kind:?}");
        assert_eq!(streamed.error, None, "{kind:?}");
        assert_eq!(whole.error, None, "{kind:?}");
        assert_eq!(streamed.after_end + whole.after_end, 0, "{kind:?}: events after Finish");
        assert_eq!(streamed.answer(), whole.answer(), "{kind:?}: streamed vs whole");
        results.push((streamed, whole));
    }
    results
}

#[tokio::test]
async fn streamed_text_arrives_in_its_chunks_with_usage_and_matches_the_whole_answer() {
    let chunks = ["Hello", " there,", " friend — ünïcode ok."];
    let turn = json!({"chunks": chunks, "usage": {"prompt_tokens": 11, "completion_tokens": 3}});
    for (streamed, whole) in both_ways(turn, "hi").await {
        assert_eq!(streamed.texts, chunks);
        assert_eq!(whole.texts, [chunks.concat()], "non-streaming yields one text");
        assert_eq!(streamed.usage, Some(usage(11, 3)));
        assert_eq!(streamed.finish, Some(FinishReason::Stop));
        assert!(streamed.tool_calls.is_empty());
    }
}

#[tokio::test]
async fn one_tool_call_is_assembled_with_its_arguments_parsed() {
    let turn = json!({"tool_calls": [
        {"id": "call_1", "name": "demo__sum", "arguments": {"a": 2, "b": 3}}]});
    for (streamed, _) in both_ways(turn, "what is 2+3").await {
        assert_eq!(streamed.tool_calls, [call("call_1", "demo__sum", json!({"a": 2, "b": 3}))]);
        assert_eq!(streamed.finish, Some(FinishReason::ToolCalls));
        assert!(streamed.usage.is_some_and(|usage| usage.total_tokens > 0));
    }
}

#[tokio::test]
async fn parallel_tool_calls_are_assembled_separately_in_order() {
    let arguments = [
        json!({"a": 2, "b": 3}),
        json!({"a": 6.5, "b": -7, "note": "a longer \"quoted\" text, ünïcode"}),
        json!({"nested": {"list": [1, 2, {"deep": true}]}, "a": 0, "b": 1}),
    ];
    let turn = json!({"text": "Let me compute.", "tool_calls": [
        {"id": "call_a", "name": "demo__sum", "arguments": arguments[0]},
        {"id": "call_b", "name": "demo__multiply", "arguments": arguments[1]},
        {"id": "call_c", "name": "demo__sum", "arguments": arguments[2]},
    ]});
    for (streamed, _) in both_ways(turn, "several sums").await {
        assert_eq!(streamed.text(), "Let me compute.");
        assert_eq!(
            streamed.tool_calls,
            [
                call("call_a", "demo__sum", arguments[0].clone()),
                call("call_b", "demo__multiply", arguments[1].clone()),
                call("call_c", "demo__sum", arguments[2].clone()),
            ]
        );
        assert_eq!(streamed.finish, Some(FinishReason::ToolCalls));
    }
}

#[tokio::test]
async fn arguments_that_are_not_json_come_through_verbatim_as_a_string() {
    let turn = json!({"tool_calls": [{"id": "call_x", "name": "demo__sum", "arguments": "{\"a\": 2,"}]});
    for kind in KINDS {
        let mock = mock(json!([turn])).await;
        let outcome = chat(&provider(&mock, kind), ask("sum", vec![tool("demo__sum")], true)).await;
        assert_eq!(outcome.error, None, "{kind:?}");
        assert_eq!(outcome.tool_calls, [call("call_x", "demo__sum", json!("{\"a\": 2,"))], "{kind:?}");
    }
}

#[tokio::test]
async fn a_cut_off_answer_reports_length_and_missing_usage_stays_missing() {
    let turn = json!({"text": "The answer was cut", "finish_reason": "length", "no_usage": true});
    for (streamed, _) in both_ways(turn, "tell me everything").await {
        assert_eq!(streamed.finish, Some(FinishReason::Length));
        assert_eq!(streamed.usage, None);
    }
}

#[tokio::test]
async fn counted_usage_follows_the_request_and_the_answer() {
    for kind in KINDS {
        let mock = mock(json!([{"text": "one two three"}])).await;
        let outcome = chat(&provider(&mock, kind), ask("four five", vec![], true)).await;
        // The mock counts words: the system prompt (5) and the user text (2).
        assert_eq!(outcome.usage, Some(usage(7, 3)), "{kind:?}");
    }
}
