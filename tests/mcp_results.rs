//! Tool results beyond text, end to end through a chat turn: server-everything's image,
//! structured content and resource links reach the client; the image reaches a model that
//! reads images and no other (the mock model's request log shows it); a 1 MB output stays
//! whole in the log while the model gets its head and tail.

mod support;

use mcp_platform::config::Settings;
use serde_json::{Value, json};
use support::mcp::{demo, server};
use support::{Options, TestApp, assert_well_formed, chunks};

fn everything() -> Vec<(&'static str, mcp_platform::config::ServerConfig)> {
    vec![("everything", server("npx", &["-y", "@modelcontextprotocol/server-everything"]))]
}

fn with_vision(settings: &mut Settings, vision: bool) {
    settings.llm.providers.get_mut("mock").expect("the mock provider").vision = vision;
}

/// A turn in which the model asks for server-everything's tiny image: the tool_result chunk
/// and the model's second request.
async fn tiny_image_turn(configure: fn(&mut Settings)) -> (Value, Value) {
    let script = json!([
        {"tool_calls": [{"name": "everything__get-tiny-image", "arguments": {}}]},
        {"text": "A tiny image."}
    ]);
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(configure),
        servers: everything(),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    let messages = client.chat("r-image", json!({"text": "show me the tiny image"})).await;
    assert_well_formed(&messages);
    assert_eq!(messages.last().expect("terminal")["status"], "complete", "{messages:#?}");
    let result = chunks(&messages, "tool_result").remove(0);
    let requests = app.model_requests();
    app.shutdown().await;
    (result, requests[1].clone())
}

#[tokio::test]
async fn an_image_reaches_the_client_and_a_vision_model_only() {
    if support::skip_without("npx", "an_image_reaches_the_client_and_a_vision_model_only") {
        return;
    }
    let (result, request) = tiny_image_turn(|settings| with_vision(settings, true)).await;
    assert_eq!(result["ok"], true, "{result:#}");
    let image = &result["images"][0];
    assert_eq!(image["mime_type"], "image/png");
    let data = image["data"].as_str().expect("base64 data");
    assert!(data.len() > 100, "{data}");
    let messages = request["messages"].as_array().expect("messages");
    let tool_at = messages.iter().position(|message| message["role"] == "tool").expect("the tool message");
    let after = &messages[tool_at + 1];
    assert_eq!(after["role"], "user", "the images follow the tool results: {messages:#?}");
    assert_eq!(after["content"][1]["image_url"]["url"], format!("data:image/png;base64,{data}"));

    let (result, request) = tiny_image_turn(|settings| with_vision(settings, false)).await;
    assert_eq!(result["images"][0]["mime_type"], "image/png", "the client gets it either way");
    let sent = request.to_string();
    assert!(!sent.contains("image_url") && !sent.contains(data), "no image for a model without vision: {sent}");
    let tool = request["messages"].as_array().expect("messages").iter().find(|message| message["role"] == "tool");
    assert!(tool.expect("tool message")["content"].as_str().expect("text").contains("[image: image/png"));
}

#[tokio::test]
async fn structured_content_and_resource_links_arrive_and_a_link_is_readable() {
    if support::skip_without("npx", "structured_content_and_resource_links_arrive") {
        return;
    }
    let script = json!([
        {"tool_calls": [
            {"name": "everything__get-structured-content", "arguments": {"location": "Chicago"}},
            {"name": "everything__get-resource-links", "arguments": {"count": 2}}
        ]},
        {"text": "Weather and links."},
        {"text": "I read the resource."}
    ]);
    let app = TestApp::start(Options { script: Some(script), servers: everything(), ..Options::default() }).await;
    let mut client = app.client().await;
    let messages = client.chat("r-structured", json!({"text": "weather in Chicago, and some links"})).await;
    assert_well_formed(&messages);
    let results = chunks(&messages, "tool_result");
    assert_eq!(results[0]["ok"], true, "{:#}", results[0]);
    let structured = &results[0]["structured"];
    assert!(structured["temperature"].is_number() && structured["conditions"].is_string(), "{structured:#}");
    let links = results[1]["resource_links"].as_array().expect("resource links");
    assert_eq!(links.len(), 2, "{links:#?}");
    let uri = links[1]["uri"].as_str().expect("a uri");
    assert!(uri.starts_with("demo://resource/"), "{uri}");
    assert!(links[1]["name"].is_string());
    let events = app.events();
    let logged = events.iter().find(|event| event["type"] == "tool_result").expect("a logged result");
    assert_eq!(&logged["extra"]["structured"], structured, "the log keeps the attachments: {logged:#}");

    let messages = client.chat("r-read", json!({"text": "what does it say?", "resources": [uri]})).await;
    assert_well_formed(&messages);
    assert_eq!(messages.last().expect("terminal")["status"], "complete", "{messages:#?}");
    let requests = app.model_requests();
    let last = requests.last().expect("a model request").to_string();
    assert!(last.contains(&format!("Resource {uri}")), "{last}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_megabyte_of_output_stays_whole_in_the_log_and_reaches_the_model_as_head_and_tail() {
    let output = format!("{}{}", "H".repeat(500_000), "T".repeat(500_000));
    let script = json!([
        {"tool_calls": [{"name": "demo__echo", "arguments": {"text": output}}]},
        {"text": "That was long."}
    ]);
    let app = TestApp::start(Options {
        script: Some(script),
        servers: vec![("demo", demo())],
        configure: Box::new(|settings| settings.chat.service.max_tool_result_chars = 20_000),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    let messages = client.chat("r-long", json!({"text": "echo a megabyte"})).await;
    assert_well_formed(&messages);
    let preview = chunks(&messages, "tool_result").remove(0)["content"].as_str().expect("a preview").to_owned();
    assert!(preview.len() < 3_000 && preview.starts_with("HHH"), "the client gets a preview: {} chars", preview.len());

    let events = app.events();
    let logged = events.iter().find(|event| event["type"] == "tool_result").expect("a logged result");
    assert_eq!(logged["content"].as_str().expect("content"), output, "the log holds all of it");

    let requests = app.model_requests();
    let tool = requests[1]["messages"].as_array().expect("messages").iter().find(|message| message["role"] == "tool");
    let seen = tool.expect("the tool message")["content"].as_str().expect("text").to_owned();
    let cut = "\n[output cut: 980000 of 1000000 characters omitted from the middle]\n";
    assert_eq!(seen, format!("{}{cut}{}", "H".repeat(10_000), "T".repeat(10_000)));
    app.shutdown().await;
}
