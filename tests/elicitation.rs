//! MCP elicitation over real sockets (SPEC §2.6): the demo server's `ask_name` and
//! server-everything's `trigger-elicitation-request` / `trigger-url-elicitation` as child
//! processes; the question reaches the user whose call caused it, answers are checked against
//! the schema, and what went back is in the log.

mod support;

use mcp_platform::config::{ServerConfig, Settings};
use serde_json::{Value, json};
use support::mcp::server;
use support::users::{ALICE_KEY, BOB_KEY, api_keys, connect_as};
use support::*;

fn ask_name_then_answer(times: usize) -> Value {
    let turn = json!([{"tool_calls": [{"name": "demo__ask_name", "arguments": {}}]}, {"text": "Nice to meet you."}]);
    Value::Array((0..times).flat_map(|_| turn.as_array().expect("turns").clone()).collect())
}

async fn demo_app(script: Value, configure: fn(&mut Settings)) -> TestApp {
    TestApp::start(Options { script: Some(script), configure: Box::new(configure), ..Options::default() }).await
}

/// An app whose demo server is an older one, of a revision before 2026-07-28
/// (`DEMO_WITHOUT_DISCOVERY`): it asks with `elicitation/create`, which over stdio nothing ties
/// to the call it belongs to.
async fn older_demo_app(script: Value, configure: fn(&mut Settings)) -> TestApp {
    let older = demo_server(&[("DEMO_WITHOUT_DISCOVERY", "1")]);
    TestApp::start(Options {
        script: Some(script),
        configure: Box::new(configure),
        servers: vec![("demo", older)],
        store_path: None,
    })
    .await
}

fn elicit(request_id: &str, id: &Value, action: &str, content: Option<Value>) -> Value {
    let mut payload = json!({"elicitation_id": id, "action": action});
    if let Some(content) = content {
        payload["content"] = content;
    }
    json!({"action": "elicit", "request_id": request_id, "payload": payload})
}

