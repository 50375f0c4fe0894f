//! The real `mcp-platform serve` binary as an OS process: signals, exit codes, and several
//! processes sharing one events file.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn mock_llm(dir: &Path, script: Option<Value>) -> ChildProcess {
    let mut args = vec!["mock-llm".to_owned(), "--port".into(), "0".into(), "--word-delay-ms".into(), "0".into()];
    if let Some(script) = script {
        let path = dir.join("script.json");
        std::fs::write(&path, script.to_string()).expect("write script");
        args.extend(["--script".into(), path.display().to_string()]);
    }
    ChildProcess::start(mcp_platform(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

fn serve(dir: &Path, mock: &ChildProcess, store: &Path, grace_seconds: f64) -> ChildProcess {
    let servers = write_servers_config(dir);
    let env = [
        ("MCP__LLM__ACTIVE", "mock".to_owned()),
        ("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("http://{}/v1", mock.addr)),
        ("MCP__STORE__PATH", store.display().to_string()),
        ("MCP__SHUTDOWN__GRACE_SECONDS", grace_seconds.to_string()),
        ("MCP__LOGGING__LEVEL", "warn".to_owned()),
        ("MCP_SERVERS_CONFIG_PATH", servers.display().to_string()),
    ];
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml").display().to_string();
    let mut command = mcp_platform(&["serve", "--port", "0", "--config", &config]);
    command.envs(env);
    let server = ChildProcess::start(command);
    wait_for_mcp_servers(server.addr);
    server
}

async fn readyz_status(addr: std::net::SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/readyz")).await.map(|response| response.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn sigterm_lets_the_running_turn_finish_then_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let words: Vec<String> = (0..30).map(|n| format!("w{n}")).collect();
    let mock = mock_llm(dir.path(), Some(json!([{"text": words.join(" "), "delay_ms": 50}])));
    let store = dir.path().join("events.jsonl");
    let mut server = serve(dir.path(), &mock, &store, 10.0);
    assert_eq!(readyz_status(server.addr).await, 200);

    let mut client = WsClient::connect(server.addr).await;
    client.send(json!({"action": "chat", "request_id": "long", "payload": {"text": "talk"}})).await;
    let mut messages = vec![client.recv().await, client.recv().await];
    server.signal(libc::SIGTERM);

    let deadline = Instant::now() + Duration::from_secs(5);
    while readyz_status(server.addr).await != 503 {
        assert!(Instant::now() < deadline, "/readyz turns 503 while draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.send(json!({"action": "chat", "request_id": "late", "payload": {"text": "too late"}})).await;
    let mut others = Vec::new();
    messages.extend(client.collect("long", &mut others).await);
    assert_well_formed(&messages);
    assert_eq!(messages.last().expect("terminal")["status"], "complete", "the turn finished within the grace");
    assert_eq!(text_of(&messages).trim(), words.join(" "));
    let late = match others.pop() {
        Some(late) => late,
        None => client.recv().await,
    };
    assert_eq!((late["request_id"].clone(), late["error"]["code"].clone()), (json!("late"), json!(503)));
    assert_eq!(client.recv_close().await.map(|(code, _)| code), Some(1001));

    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    let events = read_events(&store);
    let long: Vec<&Value> = events.iter().filter(|event| event["request_id"] == "long").collect();
    assert_eq!(long.first().expect("user message")["type"], "user_message");
    assert_eq!(long.last().expect("answer")["extra"]["status"], "complete");
    assert!(events.iter().all(|event| event["request_id"] != "late"), "a refused request leaves no trace");
    assert_verifies(&store);
}

#[tokio::test]
async fn two_server_processes_share_one_log_while_conversations_hop_between_them() {
    const CLIENTS: usize = 6;
    const TURNS: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_llm(dir.path(), None);
    let store = dir.path().join("events.jsonl");
    let servers = [serve(dir.path(), &mock, &store, 5.0), serve(dir.path(), &mock, &store, 5.0)];
    let addrs = [servers[0].addr, servers[1].addr];

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let conversation_id = format!("shared-{client}");
            let mut request_ids = Vec::new();
            for turn in 0..TURNS {
                // Each turn of a conversation goes to the other process.
                let mut socket = WsClient::connect(addrs[(client + turn) % 2]).await;
                let request_id = format!("c{client}-t{turn}");
                let text = format!("what is {client}+{turn}");
                let messages =
                    socket.chat(&request_id, json!({"text": text, "conversation_id": conversation_id})).await;
                assert_well_formed(&messages);
                assert_eq!(messages.last().expect("terminal")["status"], "complete", "{messages:#?}");
                assert_eq!(chunks(&messages, "tool_result")[0]["content"], (client + turn).to_string());
                request_ids.push(request_id);
            }
            request_ids
        }));
    }
    let mut expected = HashSet::new();
    for client in clients {
        expected.extend(client.await.expect("client task"));
    }

    let events = read_events(&store);
    let user_messages: Vec<&str> = events
        .iter()
        .filter(|event| event["type"] == "user_message")
        .map(|event| event["request_id"].as_str().expect("request_id"))
        .collect();
    assert_eq!(user_messages.len(), CLIENTS * TURNS, "every turn logged exactly once");
    assert_eq!(user_messages.iter().copied().map(str::to_owned).collect::<HashSet<_>>(), expected);
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        seqs.entry(event["conversation_id"].as_str().expect("conversation").to_owned())
            .or_default()
            .push(event["seq"].as_u64().expect("seq"));
    }
    for (conversation, seqs) in &seqs {
        assert_eq!(*seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seq of {conversation}");
        assert_eq!(seqs.len(), TURNS * 4, "user, tool call, tool result, answer per turn in {conversation}");
    }
    assert_verifies(&store);
    for mut server in servers {
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait_exit(Duration::from_secs(15)).code(), Some(0));
    }
}

