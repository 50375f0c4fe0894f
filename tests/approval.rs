//! Tool approval over real sockets (SPEC §2.6): the demo MCP server as a child process, trusted,
//! under the `annotations` policy; its notes file shows whether `delete_note` ran.

mod support;

use mcp_platform::config::{ApprovalPolicy, Settings};
use serde_json::{Value, json};
use support::notes::{NOTES, NotesDemo, annotations_policy};
use support::users::{ALICE_KEY, BOB_KEY, api_keys, connect_as};
use support::*;

/// The model sums and deletes a note in one hop, then answers.
fn sum_and_delete() -> Value {
    json!([
        {"tool_calls": [
            {"id": "call_sum", "name": "demo__sum", "arguments": {"a": 2, "b": 3}},
            {"id": "call_del", "name": "demo__delete_note", "arguments": {"note": "buy milk"}}
        ]},
        {"text": "Done."}
    ])
}

/// Users with API keys, under the `annotations` policy.
fn alice_and_bob(settings: &mut Settings) {
    annotations_policy(settings);
    api_keys(settings);
}

async fn start(script: Value, configure: fn(&mut Settings)) -> (TestApp, NotesDemo) {
    let demo = NotesDemo::new();
    let app = TestApp::start(demo.options(script, configure)).await;
    (app, demo)
}

fn approve(request_id: &str, call_id: &str, decision: &str) -> Value {
    json!({"action": "approve", "request_id": request_id, "payload": {"call_id": call_id, "decision": decision}})
}

#[tokio::test]
async fn a_destructive_call_waits_for_allow_and_a_read_only_one_does_not() {
    let (app, demo) = start(sum_and_delete(), annotations_policy).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "r-allow", "payload": {"text": "sum, then delete"}})).await;
    let before = client.until_chunk("r-allow", "approval_request").await;
    let asked = chunks(&before, "approval_request");
    assert_eq!(asked.len(), 1, "only the destructive call is asked: {before:#?}");
    assert_eq!(asked[0]["id"], "call_del");
    assert_eq!(asked[0]["name"], "demo__delete_note");
    assert_eq!(asked[0]["server"], "demo");
    assert_eq!(asked[0]["arguments"], json!({"note": "buy milk"}));
    assert_eq!(asked[0]["annotations"]["destructiveHint"], true);
    assert_eq!(asked[0]["timeout_seconds"], 300.0);
    assert_eq!(demo.notes(), NOTES, "nothing deleted before the decision");

    client.send(approve("r-allow", "call_del", "allow")).await;
    let after = client.collect("r-allow", &mut Vec::new()).await;
    let messages: Vec<Value> = before.into_iter().chain(after).collect();
    assert_well_formed(&messages);
    assert_eq!(chunks(&messages, "approval"), [json!({"id": "call_del", "decision": "allow", "by": "anonymous"})]);
    let results = chunks(&messages, "tool_result");
    assert_eq!((results[0]["content"].as_str(), results[0]["ok"].as_bool()), (Some("5"), Some(true)));
    assert_eq!(results[1]["ok"], true, "{results:?}");
    assert_eq!(demo.notes(), "call Ada\n", "the allowed call ran");

    let questions = app.questions();
    assert_eq!(questions.len(), 2, "{questions:#?}");
    assert_eq!(questions[0]["extra"]["question"], "approval_request");
    assert_eq!(
        questions[1]["extra"],
        json!({"question": "approval", "call_id": "call_del", "decision": "allow", "by": "anonymous"})
    );
    let events = app.events();
    let decided = events.iter().position(|event| event["extra"]["question"] == "approval").expect("decision");
    let result = events.iter().position(|event| event["type"] == "tool_result").expect("result");
    assert!(decided < result, "the decision is logged before the call's result");

    let printed = text(&replay(&[app.store_path.to_str().expect("utf-8 path")]).stdout);
    assert!(printed.contains("call_del allow by anonymous"), "replay shows the decision:\n{printed}");
    assert_verifies(&app.store_path);

    // The finished request's compact replay shows the question and its answer.
    let replayed = client.chat("r-allow", json!({"text": "sum, then delete"})).await;
    assert_eq!(chunks(&replayed, "approval_request").len(), 1);
    assert_eq!(chunks(&replayed, "approval")[0]["decision"], "allow");
    app.shutdown().await;
}

