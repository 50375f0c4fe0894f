//! The server as a hostile client meets it (issue "bounded under abuse"): every resource a
//! client can make the server hold has a limit, and every protocol edge a clear answer.
//! In-process tests use the app as `serve` builds it; the memory, start-up and log tests use a
//! real `mcp-platform serve` child, whose RSS, exit status and stderr are the ones users get.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

type RawSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn raw_socket(addr: std::net::SocketAddr) -> RawSocket {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat")).await.expect("connect").0
}

/// Reads until the close frame (its code and reason) or the end of the stream (`None`).
async fn close_of(socket: &mut RawSocket, within: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await.expect("the socket ends within the timeout") {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|frame| (u16::from(frame.code), frame.reason.to_string()));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

fn slow_client(settings: &mut mcp_platform::config::Settings) {
    settings.websocket.slow_client_timeout = 1.0;
    settings.websocket.send_buffer_bytes = 65536;
}

/// Sends `frame` until a send has been blocked for `blocked_for`: the server stopped reading
/// this socket (backpressure) that long ago at least.
async fn flood_until_blocked(socket: &mut RawSocket, frame: &str, blocked_for: Duration) {
    for _ in 0..2_000_000 {
        match tokio::time::timeout(blocked_for, socket.send(Message::text(frame.to_owned()))).await {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => panic!("the socket failed before it was closed: {error}"),
            Err(_) => return,
        }
    }
    panic!("the server kept reading a client that never reads");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1008() {
    let app =
        TestApp::start(Options { configure: Box::new(slow_client), servers: Vec::new(), ..Options::default() }).await;
    let mut socket = raw_socket(app.addr).await;
    // Pongs until the budget is spent and the reader stops taking frames; the client's sends
    // then block on the socket's backpressure. Blocked past the slow-client timeout, the
    // client reads again, within the time the server gives the close frame.
    let frame = json!({"action": "ping", "request_id": "x".repeat(100)}).to_string();
    flood_until_blocked(&mut socket, &frame, Duration::from_millis(1500)).await;
    let close = close_of(&mut socket, Duration::from_secs(20)).await;
    assert_eq!(close.as_ref().map(|(code, _)| *code), Some(1008), "{close:?}");
    assert!(close.expect("close").1.contains("too slow"));
    // Other sockets are not affected.
    let mut other = app.client().await;
    other.send(json!({"action": "ping", "request_id": "alive"})).await;
    assert_eq!(other.recv().await["status"], "pong");
    app.shutdown().await;
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_is_closed_with_1009_and_invalid_utf8_with_1007() {
    let configure = |settings: &mut mcp_platform::config::Settings| settings.websocket.max_message_bytes = 2048;
    let app =
        TestApp::start(Options { configure: Box::new(configure), servers: Vec::new(), ..Options::default() }).await;
    let mut socket = raw_socket(app.addr).await;
    socket.send(Message::text("x".repeat(2048 * 16 + 1))).await.expect("send");
    assert_eq!(close_of(&mut socket, RECEIVE_TIMEOUT).await.map(|(code, _)| code), Some(1009));

    let mut socket = raw_socket(app.addr).await;
    let invalid = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(invalid)).await.expect("send");
    let close = close_of(&mut socket, RECEIVE_TIMEOUT).await;
    assert_eq!(close.as_ref().map(|(code, _)| *code), Some(1007), "{close:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn mutated_frames_are_answered_and_leave_the_socket_serving() {
    let app = TestApp::start(Options { servers: Vec::new(), ..Options::default() }).await;
    let mut client = app.client().await;
    let valid = r#"{"action":"resume","request_id":"r-1","after_seq":3}"#;
    let mutations: Vec<String> = (0..valid.len())
        .flat_map(|at| {
            let mut dropped = valid.to_owned();
            dropped.remove(at);
            let mut doubled = valid.to_owned();
            doubled.insert(at, valid.as_bytes()[at] as char);
            [dropped, doubled]
        })
        .collect();
    for mutation in &mutations {
        client.send_text(mutation.clone()).await;
        let answer = client.recv().await;
        assert_eq!(answer["status"], "error", "{mutation} -> {answer}");
        assert!([400, 404].contains(&answer["error"]["code"].as_u64().expect("code")), "{mutation} -> {answer}");
    }
    client.send(json!({"action": "ping", "request_id": "still"})).await;
    assert_eq!(client.recv().await, json!({"request_id": "still", "status": "pong"}));
    app.shutdown().await;
}

#[tokio::test]
async fn a_cancel_storm_gives_one_terminal_message_and_nothing_after_it() {
    let script = json!([{"text": "a slow answer", "first_byte_delay_ms": 3000}]);
    let app = TestApp::start(Options { script: Some(script), servers: Vec::new(), ..Options::default() }).await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "storm", "payload": {"text": "hi"}})).await;
    assert_eq!(client.recv().await["status"], "processing");
    for _ in 0..2000 {
        client.send(json!({"action": "cancel", "request_id": "storm"})).await;
    }
    client.send(json!({"action": "ping", "request_id": "after"})).await;
    let mut storm = Vec::new();
    loop {
        let message = client.recv().await;
        if message["request_id"] == "after" {
            break;
        }
        storm.push(message);
    }
    assert_eq!(storm.iter().filter(|message| is_terminal(message)).count(), 1, "{storm:?}");
    assert!(is_terminal(storm.last().expect("the terminal message")), "nothing after the terminal one: {storm:?}");
    assert_eq!(storm.last().expect("terminal")["status"], "cancelled");
    app.shutdown().await;
}

