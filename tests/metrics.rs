//! `/metrics` (SPEC §3): Prometheus text whose counters match the turns driven, for admins
//! only once authentication is on (SPEC §8). The recorder is global to a process, so this
//! binary holds one test that drives turns; the other drives none.

mod support;

use std::collections::HashMap;

use mcp_platform::auth::{Role, key_sha256};
use mcp_platform::config::{ApiKeyEntry, AuthMode, Secret};
use serde_json::json;
use support::*;

/// Parses the Prometheus text format strictly enough to fail on anything malformed: every
/// sample line is `name{labels} value` with a known metric name, a `# TYPE` line per metric.
fn parse(body: &str) -> HashMap<String, f64> {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in body.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'), "bad name in {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| types.contains_key(*base)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {family}: {line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_the_turns() {
    const TURNS: usize = 3;
    let app = TestApp::start(Options::default()).await;
    let mut client = app.client().await;
    for turn in 0..TURNS {
        let messages = client.chat(&format!("m-{turn}"), json!({"text": "what is 2+3"})).await;
        assert_eq!(messages.last().unwrap()["status"], "complete", "{messages:#?}");
    }
    let response = reqwest::get(format!("http://{}/metrics", app.addr)).await.expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let body = response.text().await.unwrap();
    let samples = parse(&body);
    let sample = |series: &str| samples.get(series).copied().unwrap_or_else(|| panic!("no {series} in\n{body}"));

    let turns = TURNS as f64;
    assert_eq!(sample(r#"mcp_platform_turns_total{outcome="completed"}"#), turns);
    assert_eq!(sample(r#"mcp_platform_turn_duration_seconds_count{outcome="completed"}"#), turns);
    // Each turn asks the model twice: for the tool call, then for the answer.
    assert_eq!(sample(r#"mcp_platform_model_calls_total{outcome="ok"}"#), 2.0 * turns);
    assert_eq!(sample("mcp_platform_model_call_duration_seconds_count"), 2.0 * turns);
    assert!(sample(r#"mcp_platform_model_tokens_total{kind="completion"}"#) > 0.0);
    assert_eq!(sample(r#"mcp_platform_tool_calls_total{server="demo",tool="sum",outcome="ok"}"#), turns);
    // The user turn, the tool calls, the tool results and the answer: four appends a turn.
    assert_eq!(sample(r#"mcp_platform_store_appends_total{outcome="ok"}"#), 4.0 * turns);
    assert_eq!(sample("mcp_platform_store_append_duration_seconds_count"), 4.0 * turns);
    assert_eq!(sample("mcp_platform_open_websockets"), 1.0);
    assert_eq!(sample("mcp_platform_requests_in_flight"), 0.0);
    assert_eq!(sample(r#"mcp_platform_mcp_server_state{server="demo",state="connected"}"#), 1.0);
    assert_eq!(sample(r#"mcp_platform_mcp_server_state{server="demo",state="failed"}"#), 0.0);
    assert!(body.contains("# TYPE mcp_platform_turn_duration_seconds histogram"), "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_only_an_admin_reads_metrics() {
    const USER_KEY: &str = "user-key-made-for-this-test";
    const ADMIN_KEY: &str = "admin-key-made-for-this-test";
    let app = TestApp::start(Options {
        configure: Box::new(|settings| {
            settings.auth.mode = AuthMode::ApiKeys;
            let entry = |user: &str, role, key| ApiKeyEntry {
                user: user.to_owned(),
                role,
                key_sha256: Secret::new(key_sha256(key)),
            };
            settings.auth.api_keys = vec![entry("alice", Role::User, USER_KEY), entry("ops", Role::Admin, ADMIN_KEY)];
        }),
        ..Options::default()
    })
    .await;
    let get = |key: Option<&'static str>| {
        let mut request = reqwest::Client::new().get(format!("http://{}/metrics", app.addr));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request.send()
    };
    let anonymous = get(None).await.expect("GET /metrics");
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"), "{:?}", anonymous.headers());
    assert_eq!(get(Some("not-a-key")).await.expect("GET /metrics").status().as_u16(), 401);
    let user = get(Some(USER_KEY)).await.expect("GET /metrics");
    assert_eq!(user.status().as_u16(), 403);
    assert!(!user.text().await.unwrap().contains("mcp_platform_"), "no figures for a user");
    let admin = get(Some(ADMIN_KEY)).await.expect("GET /metrics");
    assert_eq!(admin.status().as_u16(), 200);
    assert!(
        parse(&admin.text().await.unwrap())
            .contains_key(r#"mcp_platform_mcp_server_state{server="demo",state="connected"}"#)
    );
    app.shutdown().await;
}
