//! mock-llm without a script (the offline demo) and its inspection endpoints, over real HTTP
//! through both provider kinds.

mod support;

use std::sync::Arc;

use mcp_platform::domain::{FinishReason, Message};
use mcp_platform::llm::LlmRequest;
use mock_llm::MockLlm;
use serde_json::{Value, json};
use support::llm::*;

async fn demo() -> MockLlm {
    MockLlm::start(local(), None).await.expect("mock starts")
}

#[tokio::test]
async fn arithmetic_goes_through_the_offered_tool_and_the_result_is_answered() {
    for kind in KINDS {
        for streaming in [true, false] {
            let mock = demo().await;
            let provider = provider(&mock, kind);
            let tools = vec![tool("demo__echo"), tool("demo__sum")];
            let first = chat(&provider, ask("what is 2+3", tools.clone(), streaming)).await;
            assert_eq!(first.error, None, "{kind:?}");
            assert_eq!(first.tool_calls.len(), 1, "{kind:?}");
            let sum = first.tool_calls[0].clone();
            assert_eq!((sum.name.as_str(), &sum.arguments), ("demo__sum", &json!({"a": 2, "b": 3})));
            assert_eq!(first.finish, Some(FinishReason::ToolCalls));

            let mut messages = ask("what is 2+3", vec![], streaming).messages;
            messages.push(Arc::new(Message::assistant("", vec![sum.clone()])));
            messages.push(Arc::new(Message::tool(&sum.id, "5")));
            let request =
                LlmRequest { model: None, messages, tools: tools.into_iter().map(Arc::new).collect(), streaming };
            let second = chat(&provider, request).await;
            assert_eq!(second.error, None, "{kind:?}");
            assert!(second.tool_calls.is_empty());
            assert_eq!(second.text(), "2 + 3 = 5.", "{kind:?}");
            assert_eq!(second.finish, Some(FinishReason::Stop));
            assert!(second.usage.is_some());
        }
    }
}

#[tokio::test]
async fn the_fitting_tool_is_chosen_for_each_operation() {
    let mock = demo().await;
    let provider = provider(&mock, KINDS[0]);
    let tools: Vec<_> = ["calc__add", "calc__subtract", "calc__multiply", "calc__divide", "calc__power"]
        .into_iter()
        .map(tool)
        .collect();
    let cases = [
        ("multiply 6 by 7", "calc__multiply", json!({"a": 6, "b": 7})),
        ("what is 7 minus 2", "calc__subtract", json!({"a": 7, "b": 2})),
        ("10 divided by 4", "calc__divide", json!({"a": 10, "b": 4})),
        ("2 to the power of 8", "calc__power", json!({"a": 2, "b": 8})),
        ("add 1.5 and 2", "calc__add", json!({"a": 1.5, "b": 2})),
    ];
    for (text, name, arguments) in cases {
        let outcome = chat(&provider, ask(text, tools.clone(), true)).await;
        assert_eq!(outcome.tool_calls.len(), 1, "{text}");
        assert_eq!(
            (outcome.tool_calls[0].name.as_str(), &outcome.tool_calls[0].arguments),
            (name, &arguments),
            "{text}"
        );
    }
}

#[tokio::test]
async fn without_a_fitting_tool_it_says_what_it_is_and_echoes_word_by_word() {
    for kind in KINDS {
        let mock = demo().await;
        let outcome = chat(&provider(&mock, kind), ask("what is 2+3", vec![tool("demo__echo")], true)).await;
        assert!(outcome.tool_calls.is_empty(), "{kind:?}");
        let text = outcome.text();
        assert!(text.contains("offline demo model"), "{kind:?}: {text}");
        assert!(text.ends_with("You said: what is 2+3"), "{kind:?}: {text}");
        assert_eq!(outcome.texts.len(), text.split(' ').count(), "{kind:?}: one chunk per word");
    }
}

#[tokio::test]
async fn scripts_and_the_request_log_are_managed_over_http() {
    let mock = demo().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", mock.base_url());

    let refused = http.post(url("/__script")).body(r#"[{"text": "x", "chunks": ["y"]}]"#).send().await.expect("post");
    assert_eq!(refused.status(), 400);
    let reason = refused.text().await.expect("body");
    assert!(reason.contains("turn 1") && reason.contains("not both"), "{reason}");

    let accepted = http
        .post(url("/__script"))
        .body(json!({"turns": [{"text": "scripted answer"}]}).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(accepted.status(), 200);

    let provider = provider(&mock, KINDS[0]);
    let scripted = chat(&provider, ask("first", vec![], true)).await;
    assert_eq!(scripted.text(), "scripted answer");
    let after = chat(&provider, ask("second", vec![], true)).await;
    assert!(after.text().contains("offline demo model"), "the script ran out: demo again");

    let log: Value = http.get(url("/__requests")).send().await.expect("get").json().await.expect("json");
    let log = log.as_array().expect("array");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["path"], "/v1/chat/completions");
    assert_eq!(log[0]["body"]["messages"][1]["content"], "first");
    assert_eq!(log[1]["body"]["messages"][1]["content"], "second");
    assert_eq!(log[0]["headers"]["authorization"], "Bearer test-key");

    let cleared = http.delete(url("/__requests")).send().await.expect("delete");
    assert!(cleared.status().is_success());
    assert!(mock.requests().is_empty());
}
