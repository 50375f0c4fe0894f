//! A server's question in the middle of a tool call, both ways MCP has carried it, over both
//! transports: returned with the call (`input_required`, 2026-07-28) and sent as a request of
//! the server's own (`elicitation/create`, older revisions; `DEMO_WITHOUT_DISCOVERY=1` makes
//! the demo such a server). The question reaches the call's user, the answer the server, and
//! the time the person takes counts against neither of the call's timeouts.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mcp_platform::config::ServerConfig;
use mcp_platform::domain::{Elicitation, ElicitationAction, ElicitationMode, ElicitationReply};
use mcp_platform::mcp::{McpManager, UserInput};
use serde_json::json;
use support::mcp::*;

const WITHOUT_DISCOVERY: (&str, &str) = ("DEMO_WITHOUT_DISCOVERY", "1");

/// A person who answers every question with a name after thinking for `delay`.
struct Person {
    name: &'static str,
    delay: Duration,
    asked: Mutex<Vec<Elicitation>>,
}

impl Person {
    fn new(name: &'static str, delay: Duration) -> Arc<Self> {
        Arc::new(Self { name, delay, asked: Mutex::new(Vec::new()) })
    }

    fn questions(&self) -> Vec<Elicitation> {
        self.asked.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl UserInput for Person {
    fn request_key(&self) -> &str {
        self.name
    }

    async fn elicit(&self, question: Elicitation) -> ElicitationReply {
        self.asked.lock().expect("not poisoned").push(question);
        tokio::time::sleep(self.delay).await;
        ElicitationReply { action: ElicitationAction::Accept, content: Some(json!({"name": self.name})) }
    }
}

/// Calls `demo__ask_name` for `person` and checks what it was asked and what came back; the
/// revision the session speaks is returned.
async fn ask_name(config: ServerConfig, person: Arc<Person>) -> Option<String> {
    let manager: Arc<McpManager> = start(servers(vec![("demo", config)])).await;
    let (outcome, _) = call_for(&manager, "demo__ask_name", json!({}), person.clone()).await;
    assert!(outcome.ok, "{}", outcome.content);
    assert_eq!(outcome.content, format!("Hello, {}!", person.name));
    let questions = person.questions();
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert_eq!((questions[0].server.as_str(), questions[0].message.as_str()), ("demo", "What is your name?"));
    assert!(
        matches!(&questions[0].mode, ElicitationMode::Form { requested_schema } if requested_schema["required"] == json!(["name"]))
    );
    assert!(questions[0].log_content, "the demo marks the name as not sensitive, whichever way it asks");
    let revision = manager.server("demo").expect("the server").protocol_version;
    manager.shutdown().await;
    revision
}

fn with_env(mut config: ServerConfig, env: (&str, &str)) -> ServerConfig {
    config.env.insert(env.0.to_owned(), env.1.to_owned());
    config
}

#[tokio::test]
async fn over_stdio_the_question_comes_back_with_the_call_in_2026_07_28() {
    let revision = ask_name(demo(), Person::new("Ada", Duration::ZERO)).await;
    assert_eq!(revision.as_deref(), Some("2026-07-28"));
}

#[tokio::test]
async fn over_stdio_an_older_server_asks_with_elicitation_create() {
    let revision = ask_name(with_env(demo(), WITHOUT_DISCOVERY), Person::new("Ada", Duration::ZERO)).await;
    let revision = revision.expect("a revision");
    assert!(revision.as_str() < "2026-07-28", "the initialize handshake: {revision}");
}

#[tokio::test]
async fn over_http_the_question_comes_back_with_the_call_in_2026_07_28() {
    let server = demo_http("127.0.0.1:0", &[]);
    let revision = ask_name(remote(&endpoint(server.addr), &[]), Person::new("Grace", Duration::ZERO)).await;
    assert_eq!(revision.as_deref(), Some("2026-07-28"));
}

#[tokio::test]
async fn over_http_an_older_server_asks_with_elicitation_create() {
    let server = demo_http("127.0.0.1:0", &[WITHOUT_DISCOVERY]);
    let revision = ask_name(remote(&endpoint(server.addr), &[]), Person::new("Grace", Duration::ZERO)).await;
    let revision = revision.expect("a revision");
    assert!(revision.as_str() < "2026-07-28", "the initialize handshake: {revision}");
}

/// Two users' calls in flight on one session, each asked by the server: every question is tied
/// to its own call (the 2026-07-28 answer carries it; over streamable HTTP an older server's
/// request arrives on the response stream of the call it belongs to), so both are answered by
/// their own user and none is declined.
async fn two_users_at_once(config: ServerConfig) {
    let manager = start(servers(vec![("demo", config)])).await;
    let ask = |person: Arc<Person>| {
        let manager = manager.clone();
        // Both calls are sent before either asks.
        async move { call_for(&manager, "demo__ask_name", json!({"delay_ms": 300}), person).await.0 }
    };
    let (ada, grace) = tokio::join!(ask(Person::new("Ada", Duration::ZERO)), ask(Person::new("Grace", Duration::ZERO)));
    assert_eq!((ada.ok, ada.content.as_str()), (true, "Hello, Ada!"));
    assert_eq!((grace.ok, grace.content.as_str()), (true, "Hello, Grace!"));
    manager.shutdown().await;
}

#[tokio::test]
async fn questions_of_two_users_at_once_reach_each_its_own() {
    two_users_at_once(demo()).await;
    let modern = demo_http("127.0.0.1:0", &[]);
    two_users_at_once(remote(&endpoint(modern.addr), &[])).await;
    let older = demo_http("127.0.0.1:0", &[WITHOUT_DISCOVERY]);
    two_users_at_once(remote(&endpoint(older.addr), &[])).await;
}

/// A tool timeout of 1 s (at most 1.2 s in all) and a person who takes 1.5 s to answer.
fn impatient(mut config: ServerConfig) -> ServerConfig {
    config.tool_timeout = Some(1.0);
    config.max_tool_timeout = Some(1.2);
    config
}

#[tokio::test]
async fn a_person_slower_than_the_tool_timeout_is_waited_for_in_both_revisions() {
    let slow = Duration::from_millis(1500);
    ask_name(impatient(demo()), Person::new("Ada", slow)).await;
    ask_name(impatient(with_env(demo(), WITHOUT_DISCOVERY)), Person::new("Ada", slow)).await;
}
