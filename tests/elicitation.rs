//! MCP elicitation over real sockets (SPEC §2.6): the demo server's `ask_name` and
//! server-everything's `trigger-elicitation-request` / `trigger-url-elicitation` as child
//! processes; the question reaches the user whose call caused it, answers are checked against
//! the schema, and what went back is in the log.

mod support;

use mcp_platform::config::{ServerConfig, Settings};
use serde_json::{Value, json};
use support::mcp::server;
use support::*;

fn ask_name_then_answer(times: usize) -> Value {
    let turn = json!([{"tool_calls": [{"name": "demo__ask_name", "arguments": {}}]}, {"text": "Nice to meet you."}]);
    Value::Array((0..times).flat_map(|_| turn.as_array().expect("turns").clone()).collect())
}

async fn demo_app(script: Value, configure: fn(&mut Settings)) -> TestApp {
    TestApp::start(Options { script: Some(script), configure: Box::new(configure), ..Options::default() }).await
}

/// Messages of `request_id` up to and including the first chunk of type `kind`.
async fn until_chunk(client: &mut WsClient, request_id: &str, kind: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let message = client.recv().await;
        if message["request_id"] != request_id {
            continue;
        }
        assert!(!is_terminal(&message), "the request ended before a {kind} chunk: {message}");
        let found = message["chunk"]["type"] == kind;
        messages.push(message);
        if found {
            return messages;
        }
    }
}

fn elicit(request_id: &str, id: &Value, action: &str, content: Option<Value>) -> Value {
    let mut payload = json!({"elicitation_id": id, "action": action});
    if let Some(content) = content {
        payload["content"] = content;
    }
    json!({"action": "elicit", "request_id": request_id, "payload": payload})
}

/// The question events (`extra.question`) of the log, in order.
fn questions(app: &TestApp) -> Vec<Value> {
    app.events().into_iter().filter(|event| event["extra"].get("question").is_some()).collect()
}

/// Asks, answers with `action` (and `content`), and returns the request's messages.
async fn answered(client: &mut WsClient, request_id: &str, action: &str, content: Option<Value>) -> Vec<Value> {
    client.send(json!({"action": "chat", "request_id": request_id, "payload": {"text": "ask me"}})).await;
    let mut messages = until_chunk(client, request_id, "elicitation").await;
    let id = chunks(&messages, "elicitation")[0]["id"].clone();
    client.send(elicit(request_id, &id, action, content)).await;
    messages.extend(client.collect(request_id, &mut Vec::new()).await);
    assert_well_formed(&messages);
    messages
}

#[tokio::test]
async fn ask_name_reaches_its_user_refuses_a_bad_answer_and_passes_a_good_one() {
    let app = demo_app(ask_name_then_answer(1), |_| {}).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "r-name", "payload": {"text": "ask me"}})).await;
    let mut messages = until_chunk(&mut client, "r-name", "elicitation").await;
    let question = chunks(&messages, "elicitation").remove(0);
    assert_eq!(question["server"], "demo");
    assert_eq!(question["mode"], "form");
    assert_eq!(question["message"], "What is your name?");
    assert_eq!(question["requested_schema"]["required"], json!(["name"]));

    client.send(elicit("r-name", &question["id"], "accept", Some(json!({"name": 7})))).await;
    let refused = client.recv().await;
    assert_eq!((refused["request_id"].as_str(), refused["error"]["code"].as_u64()), (Some("r-name"), Some(400)));
    assert_eq!(refused["error"]["data"]["validation_errors"][0]["field"], "payload.content.name", "{refused}");
    client.send(elicit("r-name", &question["id"], "accept", Some(json!({})))).await;
    assert_eq!(client.recv().await["error"]["code"], 400, "a missing required field is refused too");

    client.send(elicit("r-name", &question["id"], "accept", Some(json!({"name": "Ada"})))).await;
    messages.extend(client.collect("r-name", &mut Vec::new()).await);
    assert_well_formed(&messages);
    assert_eq!(
        chunks(&messages, "elicitation_result"),
        [json!({"id": question["id"], "action": "accept", "by": "anonymous"})]
    );
    let result = &chunks(&messages, "tool_result")[0];
    assert_eq!((result["ok"].as_bool(), result["content"].as_str()), (Some(true), Some("Hello, Ada!")));

    let questions = questions(&app);
    assert_eq!(questions.len(), 2, "{questions:#?}");
    assert_eq!(questions[0]["extra"]["question"], "elicitation");
    assert_eq!(questions[0]["extra"]["log_content"], true, "the demo marks the name as not sensitive");
    assert_eq!(questions[1]["extra"]["action"], "accept");
    assert_eq!(questions[1]["extra"]["by"], "anonymous");
    assert_eq!(questions[1]["extra"]["content"], json!({"name": "Ada"}));
    let printed = text(&replay(&[app.store_path.to_str().expect("utf-8 path")]).stdout);
    assert!(printed.contains("accept by anonymous"), "replay shows the answer:\n{printed}");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}

