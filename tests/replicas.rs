//! Several hosts (SPEC §6): three `mcp-platform serve` processes on one real PostgreSQL
//! behind a real nginx (round robin, WebSocket upgrade, no stickiness).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::nginx::Nginx;
use support::postgres::Postgres;
use support::*;

const REPLICAS: usize = 3;

/// One replica on the database at `url`, answering with the mock model at `mock`.
fn replica(dir: &Path, mock: &ChildProcess, url: &str) -> ChildProcess {
    ChildProcess::start(replica_command(dir, mock, url))
}

fn replica_command(dir: &Path, mock: &ChildProcess, url: &str) -> std::process::Command {
    let servers = write_servers_config(dir);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml").display().to_string();
    let mut command = mcp_platform(&["serve", "--port", "0", "--config", &config]);
    command.envs([
        ("MCP__STORE__BACKEND", "postgres".to_owned()),
        ("DATABASE_URL", url.to_owned()),
        ("MCP__LLM__ACTIVE", "mock".to_owned()),
        ("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("http://{}/v1", mock.addr)),
        ("MCP__LIMITS__CHATS_PER_MINUTE", "0".to_owned()),
        // Every client here is `anonymous` from 127.0.0.1, through nginx: no per-user or
        // per-address socket limit applies to a load test.
        ("MCP__LIMITS__CONNECTIONS_PER_USER", "0".to_owned()),
        ("MCP__LIMITS__CONNECTIONS_PER_IP", "0".to_owned()),
        ("MCP__LOGGING__LEVEL", "warn".to_owned()),
        ("MCP_SERVERS_CONFIG_PATH", servers.display().to_string()),
    ]);
    command
}

/// A temp dir and a new database on a PostgreSQL started for `test`; `None` (the test
/// skipped) without PostgreSQL, or without nginx when the test needs it.
fn set_up(test: &str, needs_nginx: bool) -> Option<(tempfile::TempDir, Postgres, String)> {
    let bin = support::postgres::available(test)?;
    if needs_nginx && !support::nginx::available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut database = Postgres::start(&bin);
    let url = database.database();
    Some((dir, database, url))
}

/// A mock model that answers every request with `words`, one every `delay_ms`.
fn slow_mock(dir: &Path, words: &[String], delay_ms: u64) -> ChildProcess {
    let script = dir.join("slow.json");
    std::fs::write(&script, json!([{"text": words.join(" "), "delay_ms": delay_ms}]).to_string()).unwrap();
    ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--script", script.to_str().unwrap()]))
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
    let Some((dir, database, url)) = set_up(test, true) else { return };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_a_killed_replica_ends_with_a_503_within_the_lease() {
    let test = "a_request_of_a_killed_replica_ends_with_a_503_within_the_lease";
    let Some((dir, _database, url)) = set_up(test, false) else { return };
    let words: Vec<String> = (0..60).map(|n| format!("w{n}")).collect();
    let slow_mock = slow_mock(dir.path(), &words, 100);
    let mock = ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--word-delay-ms", "0"]));
    let mut doomed = replica(dir.path(), &slow_mock, &url);
    let survivor = replica(dir.path(), &mock, &url);

    let mut client = WsClient::connect(doomed.addr).await;
    let chat =
        json!({"action": "chat", "request_id": "doomed", "payload": {"text": "talk", "conversation_id": "c-doomed"}});
    client.send(chat.clone()).await;
    let processing = client.recv().await;
    assert_eq!(processing["status"], "processing", "{processing}");
    let first_chunk = client.recv().await;
    assert_eq!(first_chunk["status"], "chunk", "{first_chunk}");
    doomed.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    doomed.wait_exit(Duration::from_secs(10));

    // A resent chat on the survivor follows the request where the killed replica left it, and
    // gets its terminal 503 once the lease has run out.
    let limit = Duration::from_secs(15);
    let mut again = WsClient::connect(survivor.addr).await;
    again.send(chat.clone()).await;
    let followed = again.collect("doomed", &mut Vec::new()).await;
    assert!(killed_at.elapsed() < limit, "no terminal message within {limit:?}");
    // What the killed replica shared before it died comes first, as it was sent; a message it
    // sent its client but had not shared yet is lost with it.
    let (last, shared) = followed.split_last().unwrap();
    let sent = [processing, first_chunk];
    let compared = shared.len().min(sent.len());
    assert_eq!(shared[..compared], sent[..compared], "{followed:#?}");
    assert_eq!(last["error"]["code"], 503, "{followed:#?}");
    assert!(last["error"]["message"].as_str().unwrap().contains("send it again with a new request_id"), "{last}");
    // Sent again now, it gets the stored result.
    let answer = again.chat("doomed", chat["payload"].clone()).await;
    assert_eq!(answer.last().unwrap()["error"]["code"], 503, "{answer:#?}");
    assert_eq!(answer[0]["replayed"], true, "{answer:#?}");

    // What was acknowledged before the kill is stored; the end was stored once.
    let exported = mcp_platform(&["export", "--store", &url, "--conversation", "c-doomed"]).output().unwrap();
    let lines: Vec<Value> = text(&exported.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let kinds: Vec<&str> = lines.iter().map(|event| event["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["user_message", "meta"], "{lines:#?}");
    assert_eq!(lines[1]["extra"]["error"]["code"], 503);
    let verified = replay(&[&url, "--verify"]);
    assert!(verified.status.success(), "{}", text(&verified.stdout));

    // The survivor serves on.
    let mut fresh = WsClient::connect(survivor.addr).await;
    let messages = fresh.chat("after", json!({"text": "what is 2+3"})).await;
    assert_eq!(messages.last().unwrap()["status"], "complete", "{messages:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_fails_requests_clearly_and_service_resumes() {
    const CLIENTS: usize = 16;
    let test = "a_postgres_restart_fails_requests_clearly_and_service_resumes";
    let Some((dir, mut database, url)) = set_up(test, false) else { return };
    let mock = ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--word-delay-ms", "20"]));
    let server = replica(dir.path(), &mock, &url);
    let addr = server.addr;

    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut turn = 0;
                while !stop.is_cancelled() {
                    let mut socket = WsClient::connect(addr).await;
                    let request = format!("c{client}-t{turn}");
                    let messages = socket.chat(&request, json!({"text": "what is 2+3"})).await;
                    let last = messages.last().unwrap().clone();
                    let outcome = match (&last["status"], &last["error"]["code"]) {
                        (Value::String(status), _) if status == "complete" => "complete",
                        (_, code) if code == 503 => "503",
                        _ => panic!("neither complete nor a 503: {messages:#?}"),
                    };
                    outcomes.push((request, outcome));
                    turn += 1;
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _database = tokio::task::spawn_blocking(move || {
        database.restart();
        database
    })
    .await
    .unwrap();
    // Service resumes by itself: new requests complete again.
    let resumed_by = Instant::now() + Duration::from_secs(20);
    loop {
        let mut probe = WsClient::connect(addr).await;
        let request = format!("probe-{}", uuid::Uuid::now_v7());
        let messages = probe.chat(&request, json!({"text": "what is 2+3"})).await;
        if messages.last().unwrap()["status"] == "complete" {
            break;
        }
        assert!(Instant::now() < resumed_by, "no completed turn after the restart: {messages:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.cancel();
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let failed = outcomes.iter().filter(|(_, outcome)| *outcome == "503").count();
    assert!(failed > 0, "the restart hit some requests: {outcomes:?}");
    assert!(outcomes.len() > failed, "and others completed");

    // None half-logged: once the leases of the cut requests ran out, every stored request
    // has its end, exactly once.
    let settled_by = Instant::now() + Duration::from_secs(20);
    loop {
        let exported = mcp_platform(&["export", "--store", &url]).output().unwrap();
        let events: Vec<Value> =
            text(&exported.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let mut ends: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for event in &events {
            let counts = ends.entry(event["request_id"].as_str().unwrap_or_default().to_owned()).or_default();
            if event["type"] == "user_message" {
                counts.0 += 1;
            }
            if event["extra"]["status"].is_string() {
                counts.1 += 1;
            }
        }
        if ends.values().all(|counts| *counts == (1, 1)) {
            break;
        }
        assert!(Instant::now() < settled_by, "requests without exactly one end: {:?}", {
            ends.iter().filter(|(_, counts)| **counts != (1, 1)).collect::<Vec<_>>()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let verified = replay(&[&url, "--verify"]);
    assert!(verified.status.success(), "{}", text(&verified.stdout));
}

/// `mcp_platform_requests_in_flight` of one replica.
async fn requests_in_flight(addr: SocketAddr) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix("mcp_platform_requests_in_flight "))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// Resumes `request_id` after `after_seq` through a new socket to `addr`: the messages up to
/// its end.
async fn resume(addr: SocketAddr, request_id: &str, after_seq: u64) -> Vec<Value> {
    let mut client = WsClient::connect(addr).await;
    client.send(json!({"action": "resume", "request_id": request_id, "after_seq": after_seq})).await;
    client.collect(request_id, &mut Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_mid_answer_resumes_through_another_replica_and_gets_the_whole_answer_once() {
    let test = "a_client_cut_mid_answer_resumes_through_another_replica_and_gets_the_whole_answer_once";
    let Some((dir, _database, url)) = set_up(test, true) else { return };
    let words: Vec<String> = (0..80).map(|n| format!("w{n}")).collect();
    let mock = slow_mock(dir.path(), &words, 50);
    let replicas: Vec<ChildProcess> = (0..REPLICAS).map(|_| replica(dir.path(), &mock, &url)).collect();
    let nginx = Nginx::start(&replicas.iter().map(|replica| replica.addr).collect::<Vec<_>>());

    let mut client = WsClient::connect(nginx.addr).await;
    client.send(json!({"action": "chat", "request_id": "cut", "payload": {"text": "talk"}})).await;
    let mut before_cut = vec![client.recv().await];
    for _ in 0..3 {
        before_cut.push(client.recv().await);
    }
    assert_eq!(before_cut[3]["status"], "chunk", "{before_cut:#?}");
    drop(client);
    let seen = before_cut.last().unwrap()["seq"].as_u64().unwrap();

    // The replica running it is the one with a request in flight; the others follow it.
    let mut running = Vec::new();
    for replica in &replicas {
        running.push(requests_in_flight(replica.addr).await);
    }
    assert_eq!(running.iter().filter(|count| **count == 1.0).count(), 1, "{running:?}");
    let other = replicas[running.iter().position(|count| *count == 0.0).unwrap()].addr;
    let (through_nginx, elsewhere) = tokio::join!(resume(nginx.addr, "cut", seen), resume(other, "cut", seen));

    for resumed in [through_nginx, elsewhere] {
        let mut messages = before_cut.clone();
        messages.extend(resumed);
        assert_well_formed(&messages);
        assert_eq!(messages.last().unwrap()["status"], "complete", "{messages:#?}");
        assert_eq!(text_of(&messages).trim(), words.join(" "), "the whole answer, once");
    }
    // One that comes after the end, on a replica that never ran it, gets the stored answer.
    let after_the_end = resume(other, "cut", seen).await;
    assert_eq!(after_the_end.last().unwrap()["status"], "complete", "{after_the_end:#?}");
    assert_eq!(text_of(&after_the_end).trim(), words.join(" "), "the whole answer, once");
    let exported = mcp_platform(&["export", "--store", &url]).output().unwrap();
    let events: Vec<Value> = text(&exported.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|event| event["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user_message", "assistant_message"], "the turn ran once: {events:#?}");
    drop(nginx);
    drop(replicas);
}
