//! Provider failures over real HTTP against mock-llm, for both provider kinds: what is retried,
//! what is not, and how a call ends (502 with the provider's message, 504 at the timeout).

mod support;

use std::time::{Duration, Instant};

use mcp_platform::domain::FinishReason;
use serde_json::json;
use support::llm::*;

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_answered_once() {
    for kind in KINDS {
        let mock = mock(json!([
            {"error": {"status": 429, "retry_after": 1, "message": "rate limit reached"}},
            {"text": "after the wait"},
        ]))
        .await;
        let started = Instant::now();
        let outcome = chat(&provider(&mock, kind), ask("hi", vec![], true)).await;
        assert_eq!(outcome.error, None, "{kind:?}");
        assert_eq!(outcome.text(), "after the wait", "{kind:?}");
        assert_eq!(outcome.finish, Some(FinishReason::Stop));
        assert_eq!(mock.requests().len(), 2, "{kind:?}: one retry");
        // The backoff alone would retry within 250 ms; Retry-After asked for a second.
        assert!(started.elapsed() >= Duration::from_millis(950), "{kind:?}: Retry-After ignored");
    }
}

#[tokio::test]
async fn server_errors_beyond_max_retries_end_as_502_with_the_providers_message() {
    for kind in KINDS {
        for streaming in [true, false] {
            let mock = mock(json!([{"repeat": true,
                "error": {"status": 500, "message": "the model backend exploded"}}]))
            .await;
            let outcome = chat(&provider_with(&mock, kind, 10.0, 2), ask("hi", vec![], streaming)).await;
            assert_eq!(outcome.error_code, Some(502), "{kind:?}");
            let message = outcome.error.unwrap_or_default();
            assert!(message.contains("the model backend exploded"), "{kind:?}: {message}");
            assert!(message.contains("500"), "{kind:?}: {message}");
            assert!(outcome.texts.is_empty());
            assert_eq!(mock.requests().len(), 3, "{kind:?}: first try and 2 retries");
        }
    }
}

#[tokio::test]
async fn a_plain_text_error_body_is_quoted_as_it_is() {
    let mock = mock(json!([{"error": {"status": 503, "body": "upstream connect error"}, "repeat": true}])).await;
    let outcome = chat(&provider_with(&mock, KINDS[0], 10.0, 0), ask("hi", vec![], true)).await;
    assert_eq!(outcome.error_code, Some(502));
    assert!(outcome.error.unwrap_or_default().contains("upstream connect error"));
    assert_eq!(mock.requests().len(), 1, "max_retries 0: no retry");
}