#[tokio::test]
async fn decline_and_cancel_reach_the_server_as_such() {
    let app = demo_app(ask_name_then_answer(2), |_| {}).await;
    let mut client = app.client().await;
    let declined = answered(&mut client, "r-decline", "decline", None).await;
    assert_eq!(chunks(&declined, "tool_result")[0]["content"], "the user declined to give a name");
    let cancelled = answered(&mut client, "r-cancel", "cancel", None).await;
    assert_eq!(chunks(&cancelled, "tool_result")[0]["content"], "the user cancelled the question");
    let actions: Vec<Value> = questions(&app)
        .iter()
        .filter(|event| event["extra"]["question"] == "elicitation_result")
        .map(|event| event["extra"]["action"].clone())
        .collect();
    assert_eq!(actions, [json!("decline"), json!("cancel")]);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_question_is_cancelled_after_the_timeout() {
    let app = demo_app(ask_name_then_answer(1), |settings| settings.chat.service.tool_approval.timeout = 0.5).await;
    let mut client = app.client().await;
    let messages = client.chat("r-slow", json!({"text": "ask me"})).await;
    assert_well_formed(&messages);
    let result = &chunks(&messages, "elicitation_result")[0];
    assert_eq!(result["action"], "cancel");
    assert!(result.get("by").is_none(), "{result}");
    assert_eq!(chunks(&messages, "tool_result")[0]["content"], "the user cancelled the question");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}

/// Each client answers every question it gets with its own name; a question that reached the
/// wrong request would greet the other name.
async fn ask_and_answer_with(mut client: WsClient, request_id: &'static str, name: &'static str) -> Vec<Value> {
    client.send(json!({"action": "chat", "request_id": request_id, "payload": {"text": format!("ask {name}")}})).await;
    let mut messages = Vec::new();
    loop {
        let message = client.recv().await;
        if message["chunk"]["type"] == "elicitation" {
            assert_eq!(message["request_id"], request_id, "a question reached another request's socket");
            let id = message["chunk"]["data"]["id"].clone();
            client.send(elicit(request_id, &id, "accept", Some(json!({"name": name})))).await;
        }
        let terminal = is_terminal(&message);
        messages.push(message);
        if terminal {
            return messages;
        }
    }
}

#[tokio::test]
async fn questions_of_concurrent_requests_never_cross() {
    let call = json!({"tool_calls": [{"name": "demo__ask_name", "arguments": {"delay_ms": 300}}]});
    let answer = json!({"text": "Hello."});
    let app = demo_app(json!([call, call, answer, answer]), |_| {}).await;
    let (alice, bob) = (app.client().await, app.client().await);
    let (alice, bob) =
        tokio::join!(ask_and_answer_with(alice, "r-alice", "Alice"), ask_and_answer_with(bob, "r-bob", "Bob"));
    for (messages, own) in [(&alice, "Hello, Alice!"), (&bob, "Hello, Bob!")] {
        let result = chunks(messages, "tool_result")[0]["content"].as_str().expect("text").to_owned();
        assert!(
            result == own || result == "the user declined to give a name",
            "a question reached the wrong user: {result:?} where {own:?} or a decline was due"
        );
    }
    app.shutdown().await;
}

fn everything() -> ServerConfig {
    server("npx", &["-y", "@modelcontextprotocol/server-everything"])
}

fn slow_start(settings: &mut Settings) {
    // The first `npx -y` downloads the package.
    settings.mcp.connection.connection_timeout = 240.0;
}

#[tokio::test]
async fn server_everything_asks_in_form_and_url_mode() {
    if skip_without("npx", "server_everything_asks_in_form_and_url_mode") {
        return;
    }
    let form = json!({"tool_calls": [{"name": "everything__trigger-elicitation-request", "arguments": {}}]});
    let url = json!({"tool_calls": [{"name": "everything__trigger-url-elicitation",
                                      "arguments": {"url": "https://login.example.com/start?x=1"}}]});
    let done = json!({"text": "Done."});
    let script = json!([form, done, form, done, url, done]);
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(slow_start),
        servers: vec![("everything", everything())],
        store_path: None,
    })
    .await;
    let mut client = app.client().await;

    client.send(json!({"action": "chat", "request_id": "e-form", "payload": {"text": "ask me"}})).await;
    let mut messages = until_chunk(&mut client, "e-form", "elicitation").await;
    let question = chunks(&messages, "elicitation").remove(0);
    assert_eq!((question["server"].as_str(), question["mode"].as_str()), (Some("everything"), Some("form")));
    client.send(elicit("e-form", &question["id"], "accept", Some(json!({"check": true})))).await;
    let refused = client.recv().await;
    assert_eq!(refused["error"]["code"], 400, "name is required: {refused}");
    client.send(elicit("e-form", &question["id"], "accept", Some(json!({"name": "Ada Lovelace", "integer": 7})))).await;
    messages.extend(client.collect("e-form", &mut Vec::new()).await);
    let result = chunks(&messages, "tool_result")[0]["content"].as_str().expect("text").to_owned();
    assert!(result.contains("Name: Ada Lovelace"), "{result}");

    let declined = answered(&mut client, "e-decline", "decline", None).await;
    let result = chunks(&declined, "tool_result")[0]["content"].as_str().expect("text").to_owned();
    assert!(result.contains("declined"), "{result}");

    client.send(json!({"action": "chat", "request_id": "e-url", "payload": {"text": "log me in"}})).await;
    let mut messages = until_chunk(&mut client, "e-url", "elicitation").await;
    let question = chunks(&messages, "elicitation").remove(0);
    assert_eq!(question["mode"], "url");
    assert_eq!(question["url"], "https://login.example.com/start?x=1");
    assert_eq!(question["host"], "login.example.com", "the user sees where the link leads");
    client.send(elicit("e-url", &question["id"], "accept", None)).await;
    messages.extend(client.collect("e-url", &mut Vec::new()).await);
    assert_eq!(chunks(&messages, "elicitation_result")[0]["action"], "accept");

    let logged: Vec<Value> = questions(&app)
        .into_iter()
        .filter(|event| event["extra"]["question"] == "elicitation_result")
        .map(|event| event["extra"].clone())
        .collect();
    assert_eq!(logged.len(), 3);
    assert!(logged.iter().all(|answer| answer.get("content").is_none()), "unmarked answers are not logged: {logged:?}");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}
