//! Several hosts (SPEC §6): three `mcp-platform serve` processes on one real PostgreSQL
//! behind a real nginx (round robin, WebSocket upgrade, no stickiness).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};
use support::nginx::Nginx;
use support::postgres::Postgres;
use support::*;

const REPLICAS: usize = 3;

/// One replica on the database at `url`, answering with the mock model at `mock`.
fn replica(dir: &Path, mock: &ChildProcess, url: &str) -> ChildProcess {
    let servers = write_servers_config(dir);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml").display().to_string();
    let mut command = mcp_platform(&["serve", "--port", "0", "--config", &config]);
    command.envs([
        ("MCP__STORE__BACKEND", "postgres".to_owned()),
        ("DATABASE_URL", url.to_owned()),
        ("MCP__LLM__ACTIVE", "mock".to_owned()),
        ("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("http://{}/v1", mock.addr)),
        ("MCP__LIMITS__CHATS_PER_MINUTE", "0".to_owned()),
        ("MCP__LOGGING__LEVEL", "warn".to_owned()),
        ("MCP_SERVERS_CONFIG_PATH", servers.display().to_string()),
    ]);
    ChildProcess::start(command)
}

/// `mcp_platform_turns_total{outcome="completed"}` of one replica.
async fn completed_turns(addr: SocketAddr) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(r#"mcp_platform_turns_total{outcome="completed"} "#))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_clients_hop_between_three_replicas_and_every_turn_runs_once() {
    const CLIENTS: usize = 60;
    const TURNS: usize = 3;
    let test = "sixty_clients_hop_between_three_replicas_and_every_turn_runs_once";
    let Some(bin) = support::postgres::available(test) else { return };
    if !support::nginx::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut database = Postgres::start(&bin);
    let url = database.database();
    let mock = ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--word-delay-ms", "0"]));
    let replicas: Vec<ChildProcess> = (0..REPLICAS).map(|_| replica(dir.path(), &mock, &url)).collect();
    let nginx = Nginx::start(&replicas.iter().map(|replica| replica.addr).collect::<Vec<_>>());

    // Each turn on a new socket: nginx sends consecutive sockets to different replicas, so
    // every conversation hops.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let front = nginx.addr;
            tokio::spawn(async move {
                let conversation = format!("conv-{client}");
                for turn in 0..TURNS {
                    let mut socket = WsClient::connect(front).await;
                    let request = format!("c{client}-t{turn}");
                    let payload = json!({"text": "what is 2+3", "conversation_id": conversation});
                    let messages = socket.chat(&request, payload).await;
                    assert_well_formed(&messages);
                    assert_eq!(messages.last().unwrap()["status"], "complete", "{messages:#?}");
                    assert!(text_of(&messages).contains('5'), "{messages:#?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }

    let mut per_replica = Vec::new();
    for replica in &replicas {
        per_replica.push(completed_turns(replica.addr).await);
    }
    assert_eq!(per_replica.iter().sum::<f64>(), (CLIENTS * TURNS) as f64, "{per_replica:?}");
    assert!(per_replica.iter().all(|turns| *turns > 0.0), "every replica served: {per_replica:?}");

    let verified = replay(&[&url, "--verify"]);
    assert!(verified.status.success(), "{}{}", text(&verified.stdout), text(&verified.stderr));
    let exported = mcp_platform(&["export", "--store", &url]).output().unwrap();
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let file = dir.path().join("exported.jsonl");
    std::fs::write(&file, &exported.stdout).unwrap();
    assert_verifies(&file);

    // Every turn exactly once: one user message and one answer per request, in its conversation.
    let events = read_events(&file);
    let mut per_request: BTreeMap<String, HashMap<String, usize>> = BTreeMap::new();
    for event in &events {
        let request = event["request_id"].as_str().unwrap_or_default().to_owned();
        let kind = match (&event["type"], &event["extra"]["status"]) {
            (Value::String(kind), _) if kind == "user_message" => "user",
            (_, Value::String(status)) if status == "complete" => "answer",
            _ => continue,
        };
        *per_request.entry(request).or_default().entry(kind.to_owned()).or_default() += 1;
    }
    assert_eq!(per_request.len(), CLIENTS * TURNS);
    for (request, kinds) in &per_request {
        assert_eq!((kinds.get("user"), kinds.get("answer")), (Some(&1), Some(&1)), "{request}: {kinds:?}");
    }
    assert!(database.log().lines().all(|line| !line.contains("PANIC")), "{}", database.log());
    drop(nginx);
    drop(replicas);
}