#[tokio::test]
async fn a_request_of_a_killed_process_is_finished_with_a_503_at_the_next_start_and_never_run_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let words: Vec<String> = (0..400).map(|n| format!("w{n}")).collect();
    let mock = mock_llm(dir.path(), Some(json!([{"text": words.join(" "), "delay_ms": 50}])));
    let store = dir.path().join("events.jsonl");
    let mut server = serve(dir.path(), &mock, &store, 10.0);
    let mut client = WsClient::connect(server.addr).await;
    client.send(json!({"action": "chat", "request_id": "cut", "payload": {"text": "talk"}})).await;
    // Streaming text means the claim is stored and the turn is mid-answer.
    let first = client.recv().await;
    assert_eq!(first["status"], "processing", "{first}");
    let chunk = client.recv().await;
    assert_eq!(chunk["chunk"]["type"], "text", "{chunk}");
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10));

    let events = read_events(&store);
    let claim: Vec<&Value> = events.iter().filter(|event| event["request_id"] == "cut").collect();
    assert_eq!(claim.len(), 1, "only the claim was stored before the kill: {claim:#?}");
    assert_eq!(claim[0]["type"], "user_message");
    assert!(claim[0]["extra"]["owner"].as_str().is_some_and(|owner| owner.contains(&format!("/{}/", server.pid()))));

    // The next process on the file finishes it before it listens.
    let restarted = serve(dir.path(), &mock, &store, 10.0);
    let events = read_events(&store);
    let cut: Vec<&Value> = events.iter().filter(|event| event["request_id"] == "cut").collect();
    assert_eq!(cut.len(), 2, "{cut:#?}");
    let end = cut[1];
    assert_eq!((end["type"].clone(), end["extra"]["status"].clone()), (json!("meta"), json!("error")));
    assert_eq!(end["extra"]["error"]["code"], 503);
    let told = end["extra"]["error"]["message"].as_str().expect("a message").to_owned();
    assert!(told.contains("interrupted") && told.contains("new request_id"), "{told}");

    // Resending it, or resuming it, gets that terminal message; the turn does not run again.
    let mut client = WsClient::connect(restarted.addr).await;
    let resent = client.chat("cut", json!({"text": "talk"})).await;
    let last = resent.last().expect("a terminal message");
    assert_eq!((last["status"].clone(), last["error"]["code"].clone()), (json!("error"), json!(503)), "{resent:#?}");
    assert_eq!(last["error"]["message"], told.as_str());
    client.send(json!({"action": "resume", "request_id": "cut", "after_seq": 0})).await;
    let resumed = client.collect("cut", &mut Vec::new()).await;
    assert_eq!(resumed.last().expect("a terminal message")["error"]["message"], told.as_str());
    let after: Vec<Value> = read_events(&store).into_iter().filter(|event| event["request_id"] == "cut").collect();
    assert_eq!(after.len(), 2, "nothing of a second run: {after:#?}");
    assert_verifies(&store);
}