#[tokio::test]
async fn a_request_the_provider_rejects_is_not_retried() {
    for kind in KINDS {
        let mock = mock(json!([
            {"error": {"status": 400, "message": "model 'nope' does not exist"}},
            {"text": "never asked for"},
        ]))
        .await;
        let outcome = chat(&provider(&mock, kind), ask("hi", vec![], true)).await;
        assert_eq!(outcome.error_code, Some(502), "{kind:?}");
        assert!(outcome.error.unwrap_or_default().contains("model 'nope' does not exist"));
        assert_eq!(mock.requests().len(), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn a_disconnect_after_text_started_is_an_error_and_never_repeats_the_text() {
    for kind in KINDS {
        let mock = mock(json!([
            {"text": "one two three four", "disconnect_after": 2},
            {"text": "a retry would say this"},
        ]))
        .await;
        let outcome = chat(&provider(&mock, kind), ask("hi", vec![], true)).await;
        assert_eq!(outcome.texts, ["one ", "two "], "{kind:?}");
        assert_eq!(outcome.error_code, Some(502), "{kind:?}");
        assert_eq!(outcome.finish, None, "{kind:?}");
        assert_eq!(mock.requests().len(), 1, "{kind:?}: no retry after text was shown");
    }
}

#[tokio::test]
async fn a_disconnect_before_anything_was_shown_is_retried() {
    for kind in KINDS {
        for streaming in [true, false] {
            let mock = mock(json!([
                {"text": "lost", "disconnect_after": 0},
                {"text": "second try"},
            ]))
            .await;
            let outcome = chat(&provider(&mock, kind), ask("hi", vec![], streaming)).await;
            assert_eq!(outcome.error, None, "{kind:?} streaming={streaming}");
            assert_eq!(outcome.text(), "second try", "{kind:?} streaming={streaming}");
            assert_eq!(mock.requests().len(), 2, "{kind:?} streaming={streaming}");
        }
    }
}

#[tokio::test]
async fn a_provider_slow_to_answer_times_out_as_504() {
    for kind in KINDS {
        for streaming in [true, false] {
            let mock = mock(json!([{"text": "too late", "first_byte_delay_ms": 5000}])).await;
            let outcome = chat(&provider_with(&mock, kind, 0.3, 2), ask("hi", vec![], streaming)).await;
            assert_eq!(outcome.error_code, Some(504), "{kind:?} streaming={streaming}");
            assert!(outcome.texts.is_empty());
            assert_eq!(mock.requests().len(), 1, "{kind:?}: a timeout is not retried");
        }
    }
}

#[tokio::test]
async fn a_stream_that_falls_silent_times_out_as_504_after_its_text() {
    for kind in KINDS {
        let mock = mock(json!([{"chunks": ["first ", "second"], "delay_ms": 5000}])).await;
        let outcome = chat(&provider_with(&mock, kind, 0.3, 2), ask("hi", vec![], true)).await;
        assert_eq!(outcome.texts, ["first "], "{kind:?}");
        assert_eq!(outcome.error_code, Some(504), "{kind:?}");
        assert_eq!(mock.requests().len(), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn a_stream_longer_than_the_timeout_whose_pauses_are_shorter_is_whole() {
    for kind in KINDS {
        let chunks = ["one ", "two ", "three ", "four ", "five ", "six"];
        let mock = mock(json!([{"chunks": chunks, "delay_ms": 120}])).await;
        let outcome = chat(&provider_with(&mock, kind, 0.3, 2), ask("hi", vec![], true)).await;
        assert_eq!(outcome.error, None, "{kind:?}: 0.6 s in all, no pause of 0.3 s");
        assert_eq!(outcome.text(), chunks.concat(), "{kind:?}");
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_then_reported_with_its_address() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    for kind in KINDS {
        let base_url = format!("http://{address}/v1");
        let provider =
            mcp_platform::llm::from_settings(&settings(kind, &base_url, "k", 5.0, 1)).expect("provider builds");
        let outcome = chat(&provider, ask("hi", vec![], true)).await;
        assert_eq!(outcome.error_code, Some(502), "{kind:?}");
        let message = outcome.error.unwrap_or_default();
        assert!(message.contains("cannot reach"), "{kind:?}: {message}");
        assert!(message.contains(&address.to_string()), "{kind:?}: {message}");
        assert!(message.contains("after 1 retry"), "{kind:?}: {message}");
    }
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_with_the_key_to_fix() {
    let mut unknown = settings(KINDS[0], "http://127.0.0.1:1/v1", "k", 5.0, 1);
    unknown.active = "nope".to_owned();
    let error = mcp_platform::llm::from_settings(&unknown).err().expect("refused").to_string();
    assert!(error.contains("llm.active") && error.contains("test"), "{error}");

    let bad_url = settings(KINDS[0], "api.example.com/v1", "k", 5.0, 1);
    let error = mcp_platform::llm::from_settings(&bad_url).err().expect("refused").to_string();
    assert!(error.contains("llm.providers.test.base_url"), "{error}");

    let zero_timeout = settings(KINDS[1], "http://127.0.0.1:1", "k", 0.0, 1);
    let error = mcp_platform::llm::from_settings(&zero_timeout).err().expect("refused").to_string();
    assert!(error.contains("llm.request_timeout"), "{error}");
}