#[tokio::test]
async fn a_denied_call_does_not_run_and_the_model_reads_why() {
    let (app, demo) = start(sum_and_delete(), annotations_policy).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "r-deny", "payload": {"text": "sum, then delete"}})).await;
    client.until_chunk("r-deny", "approval_request").await;
    client
        .send(json!({"action": "approve", "request_id": "r-deny",
                     "payload": {"call_id": "call_del", "decision": "deny", "reason": "keep it"}}))
        .await;
    let messages = client.collect("r-deny", &mut Vec::new()).await;
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    assert_eq!(
        chunks(&messages, "approval"),
        [json!({"id": "call_del", "decision": "deny", "by": "anonymous", "reason": "keep it"})]
    );
    let denied = &chunks(&messages, "tool_result")[1];
    assert_eq!(
        (denied["ok"].as_bool(), denied["content"].as_str()),
        (Some(false), Some("denied by the user: keep it"))
    );
    assert_eq!(demo.notes(), NOTES, "the denied call never reached the server");
    let decision = app.questions().pop().expect("the decision is logged");
    assert_eq!(
        decision["extra"],
        json!({"question": "approval", "call_id": "call_del", "decision": "deny", "by": "anonymous", "reason": "keep it"})
    );
    assert!(decision["timestamp"].is_string(), "when it was decided: {decision}");

    let requests = app.model_requests();
    let tool_messages: Vec<&Value> =
        requests[1]["messages"].as_array().expect("messages").iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_messages.len(), 2);
    assert!(tool_messages[1]["content"].as_str().expect("text").contains("denied by the user"), "{tool_messages:?}");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}

fn short_timeout(settings: &mut Settings) {
    annotations_policy(settings);
    settings.chat.service.tool_approval.timeout = 0.5;
}