/// Asks, answers with `action` (and `content`), and returns the request's messages.
async fn answered(client: &mut WsClient, request_id: &str, action: &str, content: Option<Value>) -> Vec<Value> {
    client.send(json!({"action": "chat", "request_id": request_id, "payload": {"text": "ask me"}})).await;
    let mut messages = client.until_chunk(request_id, "elicitation").await;
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
    let mut messages = client.until_chunk("r-name", "elicitation").await;
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

    let questions = app.questions();
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
    let actions: Vec<Value> = app
        .questions()
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

#[tokio::test]
async fn an_open_question_survives_a_lost_socket_and_is_answered_after_resume() {
    let app = demo_app(ask_name_then_answer(1), |_| {}).await;
    let mut first = app.client().await;
    first.send(json!({"action": "chat", "request_id": "r-lost", "payload": {"text": "ask me"}})).await;
    let question = first.until_chunk("r-lost", "elicitation").await.pop().expect("the question");
    drop(first);

    let mut second = app.client().await;
    second.send(json!({"action": "resume", "request_id": "r-lost", "after_seq": 0})).await;
    let resumed = second.until_chunk("r-lost", "elicitation").await;
    assert_eq!(resumed.last(), Some(&question), "the open question is sent again, as it was");
    second.send(elicit("r-lost", &question["chunk"]["data"]["id"], "accept", Some(json!({"name": "Ada"})))).await;
    let rest = second.collect("r-lost", &mut Vec::new()).await;
    assert_eq!(rest.last().expect("terminal")["status"], "complete");
    assert_eq!(chunks(&rest, "tool_result")[0]["content"], "Hello, Ada!", "the answer reached the call");
    app.shutdown().await;
}

/// Each user answers every question they get with their own name; a question that reached the
/// wrong user would greet the other name.
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

/// Asserts that every question event of the log belongs to the request of its own user.
fn assert_logged_for_their_users(app: &TestApp, owners: &[(&str, &str)]) {
    for event in app.questions() {
        let owner = (event["user"].as_str().unwrap_or_default(), event["request_id"].as_str().unwrap_or_default());
        assert!(owners.contains(&owner), "a question event of the wrong user or request: {event}");
    }
}

#[tokio::test]
async fn two_users_asked_at_once_by_one_older_stdio_server_never_get_each_others_question() {
    let call = json!({"tool_calls": [{"name": "demo__ask_name", "arguments": {"delay_ms": 300}}]});
    let answer = json!({"text": "Hello."});
    let app = older_demo_app(json!([call, call, answer, answer]), api_keys).await;
    let (alice, bob) = (connect_as(&app, ALICE_KEY).await, connect_as(&app, BOB_KEY).await);
    let (alice, bob) =
        tokio::join!(ask_and_answer_with(alice, "r-alice", "Alice"), ask_and_answer_with(bob, "r-bob", "Bob"));
    for (messages, own) in [(&alice, "Hello, Alice!"), (&bob, "Hello, Bob!")] {
        let result = chunks(messages, "tool_result")[0]["content"].as_str().expect("text").to_owned();
        assert!(
            result == own || result == "the user declined to give a name",
            "a question reached the wrong user: {result:?} where {own:?} or a decline was due"
        );
    }
    assert_logged_for_their_users(&app, &[("alice", "r-alice"), ("bob", "r-bob")]);
    assert_verifies(&app.store_path);
    app.shutdown().await;
}

#[tokio::test]
async fn bobs_question_is_declined_while_alices_is_open_and_neither_answers_the_others() {
    let call = json!({"tool_calls": [{"name": "demo__ask_name", "arguments": {}}]});
    let answer = json!({"text": "Nice to meet you."});
    // Alice's call, Bob's call and answer while Alice is asked, Alice's answer, then Bob alone.
    let app = older_demo_app(json!([call, call, answer, answer, call, answer]), api_keys).await;
    let mut alice = connect_as(&app, ALICE_KEY).await;
    let mut bob = connect_as(&app, BOB_KEY).await;

    alice.send(json!({"action": "chat", "request_id": "r-alice", "payload": {"text": "ask me"}})).await;
    let mut alices = alice.until_chunk("r-alice", "elicitation").await;
    let alices_question = chunks(&alices, "elicitation").remove(0);

    // Bob's call asks while Alice's question is open: with calls of two users in flight the
    // older server's question cannot be tied to one, so it is declined, shown to nobody.
    let bobs = bob.chat("r-bob", json!({"text": "ask me"})).await;
    assert_well_formed(&bobs);
    assert!(chunks(&bobs, "elicitation").is_empty(), "Bob was shown a question: {bobs:#?}");
    assert_eq!(chunks(&bobs, "tool_result")[0]["content"], "the user declined to give a name");

    // Bob knows Alice's request and question and answers it: 404, and nothing is decided.
    bob.send(elicit("r-alice", &alices_question["id"], "accept", Some(json!({"name": "Bob"})))).await;
    let refused = bob.recv().await;
    assert_eq!((refused["request_id"].clone(), refused["error"]["code"].clone()), (json!("r-alice"), json!(404)));
    assert!(app.questions().iter().all(|event| event["extra"]["question"] != "elicitation_result"), "nothing decided");

    alice.send(elicit("r-alice", &alices_question["id"], "accept", Some(json!({"name": "Alice"})))).await;
    let mut others = Vec::new();
    alices.extend(alice.collect("r-alice", &mut others).await);
    assert!(others.is_empty(), "Alice's socket got messages of another request: {others:#?}");
    assert_well_formed(&alices);
    assert_eq!(chunks(&alices, "elicitation").len(), 1, "Alice was asked her own question only");
    assert_eq!(chunks(&alices, "elicitation_result")[0]["by"], "alice");
    assert_eq!(chunks(&alices, "tool_result")[0]["content"], "Hello, Alice!", "Alice's answer reached her call");

    // Bob alone: his question reaches him, Alice cannot answer it, his answer reaches his call.
    bob.send(json!({"action": "chat", "request_id": "r-bob-2", "payload": {"text": "ask me again"}})).await;
    let mut bobs = bob.until_chunk("r-bob-2", "elicitation").await;
    let bobs_question = chunks(&bobs, "elicitation").remove(0);
    alice.send(elicit("r-bob-2", &bobs_question["id"], "accept", Some(json!({"name": "Alice"})))).await;
    let refused = alice.recv().await;
    assert_eq!((refused["request_id"].clone(), refused["error"]["code"].clone()), (json!("r-bob-2"), json!(404)));
    bob.send(elicit("r-bob-2", &bobs_question["id"], "accept", Some(json!({"name": "Bob"})))).await;
    bobs.extend(bob.collect("r-bob-2", &mut Vec::new()).await);
    assert_well_formed(&bobs);
    assert_eq!(chunks(&bobs, "elicitation_result")[0]["by"], "bob");
    assert_eq!(chunks(&bobs, "tool_result")[0]["content"], "Hello, Bob!", "Bob's answer reached his call");

    let answers: Vec<(Value, Value)> = app
        .questions()
        .into_iter()
        .filter(|event| event["extra"]["question"] == "elicitation_result")
        .map(|event| (event["user"].clone(), event["extra"]["content"].clone()))
        .collect();
    assert_eq!(answers, [(json!("alice"), json!({"name": "Alice"})), (json!("bob"), json!({"name": "Bob"}))]);
    assert_logged_for_their_users(&app, &[("alice", "r-alice"), ("bob", "r-bob-2")]);
    let printed = text(&replay(&[app.store_path.to_str().expect("utf-8 path")]).stdout);
    assert!(printed.contains("accept by alice") && printed.contains("accept by bob"), "replay shows who:\n{printed}");
    assert_verifies(&app.store_path);
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
    let mut messages = client.until_chunk("e-form", "elicitation").await;
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
    let mut messages = client.until_chunk("e-url", "elicitation").await;
    let question = chunks(&messages, "elicitation").remove(0);
    assert_eq!(question["mode"], "url");
    assert_eq!(question["url"], "https://login.example.com/start?x=1");
    assert_eq!(question["host"], "login.example.com", "the user sees where the link leads");
    client.send(elicit("e-url", &question["id"], "accept", None)).await;
    messages.extend(client.collect("e-url", &mut Vec::new()).await);
    assert_eq!(chunks(&messages, "elicitation_result")[0]["action"], "accept");

    let logged: Vec<Value> = app
        .questions()
        .into_iter()
        .filter(|event| event["extra"]["question"] == "elicitation_result")
        .map(|event| event["extra"].clone())
        .collect();
    assert_eq!(logged.len(), 3);
    assert!(logged.iter().all(|answer| answer.get("content").is_none()), "unmarked answers are not logged: {logged:?}");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}
