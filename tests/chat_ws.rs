//! `/ws/chat` end to end: the axum app on a loopback port, mock-llm over HTTP, the demo MCP
//! server as a child process, the JSONL store in a temp dir.

mod support;

use mcp_platform::domain::Role;
use mcp_platform::protocol::ChatPayload;
use mcp_platform::store::jsonl::JsonlStore;
use mcp_platform::store::record::{Record, UserTurn};
use mcp_platform::store::{EventStore, EventType, NewEvent};
use serde_json::{Value, json};
use support::*;

fn ping(request_id: &str) -> Value {
    json!({"action": "ping", "request_id": request_id})
}

async fn assert_alive(client: &mut WsClient) {
    client.send(ping("alive?")).await;
    let pong = client.recv().await;
    assert_eq!(pong, json!({"request_id": "alive?", "status": "pong"}));
}

#[tokio::test]
async fn what_is_two_plus_three_runs_the_demo_tool_and_logs_the_turn() {
    let app = TestApp::start(Options::default()).await;
    let mut client = app.client().await;
    let messages = client.chat("r-1", json!({"text": "what is 2+3"})).await;
    assert_well_formed(&messages);

    let calls = chunks(&messages, "tool_call");
    assert_eq!(calls.len(), 1, "{messages:#?}");
    assert_eq!(calls[0]["name"], "demo__sum");
    assert_eq!(calls[0]["arguments"], json!({"a": 2, "b": 3}));
    let results = chunks(&messages, "tool_result");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["content"], "5");
    assert!(text_of(&messages).contains('5'), "answer: {}", text_of(&messages));
    let complete = messages.last().expect("terminal");
    assert_eq!(complete["status"], "complete");
    assert!(complete["metadata"]["tokens"].as_u64().expect("tokens") > 0);
    assert_eq!(complete["metadata"]["tool_hops"], 1);
    assert_eq!(complete["metadata"]["finish_reason"], "stop");
    let conversation_id = messages[0]["conversation_id"].as_str().expect("conversation id").to_owned();

    let events = app.events();
    let kinds: Vec<&str> = events.iter().map(|event| event["type"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["user_message", "assistant_message", "tool_result", "assistant_message"]);
    assert!(events.iter().all(|event| event["request_id"] == "r-1" && event["conversation_id"] == *conversation_id));
    assert_eq!(events[1]["tool_calls"][0]["name"], "demo__sum");
    assert_eq!(events[2]["content"], "5");
    assert_eq!(events[2]["tool_call_id"], calls[0]["id"]);
    assert_eq!(events[3]["model"], "mock-demo");
    let seqs: Vec<u64> = events.iter().map(|event| event["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_verifies(&app.store_path);

    let requests = app.model_requests();
    assert_eq!(requests.len(), 2, "one model call per hop");
    let second = &requests[1]["messages"];
    let tool_message = second.as_array().expect("messages").iter().find(|message| message["role"] == "tool");
    assert_eq!(tool_message.expect("the tool result went back to the model")["content"], "5");
    app.shutdown().await;
}

#[tokio::test]
async fn a_model_that_always_calls_tools_stops_at_max_tool_hops() {
    let always_sum = json!({"tool_calls": [{"name": "demo__sum", "arguments": {"a": 1, "b": 1}}]});
    let script = json!([always_sum, always_sum, {"text": "Giving up on tools: the answer is 2."}]);
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(|s| s.chat.service.max_tool_hops = 2),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    let messages = client.chat("loop", json!({"text": "keep adding"})).await;
    assert_well_formed(&messages);
    let complete = messages.last().expect("terminal");
    assert_eq!(complete["metadata"]["finish_reason"], "tool_limit", "{complete}");
    assert_eq!(complete["metadata"]["tool_hops"], 2);
    assert_eq!(chunks(&messages, "tool_result").len(), 2);
    assert!(text_of(&messages).contains("answer is 2"));
    let requests = app.model_requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[2].get("tools").is_none(), "the final call offers no tools: {}", requests[2]);
    app.shutdown().await;
}

#[tokio::test]
async fn every_protocol_error_is_structured_and_the_socket_survives() {
    let script = json!([{"text": "slow answer", "first_byte_delay_ms": 1500}]);
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(|settings| {
            settings.websocket.max_message_bytes = 2048;
            settings.websocket.max_in_flight_per_connection = 1;
        }),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;

    client.send_text("{not json".into()).await;
    let error = client.recv().await;
    assert_eq!(error["status"], "error");
    assert_eq!(error["request_id"], Value::Null);
    assert_eq!(error["error"]["code"], 400);
    assert_alive(&mut client).await;

    client
        .send(json!({"action": "chat", "request_id": "bad", "payload": {"text": "", "streaming": 1, "x": true}}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["request_id"], "bad");
    assert_eq!(error["error"]["code"], 400);
    let mut fields: Vec<&str> = error["error"]["data"]["validation_errors"]
        .as_array()
        .expect("validation_errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field"))
        .collect();
    fields.sort();
    assert_eq!(fields, ["payload.streaming", "payload.text", "payload.x"]);
    assert_alive(&mut client).await;

    client.send(json!({"action": "dance", "request_id": "d"})).await;
    assert_eq!(client.recv().await["error"]["code"], 400);
    assert_alive(&mut client).await;

    let big = json!({"action": "chat", "request_id": "big", "payload": {"text": "x".repeat(4000)}});
    client.send(big).await;
    let error = client.recv().await;
    assert_eq!((error["request_id"].clone(), error["error"]["code"].clone()), (json!("big"), json!(413)));
    assert_alive(&mut client).await;

    client.send(json!({"action": "resume", "request_id": "never-seen", "after_seq": 0})).await;
    assert_eq!(client.recv().await["error"]["code"], 404);
    assert_alive(&mut client).await;

    // One request in flight is the limit: a second is refused with 429.
    client.send(json!({"action": "chat", "request_id": "first", "payload": {"text": "hello"}})).await;
    client.send(json!({"action": "chat", "request_id": "second", "payload": {"text": "hello"}})).await;
    let mut first = Vec::new();
    let refused = loop {
        let message = client.recv().await;
        if message["request_id"] == "second" {
            break message;
        }
        first.push(message);
    };
    assert_eq!(refused["error"]["code"], 429, "{refused}");
    first.extend(client.collect("first", &mut Vec::new()).await);
    assert_well_formed(&first);

    // The same request_id with another payload: 409.
    client.send(json!({"action": "chat", "request_id": "first", "payload": {"text": "something else"}})).await;
    let conflict = client.recv().await;
    assert_eq!(conflict["error"]["code"], 409, "{conflict}");
    assert_alive(&mut client).await;
    app.shutdown().await;
}

#[tokio::test]
async fn payload_text_is_bounded_by_the_frame_limit_alone() {
    let app = TestApp::start(Options {
        configure: Box::new(|settings| settings.websocket.max_message_bytes = 2048),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    let frame = |request_id: &str, chars: usize| {
        json!({"action": "chat", "request_id": request_id, "payload": {"text": "x".repeat(chars)}}).to_string()
    };
    let overhead = frame("at", 0).len();
    client.send_text(frame("at", 2048 - overhead)).await;
    let served = client.collect("at", &mut Vec::new()).await;
    assert_well_formed(&served);
    assert_eq!(served.last().expect("terminal")["status"], "complete", "a frame of exactly the limit is served");

    client.send_text(frame("over", 2049 - overhead)).await;
    let refused = client.recv().await;
    assert_eq!((refused["request_id"].clone(), refused["error"]["code"].clone()), (json!("over"), json!(413)));
    assert!(refused["error"]["message"].as_str().expect("message").contains("websocket.max_message_bytes"));
    assert_alive(&mut client).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_stored_request_whose_final_record_is_corrupt_gets_a_500_with_a_correlation_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_path = dir.path().join("events.jsonl");
    let payload = ChatPayload {
        text: Some("what is 2+3".into()),
        conversation_id: None,
        model: None,
        streaming: None,
        prompt: None,
        resources: Vec::new(),
    };
    let user_turn = UserTurn {
        text: "what is 2+3".into(),
        fingerprint: payload.fingerprint(),
        prompt: None,
        resources: Vec::new(),
    };
    let user_turn = Record::UserTurn(user_turn).into_event("c-1".into(), "corrupt".into(), "anonymous".into(), 3);
    let answer = NewEvent {
        kind: EventType::AssistantMessage,
        role: Some(Role::Assistant),
        model: Some("mock-demo".into()),
        extra: json!({"status": "complete", "metadata": {"tokens": "many"}}).as_object().expect("object").clone(),
        ..user_turn.clone()
    };
    let path = store_path.clone();
    let (store, _) = tokio::task::spawn_blocking(move || JsonlStore::open(path, false))
        .await
        .expect("open task")
        .expect("open the store");
    store.append(vec![user_turn, answer]).await.expect("append");
    drop(store);

    let app = TestApp::start(Options { store_path: Some(store_path), ..Options::default() }).await;
    let mut client = app.client().await;
    let replayed = client.chat("corrupt", json!({"text": "what is 2+3"})).await;
    client.send(json!({"action": "resume", "request_id": "corrupt"})).await;
    let resumed = client.recv().await;
    assert_eq!(replayed.len(), 1, "{replayed:#?}");
    for error in [&replayed[0], &resumed] {
        assert_eq!((error["request_id"].as_str(), error["status"].as_str()), (Some("corrupt"), Some("error")));
        assert_eq!(error["error"]["code"], 500, "{error}");
        assert!(error["error"]["message"].as_str().expect("message").contains("correlation id"), "{error}");
    }
    assert!(app.model_requests().is_empty(), "a stored request is never run again");
    assert_eq!(app.events().len(), 2, "nothing was appended");
    assert_alive(&mut client).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_request_id_on_a_new_connection_is_replayed_from_the_store() {
    let app = TestApp::start(Options::default()).await;
    let original = app.client().await.chat("dup", json!({"text": "what is 2+3"})).await;
    let model_calls = app.model_requests().len();

    let replay = app.client().await.chat("dup", json!({"text": "what is 2+3"})).await;
    assert_well_formed(&replay);
    assert_eq!(replay[0]["replayed"], true);
    assert_eq!(app.model_requests().len(), model_calls, "the model was not called again");
    assert_eq!(chunks(&replay, "tool_call"), chunks(&original, "tool_call"));
    assert_eq!(chunks(&replay, "tool_result")[0]["content"], "5");
    assert_eq!(text_of(&replay), text_of(&original));
    let complete = replay.last().expect("terminal");
    assert_eq!(complete["metadata"]["cached"], true);
    assert_eq!(complete["metadata"]["tokens"], original.last().expect("terminal")["metadata"]["tokens"]);
    assert_eq!(app.events().iter().filter(|event| event["type"] == "user_message").count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_the_model_stream() {
    let words: Vec<String> = (0..200).map(|n| format!("word{n}")).collect();
    let script = json!([{"text": words.join(" "), "delay_ms": 20}]);
    let app = TestApp::start(Options { script: Some(script), ..Options::default() }).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "c-1", "payload": {"text": "talk"}})).await;
    let mut messages = vec![client.recv().await, client.recv().await];
    assert_eq!(messages[1]["chunk"]["type"], "text");
    client.send(json!({"action": "cancel", "request_id": "c-1"})).await;
    messages.extend(client.collect("c-1", &mut Vec::new()).await);
    assert_well_formed(&messages);
    assert_eq!(messages.last().expect("terminal")["status"], "cancelled");
    assert!(text_of(&messages).split_whitespace().count() < 200, "the stream stopped early");
    let last = app.events().pop().expect("the cancellation is logged");
    assert_eq!(last["extra"]["status"], "cancelled");
    assert_alive(&mut client).await;
    app.shutdown().await;
}

#[tokio::test]
async fn disconnect_then_resume_delivers_the_rest_without_gap_or_repeat() {
    let words: Vec<String> = (0..30).map(|n| format!("w{n}")).collect();
    let full_text = words.join(" ");
    let script = json!([{"text": full_text, "delay_ms": 50}]);
    let app = TestApp::start(Options { script: Some(script), ..Options::default() }).await;

    let mut first = app.client().await;
    first.send(json!({"action": "chat", "request_id": "res", "payload": {"text": "talk"}})).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(first.recv().await);
    }
    drop(first);

    let mut second = app.client().await;
    let last_seq = seen.last().expect("seen")["seq"].as_u64().expect("seq");
    second.send(json!({"action": "resume", "request_id": "res", "after_seq": last_seq})).await;
    let rest = second.collect("res", &mut Vec::new()).await;
    assert_eq!(rest[0]["seq"], last_seq + 1, "continues right after what the client saw");
    seen.extend(rest);
    assert_well_formed(&seen);
    assert_eq!(text_of(&seen).trim(), full_text);
    app.shutdown().await;
}

#[tokio::test]
async fn two_requests_on_one_socket_interleave_and_both_complete() {
    let script = json!([
        {"text": "alpha beta gamma delta epsilon", "delay_ms": 40, "repeat": false},
        {"text": "one two three four five", "delay_ms": 40}
    ]);
    let app = TestApp::start(Options { script: Some(script), ..Options::default() }).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "a", "payload": {"text": "first"}})).await;
    client.send(json!({"action": "chat", "request_id": "b", "payload": {"text": "second"}})).await;
    let mut order = Vec::new();
    let mut by_request: std::collections::HashMap<String, Vec<Value>> = Default::default();
    while by_request.values().filter(|messages| messages.last().is_some_and(is_terminal)).count() < 2 {
        let message = client.recv().await;
        let request_id = message["request_id"].as_str().expect("request_id").to_owned();
        order.push(request_id.clone());
        by_request.entry(request_id).or_default().push(message);
    }
    for messages in by_request.values() {
        assert_well_formed(messages);
        assert_eq!(messages.last().expect("terminal")["status"], "complete");
    }
    let switches = order.windows(2).filter(|pair| pair[0] != pair[1]).count();
    assert!(switches >= 2, "the two answers interleave: {order:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn cancel_during_a_tool_call_cancels_it_at_the_mcp_server() {
    let marker_dir = tempfile::tempdir().expect("temp dir");
    let marker = marker_dir.path().join("cancelled");
    let slow = json!({"tool_calls": [{"name": "demo__slow_count", "arguments": {"n": 100, "delay_ms": 50}}]});
    let app = TestApp::start(Options {
        script: Some(json!([slow])),
        servers: vec![("demo", demo_server(&[("DEMO_CANCEL_MARKER", &marker.display().to_string())]))],
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "count", "payload": {"text": "count slowly"}})).await;
    let mut messages = Vec::new();
    while chunks(&messages, "progress").len() < 3 {
        messages.push(client.recv().await);
    }
    client.send(json!({"action": "cancel", "request_id": "count"})).await;
    messages.extend(client.collect("count", &mut Vec::new()).await);
    assert_well_formed(&messages);
    assert_eq!(messages.last().expect("terminal")["status"], "cancelled");
    let progress: Vec<f64> =
        chunks(&messages, "progress").iter().map(|data| data["progress"].as_f64().expect("progress")).collect();
    assert!(progress.windows(2).all(|pair| pair[0] < pair[1]), "progress in order: {progress:?}");
    assert!(chunks(&messages, "progress").iter().all(|data| data["total"] == 100.0));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "the demo server saw the cancellation");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let counted: u32 =
        std::fs::read_to_string(&marker).expect("marker").trim_start_matches("cancelled at ").parse().expect("count");
    assert!((3..100).contains(&counted), "stopped mid-way, at {counted}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_server_that_is_down_gives_a_notice_and_the_answer_goes_on() {
    let ghost = support::mcp::server("/nonexistent/mcp-server", &[]);
    let app =
        TestApp::start(Options { servers: vec![("demo", demo_server(&[])), ("ghost", ghost)], ..Options::default() })
            .await;
    let messages = app.client().await.chat("n-1", json!({"text": "what is 2+3"})).await;
    assert_well_formed(&messages);
    let notices = chunks(&messages, "notice");
    assert_eq!(notices.len(), 1, "{messages:#?}");
    assert!(notices[0].as_str().expect("text").contains("\"ghost\""), "{}", notices[0]);
    assert_eq!(chunks(&messages, "tool_result")[0]["content"], "5", "the demo server still answers");
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    app.shutdown().await;
}