#[tokio::test]
async fn no_answer_within_the_timeout_denies_and_the_turn_completes() {
    let (app, demo) = start(sum_and_delete(), short_timeout).await;
    let mut client = app.client().await;
    let messages = client.chat("r-late", json!({"text": "sum, then delete"})).await;
    assert_well_formed(&messages);
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    assert_eq!(
        chunks(&messages, "approval"),
        [json!({"id": "call_del", "decision": "deny", "reason": "approval timed out"})]
    );
    assert_eq!(chunks(&messages, "tool_result")[1]["content"], "approval timed out");
    assert_eq!(demo.notes(), NOTES);
    let decision = app.questions().pop().expect("the timeout is logged");
    assert_eq!(
        decision["extra"],
        json!({"question": "approval", "call_id": "call_del", "decision": "deny", "reason": "approval timed out"})
    );

    // Too late: the question is closed.
    client.send(approve("r-late", "call_del", "allow")).await;
    let refused = client.recv().await;
    assert_eq!(refused["error"]["code"], 404, "{refused}");
    assert_verifies(&app.store_path);
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_lost_its_socket_resumes_sees_the_question_again_and_answers_it() {
    let (app, demo) = start(sum_and_delete(), annotations_policy).await;
    let mut first = app.client().await;
    let chat = json!({"action": "chat", "request_id": "r-drop", "payload": {"text": "sum, then delete"}});
    first.send(chat.clone()).await;
    let seen = first.until_chunk("r-drop", "tool_call").await;
    let last_seq = seen.last().expect("seen")["seq"].as_u64().expect("seq");
    // The question is open when the socket drops; the client had handled messages up to
    // `last_seq` only.
    let question = first.until_chunk("r-drop", "approval_request").await.pop().expect("the question");
    drop(first);

    let mut second = app.client().await;
    second.send(json!({"action": "resume", "request_id": "r-drop", "after_seq": last_seq})).await;
    let resumed = second.until_chunk("r-drop", "approval_request").await;
    assert_eq!(resumed[0]["seq"], last_seq + 1, "resumed right after what the client had");
    assert_eq!(resumed.last(), Some(&question), "the open question is sent again, as it was");
    // A client that kept nothing sends the same chat again: it is attached from seq 0 and
    // sees the open question too.
    let mut third = app.client().await;
    third.send(chat).await;
    let attached = third.until_chunk("r-drop", "approval_request").await;
    assert_eq!(attached[0]["seq"], 0);
    assert_eq!(attached.last(), Some(&question));

    second.send(approve("r-drop", "call_del", "allow")).await;
    let rest = second.collect("r-drop", &mut Vec::new()).await;
    assert_eq!(rest.last().expect("terminal")["status"], "complete");
    let rest_of_third = third.collect("r-drop", &mut Vec::new()).await;
    assert_eq!(rest, rest_of_third, "both sockets see the one answer");
    assert_eq!(demo.notes(), "call Ada\n");
    let answers = app.events().iter().filter(|event| event["extra"]["status"] == "complete").count();
    assert_eq!(answers, 1, "the turn completed once");
    assert_eq!(app.model_requests().len(), 2, "nothing was computed twice");
    app.shutdown().await;
}

#[tokio::test]
async fn calls_of_one_hop_that_need_a_person_are_asked_together_and_the_others_run_meanwhile() {
    let script = json!([
        {"tool_calls": [
            {"id": "call_milk", "name": "demo__delete_note", "arguments": {"note": "buy milk"}},
            {"id": "call_ada", "name": "demo__delete_note", "arguments": {"note": "call Ada"}},
            {"id": "call_ask", "name": "demo__ask_name", "arguments": {}}
        ]},
        {"text": "Done."}
    ]);
    let (app, demo) = start(script, annotations_policy).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "r-hop", "payload": {"text": "tidy up and greet me"}})).await;
    // Nothing is answered yet: both questions are out, and `ask_name` (read-only, trusted) is
    // already running, since its own question arrives.
    let mut messages = client.until_chunk("r-hop", "elicitation").await;
    let asked: Vec<Value> = chunks(&messages, "approval_request").iter().map(|asked| asked["id"].clone()).collect();
    assert_eq!(asked, [json!("call_milk"), json!("call_ada")], "asked together");
    assert_eq!(demo.notes(), NOTES);

    let question = chunks(&messages, "elicitation").remove(0);
    client
        .send(json!({"action": "elicit", "request_id": "r-hop",
                     "payload": {"elicitation_id": question["id"], "action": "accept", "content": {"name": "Ada"}}}))
        .await;
    client.send(approve("r-hop", "call_ada", "deny")).await;
    client.send(approve("r-hop", "call_milk", "allow")).await;
    messages.extend(client.collect("r-hop", &mut Vec::new()).await);
    assert_well_formed(&messages);
    let results: Vec<(Value, Value)> = chunks(&messages, "tool_result")
        .iter()
        .map(|result| (result["id"].clone(), result["content"].clone()))
        .collect();
    assert_eq!(
        results,
        [
            (json!("call_milk"), json!("deleted \"buy milk\"")),
            (json!("call_ada"), json!("denied by the user")),
            (json!("call_ask"), json!("Hello, Ada!")),
        ],
        "each decision applies to its own call"
    );
    assert_eq!(demo.notes(), "call Ada\n");
    app.shutdown().await;
}

#[tokio::test]
async fn answers_to_unknown_requests_or_questions_are_404_and_bad_ones_400() {
    let (app, _demo) = start(sum_and_delete(), annotations_policy).await;
    let mut client = app.client().await;
    client.send(approve("nobody", "call_del", "allow")).await;
    assert_eq!(client.recv().await["error"]["code"], 404);
    client.send(json!({"action": "chat", "request_id": "r-q", "payload": {"text": "sum, then delete"}})).await;
    client.until_chunk("r-q", "approval_request").await;
    client.send(approve("r-q", "call_sum", "allow")).await;
    let refused = client.recv().await;
    assert_eq!((refused["request_id"].as_str(), refused["error"]["code"].as_u64()), (Some("r-q"), Some(404)));
    client
        .send(json!({"action": "approve", "request_id": "r-q", "payload": {"call_id": "call_del", "decision": "ok"}}))
        .await;
    let invalid = client.recv().await;
    assert_eq!(invalid["error"]["code"], 400, "{invalid}");
    assert_eq!(invalid["error"]["data"]["validation_errors"][0]["field"], "payload.decision");
    client.send(approve("r-q", "call_del", "deny")).await;
    let messages = client.collect("r-q", &mut Vec::new()).await;
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    app.shutdown().await;
}

