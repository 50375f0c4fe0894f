//! The limits of SPEC §8 over real sockets: chats per minute, a daily token budget shared by
//! every process of one store, and sockets per address.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[tokio::test]
async fn the_chat_over_the_rate_is_a_429_that_says_when_to_retry() {
    let app = TestApp::start(Options {
        script: Some(json!([{"text": "quick", "repeat": true}])),
        // One chat back every 20 s: the burst is spent long before one comes back, however
        // slow the machine.
        configure: Box::new(|settings| settings.limits.chats_per_minute = 3),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    for n in 0..3 {
        let answer = client.chat(&format!("r-{n}"), json!({"text": "hi"})).await;
        assert_eq!(answer.last().expect("terminal")["status"], "complete", "chat {n}: {answer:?}");
    }
    let refused = client.chat("r-3", json!({"text": "hi"})).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["error"]["code"], 429, "{refused:?}");
    let retry = refused[0]["error"]["data"]["retry_after_seconds"].as_u64().expect("retry_after_seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(app.events().iter().all(|event| event["request_id"] != "r-3"), "a refused chat leaves no trace");
    app.shutdown().await;
}

#[tokio::test]
async fn a_token_budget_spent_in_one_process_is_refused_in_another_sharing_the_store() {
    let budget = |settings: &mut mcp_platform::config::Settings| settings.limits.tokens_per_day = 10;
    let first = TestApp::start(Options {
        script: Some(
            json!([{"text": "an answer that costs tokens", "usage": {"prompt_tokens": 30, "completion_tokens": 12}}]),
        ),
        configure: Box::new(budget),
        ..Options::default()
    })
    .await;
    let second = TestApp::start(Options {
        store_path: Some(first.store_path.clone()),
        configure: Box::new(budget),
        ..Options::default()
    })
    .await;
    let spent = first.client().await.chat("spend", json!({"text": "hi"})).await;
    assert_eq!(spent.last().expect("terminal")["status"], "complete");

    let refused = second.client().await.chat("more", json!({"text": "hi"})).await;
    assert_eq!(refused[0]["error"]["code"], 429, "{refused:?}");
    assert!(refused[0]["error"]["message"].as_str().unwrap().contains("limits.tokens_per_day"), "{refused:?}");
    let retry = refused[0]["error"]["data"]["retry_after_seconds"].as_u64().expect("retry_after_seconds");
    assert!((1..=86_400).contains(&retry), "until midnight UTC: {retry}");
    assert!(second.model_requests().is_empty(), "the refused chat never reached the model");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn sockets_over_the_per_address_limit_are_refused_at_the_upgrade_until_one_closes() {
    let app = TestApp::start(Options {
        configure: Box::new(|settings| settings.limits.connections_per_ip = 2),
        ..Options::default()
    })
    .await;
    let first = app.client().await;
    let _second = app.client().await;
    let refused = match WsClient::connect_with(app.addr, &[]).await {
        Ok(_) => panic!("a third socket from one address was admitted"),
        Err(refusal) => refusal,
    };
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(refused.body.contains("limits.connections_per_ip"), "{refused:?}");
    assert!(refused.retry_after.is_some(), "{refused:?}");

    drop(first);
    // The server frees the place once it has seen the socket close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut third = loop {
        match WsClient::connect_with(app.addr, &[]).await {
            Ok((client, _)) => break client,
            Err(refusal) => assert_eq!(refusal.status, 429, "{refusal:?}"),
        }
        assert!(Instant::now() < deadline, "closing a socket lets a new one in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    third.send(json!({"action": "ping", "request_id": "p"})).await;
    assert_eq!(third.recv().await["status"], "pong");
    app.shutdown().await;
}