#[tokio::test]
async fn prompts_and_resources_join_the_user_turn() {
    let app = TestApp::start(Options::default()).await;
    let mut client = app.client().await;
    let payload = json!({"text": "please", "prompt": {"name": "demo__explain", "arguments": {"topic": "tides"}},
                         "resources": ["demo://greeting/Ada"]});
    let messages = client.chat("p-1", payload).await;
    assert_eq!(messages.last().expect("terminal")["status"], "complete", "{messages:#?}");
    let request = app.model_requests().pop().expect("the model was called");
    let user = request["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .rev()
        .find(|message| message["role"] == "user")
        .cloned();
    let user = user.expect("a user message")["content"].as_str().expect("text").to_owned();
    assert!(user.contains("Hello, Ada!"), "{user}");
    assert!(user.contains("Explain tides in three short sentences."), "{user}");
    assert!(user.ends_with("please"), "{user}");
    let logged = app.events().into_iter().find(|event| event["type"] == "user_message").expect("user message");
    assert_eq!(logged["content"], user.as_str(), "the log holds what the model saw");

    let unknown = client.chat("p-2", json!({"prompt": {"name": "demo__nope"}})).await;
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["error"]["code"], 400);
    assert_eq!(unknown[0]["error"]["data"]["validation_errors"][0]["field"], "payload.prompt.name");
    assert_alive(&mut client).await;
    app.shutdown().await;
}