#[tokio::test]
async fn the_policy_follows_the_server_entry_and_believes_only_trusted_annotations() {
    use mcp_platform::mcp::ToolProvider;
    use support::mcp::{demo, servers, start, tool_call};

    let plain = demo();
    let mut trusted = demo();
    trusted.trusted = true;
    trusted.auto_approve_tools = vec!["delete_note".into()];
    trusted.approve_tools = vec!["sum".into()];
    let mut relaxed = demo();
    relaxed.approval = Some(ApprovalPolicy::Never);
    relaxed.approve_tools = vec!["echo".into()];
    let manager = start(servers(vec![("plain", plain), ("trusted", trusted), ("relaxed", relaxed)])).await;
    let asked = |name: &str, policy| manager.needs_approval(&tool_call(name, json!({})), policy).is_some();
    use ApprovalPolicy::{Always, Annotations, Never};
    assert!(asked("plain__sum", Annotations), "an untrusted server's readOnlyHint does not count");
    assert!(!asked("trusted__list_notes", Annotations), "a trusted read-only tool runs");
    assert!(asked("trusted__ask_name", Always), "under always every tool is asked");
    assert!(!asked("plain__sum", Never));
    assert!(!asked("trusted__delete_note", Always), "auto_approve_tools never asks");
    assert!(asked("trusted__sum", Never), "approve_tools always asks");
    assert!(!asked("relaxed__delete_note", Always), "the server's own policy overrides the global one");
    assert!(asked("relaxed__echo", Always));
    assert!(!asked("nobody__sum", Always), "an unknown tool fails without reaching a server");
    let facts = manager.needs_approval(&tool_call("plain__delete_note", json!({})), Annotations).expect("asked");
    assert_eq!(facts.server, "plain");
    assert_eq!(facts.annotations["destructiveHint"], true);
    manager.shutdown().await;
}

#[tokio::test]
async fn another_users_answer_is_a_404_and_decides_nothing() {
    let (app, demo) = start(sum_and_delete(), alice_and_bob).await;
    let mut alice = connect_as(&app, ALICE_KEY).await;
    let mut bob = connect_as(&app, BOB_KEY).await;
    alice.send(json!({"action": "chat", "request_id": "r-alice", "payload": {"text": "sum, then delete"}})).await;
    let before = alice.until_chunk("r-alice", "approval_request").await;

    // Bob knows the request and the call, and tries to allow it.
    bob.send(approve("r-alice", "call_del", "allow")).await;
    let refused = bob.recv().await;
    assert_eq!((refused["request_id"].clone(), refused["error"]["code"].clone()), (json!("r-alice"), json!(404)));
    // The same words as for a request that does not exist.
    bob.send(approve("r-nobody", "call_del", "allow")).await;
    let unknown = bob.recv().await;
    assert_eq!(
        refused["error"]["message"].as_str().map(|text| text.replace("r-alice", "ID")),
        unknown["error"]["message"].as_str().map(|text| text.replace("r-nobody", "ID"))
    );
    assert_eq!(demo.notes(), NOTES, "Bob's answer decided nothing");
    assert!(app.questions().iter().all(|event| event["extra"]["question"] != "approval"), "no decision was logged");

    alice.send(approve("r-alice", "call_del", "allow")).await;
    let after = alice.collect("r-alice", &mut Vec::new()).await;
    let messages: Vec<Value> = before.into_iter().chain(after).collect();
    assert_well_formed(&messages);
    assert_eq!(chunks(&messages, "approval"), [json!({"id": "call_del", "decision": "allow", "by": "alice"})]);
    assert_eq!(demo.notes(), "call Ada\n", "Alice's allow ran the call");
    assert!(app.events().iter().all(|event| event["user"] == "alice"), "every event is Alice's");
    app.shutdown().await;
}