#[tokio::test]
async fn after_seq_out_of_range_is_a_400_and_past_the_end_ends_with_the_terminal_message() {
    let script = json!([{"text": "one two three", "first_byte_delay_ms": 500}]);
    let app = TestApp::start(Options { script: Some(script), servers: Vec::new(), ..Options::default() }).await;
    let mut client = app.client().await;
    for bad in ["-1", "18446744073709551615", "1000000000000000000", "\"3\"", "1.5"] {
        client.send_text(format!(r#"{{"action":"resume","request_id":"r","after_seq":{bad}}}"#)).await;
        let answer = client.recv().await;
        assert_eq!(answer["error"]["code"], 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["data"]["validation_errors"][0]["field"], "after_seq", "{bad}: {answer}");
    }
    client.send(json!({"action": "chat", "request_id": "r", "payload": {"text": "count"}})).await;
    let processing = client.recv().await;
    assert_eq!(processing["status"], "processing");
    let mut resumer = app.client().await;
    resumer.send(json!({"action": "resume", "request_id": "r", "after_seq": 9_007_199_254_740_991u64})).await;
    let resumed = resumer.collect("r", &mut Vec::new()).await;
    assert_eq!(resumed.len(), 1, "only the terminal message: {resumed:?}");
    assert_eq!(resumed[0]["status"], "complete");
    let mut owner = vec![processing];
    owner.extend(client.collect("r", &mut Vec::new()).await);
    assert_well_formed(&owner);
    assert_eq!(owner.last(), resumed.last());
    app.shutdown().await;
}

#[tokio::test]
async fn the_in_flight_limit_says_when_to_retry_and_counts_resumes() {
    let script = json!([{"text": "slow", "first_byte_delay_ms": 2000}]);
    let configure = |settings: &mut mcp_platform::config::Settings| {
        settings.websocket.max_in_flight_per_connection = 1;
    };
    let app = TestApp::start(Options {
        script: Some(script),
        configure: Box::new(configure),
        servers: Vec::new(),
        ..Options::default()
    })
    .await;
    let mut client = app.client().await;
    client.send(json!({"action": "chat", "request_id": "one", "payload": {"text": "hi"}})).await;
    assert_eq!(client.recv().await["status"], "processing");
    client.send(json!({"action": "resume", "request_id": "one", "after_seq": 0})).await;
    let refused = client.recv().await;
    assert_eq!(refused["error"]["code"], 429, "{refused}");
    assert_eq!(refused["error"]["data"]["retry_after_seconds"], 1, "{refused}");
    app.shutdown().await;
}

#[tokio::test]
async fn control_characters_in_identifiers_are_a_400_naming_the_field() {
    let app = TestApp::start(Options { servers: Vec::new(), ..Options::default() }).await;
    let mut client = app.client().await;
    for bad in ["r\nFORGED admin login", "r\rFORGED", "r\u{1b}[2J"] {
        client.send(json!({"action": "chat", "request_id": bad, "payload": {"text": "hi"}})).await;
        let answer = client.recv().await;
        assert_eq!(answer["error"]["data"]["validation_errors"][0]["field"], "request_id", "{answer}");
        client
            .send(json!({"action": "chat", "request_id": "ok", "payload": {"text": "hi", "conversation_id": bad}}))
            .await;
        let answer = client.recv().await;
        assert_eq!(answer["error"]["data"]["validation_errors"][0]["field"], "payload.conversation_id", "{answer}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_dropped_and_healthz_answers_throughout() {
    let configure = |settings: &mut mcp_platform::config::Settings| settings.websocket.header_timeout = 1.0;
    let app =
        TestApp::start(Options { configure: Box::new(configure), servers: Vec::new(), ..Options::default() }).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("partial headers");
        idle.push(stream);
    }
    let healthz = reqwest::get(format!("http://{}/healthz", app.addr)).await.expect("/healthz answers");
    assert_eq!(healthz.status(), 200);
    for mut stream in idle {
        let mut buffer = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
        // hyper closes such a connection (possibly after a 408); it never serves the request.
        let rest = match read.expect("dropped within the timeout") {
            Ok(0) | Err(_) => String::new(),
            Ok(read) => String::from_utf8_lossy(&buffer[..read]).into_owned(),
        };
        assert!(!rest.contains(" 200 "), "{rest}");
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the timeout");
    let healthz = reqwest::get(format!("http://{}/healthz", app.addr)).await.expect("/healthz answers");
    assert_eq!(healthz.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn one_connection_over_max_connections_gets_503() {
    let configure = |settings: &mut mcp_platform::config::Settings| settings.limits.max_connections = 3;
    let app =
        TestApp::start(Options { configure: Box::new(configure), servers: Vec::new(), ..Options::default() }).await;
    let mut sockets = vec![app.client().await, app.client().await, app.client().await];
    let over = reqwest::get(format!("http://{}/healthz", app.addr)).await.expect("an answer");
    assert_eq!(over.status(), 503);
    assert!(over.text().await.expect("body").contains("limits.max_connections"));
    drop(sockets.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(format!("http://{}/healthz", app.addr)).await.expect("an answer").status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a closed socket frees its place");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await;
}

// ---- a real `serve` process ----

struct Served {
    server: ChildProcess,
    _mock: ChildProcess,
    stderr: PathBuf,
}

fn mock_llm(dir: &Path, script: Value) -> ChildProcess {
    let path = dir.join("script.json");
    std::fs::write(&path, script.to_string()).expect("write script");
    let script = path.display().to_string();
    ChildProcess::start(mcp_platform(&["mock-llm", "--port", "0", "--word-delay-ms", "0", "--script", &script]))
}

/// `mcp-platform serve` on the shipped config, with `env` overrides and stderr kept in a file.
fn serve(dir: &Path, script: Value, servers: Value, env: &[(&str, &str)]) -> Served {
    let mock = mock_llm(dir, script);
    let servers_path = dir.join("servers_config.json");
    std::fs::write(&servers_path, json!({ "mcpServers": servers }).to_string()).expect("write servers config");
    let stderr = dir.join("stderr.log");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml").display().to_string();
    let mut command = mcp_platform(&["serve", "--port", "0", "--config", &config]);
    command
        .env("MCP__LLM__ACTIVE", "mock")
        .env("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("http://{}/v1", mock.addr))
        .env("MCP__STORE__PATH", dir.join("events.jsonl"))
        .env("MCP_SERVERS_CONFIG_PATH", &servers_path)
        .envs(env.iter().copied())
        .stderr(Stdio::from(std::fs::File::create(&stderr).expect("stderr file")));
    Served { server: ChildProcess::start(command), _mock: mock, stderr }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// 40,000 `resume`s of a finished 60 KB answer from a client that never reads.
///
/// Runs the debug `serve` binary: it is what `cargo test` builds, and what is measured is the
/// memory the server keeps for the socket, which the build profile does not change (a debug
/// build only makes the 40,000 frames slower to refuse).
#[tokio::test]
async fn resumes_from_a_client_that_never_reads_cost_no_more_than_the_socket_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let answer: Vec<String> = (0..10_000).map(|n| format!("w{n:04}")).collect();
    let answer = answer.join(" ");
    let script = json!([{"text": answer}, {"text": "short one"}, {"text": "short two"}, {"text": "short three"}]);
    let served = serve(
        dir.path(),
        script,
        json!({}),
        &[("MCP__WEBSOCKET__SLOW_CLIENT_TIMEOUT", "2"), ("MCP__LOGGING__LEVEL", "warn")],
    );
    let addr = served.server.addr;
    let pid = served.server.pid();
    let mut owner = WsClient::connect(addr).await;
    let stored = owner.chat("big", json!({"text": "say a lot", "streaming": false})).await;
    assert_eq!(text_of(&stored).len(), answer.len());
    let before = rss_bytes(pid);

    let mut flooder = raw_socket(addr).await;
    let flood = tokio::spawn(async move {
        let frame = json!({"action": "resume", "request_id": "big", "after_seq": 0}).to_string();
        for _ in 0..40_000 {
            // Once the server stops reading, the rest waits in the kernel's socket buffers.
            match tokio::time::timeout(Duration::from_secs(1), flooder.send(Message::text(frame.clone()))).await {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => panic!("the socket failed before it was closed: {error}"),
                Err(_) => break,
            }
        }
        flooder
    });
    let mut peak = before;
    let mut latencies = Vec::new();
    for turn in ["short-1", "short-2", "short-3"] {
        let started = Instant::now();
        let messages = owner.chat(turn, json!({"text": "quick"})).await;
        assert_eq!(messages.last().expect("terminal")["status"], "complete");
        latencies.push(started.elapsed());
        peak = peak.max(rss_bytes(pid));
    }
    let mut flooder = loop {
        peak = peak.max(rss_bytes(pid));
        if flood.is_finished() {
            break flood.await.expect("flood task");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Not a byte read yet: wait until the server says it gave up on this client, then read,
    // within the time it gives the close frame.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&served.stderr).expect("stderr").contains("client stopped reading") {
        peak = peak.max(rss_bytes(pid));
        assert!(Instant::now() < deadline, "the never-reading client is disconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak = peak.max(rss_bytes(pid));
    let close = close_of(&mut flooder, Duration::from_secs(20)).await;
    if let Some((code, reason)) = close {
        assert_eq!(code, 1008, "{reason}");
    }

    // The stated bound (README): send_buffer_bytes + 16 x max_message_bytes + one stored answer.
    let send_buffer = 1 << 20;
    let hard_frame_limit = 16 * 65536;
    let allocator_slack = 2 << 20;
    let bound = send_buffer + hard_frame_limit + 3 * answer.len() as u64 + allocator_slack;
    let growth = peak.saturating_sub(before);
    eprintln!("RSS before {before}, peak {peak}, growth {growth}, bound {bound}, latencies {latencies:?}");
    assert!(growth <= bound, "RSS grew by {growth} bytes, over the bound of {bound}");
    assert!(latencies.iter().all(|latency| *latency < Duration::from_secs(5)), "{latencies:?}");
}

fn processes_with_argument(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|byte| *byte == 0).any(|arg| arg == marker.as_bytes()))
        })
        .collect()
}

#[tokio::test]
async fn sigterm_during_start_up_runs_the_shutdown_path_and_leaves_no_mcp_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    // `sleep` never answers `initialize`: an MCP server that hangs in its handshake.
    let marker = format!("3600.{}", std::process::id());
    let servers = json!({"hanging": {"command": "sleep", "args": [marker]}});
    let mut served = serve(
        dir.path(),
        json!([]),
        servers,
        &[("MCP__MCP__CONNECTION__CONNECTION_TIMEOUT", "30"), ("MCP__LOGGING__LEVEL", "info")],
    );
    let addr = served.server.addr;
    let healthz = reqwest::get(format!("http://{addr}/healthz")).await.expect("/healthz");
    assert_eq!(healthz.status(), 200);
    let readyz: Value =
        reqwest::get(format!("http://{addr}/readyz")).await.expect("/readyz").json().await.expect("json");
    assert_eq!(readyz["mcp_servers_starting"], 1, "{readyz}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_argument(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the hanging server runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    served.server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = served.server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(5), "within the grace period: {:?}", signalled.elapsed());
    assert_eq!(processes_with_argument(&marker), Vec::<u32>::new(), "no MCP server outlives the platform");
}

/// A log line of `format` for a chat with a secret text and key: ids in, text and key out,
/// and nothing forged by a `request_id` with control characters.
async fn assert_logs_are_safe(format: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut served = serve(
        dir.path(),
        json!([{"text": "the answer"}]),
        json!({}),
        &[
            ("MCP__LOGGING__LEVEL", "info"),
            ("MCP__LOGGING__FORMAT", format),
            ("MCP__LLM__PROVIDERS__MOCK__API_KEY", "env:ABUSE_TEST_KEY"),
            ("ABUSE_TEST_KEY", "sk-test-CREDENTIAL-4242"),
        ],
    );
    let mut client = WsClient::connect(served.server.addr).await;
    for forged in ["x\nFORGED admin login", "x\rFORGED admin login", "x\u{1b}[1GFORGED admin login"] {
        client.send(json!({"action": "chat", "request_id": forged, "payload": {"text": "hi"}})).await;
        assert_eq!(client.recv().await["error"]["data"]["validation_errors"][0]["field"], "request_id");
    }
    let messages =
        client.chat("req-visible", json!({"text": "MESSAGE-TEXT-SECRET", "conversation_id": "conv-visible"})).await;
    assert_eq!(messages.last().expect("terminal")["status"], "complete");
    drop(client);
    served.server.signal(libc::SIGTERM);
    assert_eq!(served.server.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let log = std::fs::read_to_string(&served.stderr).expect("stderr");
    assert!(log.contains("req-visible") && log.contains("conv-visible"), "{format} log names the ids:\n{log}");
    assert!(!log.contains("MESSAGE-TEXT-SECRET"), "{format} log holds message text:\n{log}");
    assert!(!log.contains("CREDENTIAL-4242"), "{format} log holds the credential:\n{log}");
    for line in log.lines() {
        assert!(!line.trim_start_matches(|c: char| c.is_control()).starts_with("FORGED"), "forged: {line:?}");
        assert!(!line.contains('\u{1b}') || format == "pretty", "{line:?}");
    }
}

#[tokio::test]
async fn json_logs_hold_ids_and_never_text_credentials_or_forged_lines() {
    assert_logs_are_safe("json").await;
}

#[tokio::test]
async fn pretty_logs_hold_ids_and_never_text_credentials_or_forged_lines() {
    assert_logs_are_safe("pretty").await;
}

/// A line edited in the middle of the events file: the server starts on it, says so at error
/// level and in `/readyz`, and `replay --verify` still names the line afterwards.
#[tokio::test]
async fn a_broken_chain_is_said_loudly_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let served = serve(dir.path(), json!([{"text": "a"}, {"text": "b"}, {"text": "c"}]), json!({}), &[]);
        let mut client = WsClient::connect(served.server.addr).await;
        for request in ["one", "two", "three"] {
            assert_eq!(client.chat(request, json!({"text": request})).await.last().expect("end")["status"], "complete");
        }
    }
    let store = dir.path().join("events.jsonl");
    let original = std::fs::read_to_string(&store).expect("events");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 6, "{original}");
    let edited = lines[2].replacen("\"content\":\"", "\"content\":\"EDITED ", 1);
    assert_ne!(edited, lines[2]);
    let mut changed: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
    changed[2] = edited;
    std::fs::write(&store, changed.join("\n") + "\n").expect("edit the file");

    let served = serve(dir.path(), json!([{"text": "after"}]), json!({}), &[("MCP__LOGGING__LEVEL", "info")]);
    let readyz = reqwest::get(format!("http://{}/readyz", served.server.addr)).await.expect("/readyz");
    assert_eq!(readyz.status(), 200, "it keeps serving");
    let readyz: Value = readyz.json().await.expect("json");
    assert_eq!(readyz["store"]["status"], "chain_broken", "{readyz}");
    assert!(readyz["store"]["problem"].as_str().expect("problem").starts_with("line 3:"), "{readyz}");
    let mut client = WsClient::connect(served.server.addr).await;
    assert_eq!(client.chat("four", json!({"text": "four"})).await.last().expect("end")["status"], "complete");
    let log = std::fs::read_to_string(&served.stderr).expect("stderr");
    let error_line = log.lines().find(|line| line.contains("hash chain is broken")).expect("an error line");
    let error_line: Value = serde_json::from_str(error_line).expect("a JSON log line");
    assert_eq!((error_line["level"].clone(), error_line["fields"]["line"].clone()), (json!("ERROR"), json!(3)));
    drop(served);
    let verify = replay(&[store.to_str().expect("path"), "--verify"]);
    assert!(!verify.status.success());
    assert!(text(&verify.stdout).contains("line 3") || text(&verify.stderr).contains("line 3"));
}

/// Before the store is open, the port already answers: alive, not ready, nothing else.
#[tokio::test]
async fn start_up_answers_healthz_at_once_and_readyz_503_until_the_app_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_llm::MockLlm::start("127.0.0.1:0".parse().expect("addr"), None).await.expect("mock-llm");
    let settings = support::settings(&mock.openai_base_url(), dir.path().join("events.jsonl"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let starting = mcp_platform::server::Starting::listen(listener, &settings).expect("listen");
    let base = format!("http://{}", starting.addr());
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.expect("/healthz").status(), 200);
    let readyz = reqwest::get(format!("{base}/readyz")).await.expect("/readyz");
    assert_eq!(readyz.status(), 503);
    assert_eq!(readyz.json::<Value>().await.expect("json")["status"], "starting");
    assert_eq!(reqwest::get(format!("{base}/api/tools")).await.expect("/api/tools").status(), 503);

    let servers = mcp_platform::config::ServersConfig { servers: Default::default() };
    let app = mcp_platform::app::App::build(settings, &servers).await.expect("the app builds");
    let server = app.serve_on(starting);
    let readyz = reqwest::get(format!("{base}/readyz")).await.expect("/readyz");
    assert_eq!(readyz.status(), 200);
    assert_eq!(readyz.json::<Value>().await.expect("json")["store"]["status"], "ok");
    server.shutdown().await;
}