#[tokio::test]
async fn http_endpoints_show_health_servers_tools_and_conversations() {
    let app = TestApp::start(Options::default()).await;
    let get = |path: &str| {
        let url = format!("http://{}{path}", app.addr);
        async move {
            let response = reqwest::get(url).await.expect("GET");
            (response.status().as_u16(), response.json::<Value>().await.expect("JSON body"))
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["mcp_servers"]["demo"], "connected", "{ready}");
    let (_, servers) = get("/api/servers").await;
    assert_eq!(servers["servers"][0]["name"], "demo");
    let (_, tools) = get("/api/tools").await;
    let names: Vec<&str> =
        tools["tools"].as_array().expect("tools").iter().filter_map(|tool| tool["name"].as_str()).collect();
    assert!(names.contains(&"demo__sum") && names.contains(&"demo__slow_count"), "{names:?}");
    let (_, prompts) = get("/api/prompts").await;
    assert!(prompts.to_string().contains("explain"), "{prompts}");
    let (_, resources) = get("/api/resources").await;
    assert!(resources.to_string().contains("demo://about"), "{resources}");

    let messages = app.client().await.chat("h-1", json!({"text": "what is 2+3"})).await;
    let conversation_id = messages[0]["conversation_id"].as_str().expect("conversation").to_owned();
    let (status, conversation) = get(&format!("/api/conversations/{conversation_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(conversation["events"].as_array().expect("events").len(), 4);
    assert_eq!(get("/api/conversations/unknown").await.0, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn a_turn_still_running_when_the_grace_ends_gets_a_503_then_the_socket_closes_1001() {
    let words: Vec<String> = (0..400).map(|n| format!("w{n}")).collect();
    let script = json!([{"text": words.join(" "), "delay_ms": 25}]);
    let log_dir = tempfile::tempdir().expect("temp dir");
    let store_path = log_dir.path().join("events.jsonl");
    let options = Options {
        script: Some(script),
        configure: Box::new(|settings| settings.shutdown.grace_seconds = 0.3),
        store_path: Some(store_path.clone()),
        ..Options::default()
    };
    let app = TestApp::start(options).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "endless", "payload": {"text": "talk"}})).await;
    let mut messages = vec![client.recv().await, client.recv().await];
    let shutdown = tokio::spawn(app.shutdown());
    messages.extend(client.collect("endless", &mut Vec::new()).await);
    assert_well_formed(&messages);
    let last = messages.last().expect("terminal");
    assert_eq!(last["error"]["code"], 503, "{last}");
    assert_eq!(client.recv_close().await.map(|(code, _)| code), Some(1001));
    shutdown.await.expect("shutdown completes");
    let logged = read_events(&store_path).pop().expect("the interruption is logged");
    assert_eq!(logged["extra"]["status"], "error");
    assert_eq!(logged["extra"]["error"]["code"], 503);
}

#[tokio::test]
async fn text_deltas_within_min_text_interval_go_out_together_and_nothing_is_lost() {
    let words = ["Deltas ", "that ", "come ", "sooner ", "wait."];
    // Paced, so that no two deltas reach the server together (those would leave as one chunk
    // whatever the interval).
    let script = json!([{"chunks": words, "delay_ms": 30}]);
    // An interval longer than the whole answer: the first delta goes out at once, the others
    // wait and go out together when the answer ends.
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(|s| s.chat.service.streaming.min_text_interval = 60.0),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    let messages = client.chat("held", json!({"text": "stream"})).await;
    assert_well_formed(&messages);
    let texts: Vec<String> =
        chunks(&messages, "text").iter().map(|text| text.as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(texts, ["Deltas ", "that come sooner wait."], "{messages:#?}");
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    let events = app.events();
    assert_eq!(events.last().expect("the answer")["content"], words.concat());
    app.shutdown().await;

    // The default sends every delta as it comes.
    let app =
        TestApp::start(Options { script: Some(json!([{"chunks": words, "delay_ms": 30}])), ..Options::default() })
            .await;
    let mut client = app.client().await;
    let messages = client.chat("each", json!({"text": "stream"})).await;
    let texts: Vec<String> =
        chunks(&messages, "text").iter().map(|text| text.as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(texts, words, "{messages:#?}");
    app.shutdown().await;
}
