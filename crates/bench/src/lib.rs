//! `mcp-platform bench`: load on a real server over real WebSockets.
//!
//! It starts `mock-llm` (no delay) and `serve` (fsync on, no MCP servers, a fresh events file)
//! as child processes of its own binary, so the figures are those of the release server a user
//! runs, with the load generator in a separate process. It reports turns per second and
//! latency percentiles per connection count, then the server's resident memory per idle
//! socket.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Connection counts to measure, each with every connection sending turns back to back.
    #[arg(long, value_delimiter = ',', default_value = "1,64,512")]
    pub connections: Vec<usize>,
    /// Turns per measurement (spread over its connections).
    #[arg(long, default_value_t = 2000)]
    pub turns: usize,
    /// Idle sockets held open to measure memory per connection (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    raise_open_file_limit();
    let dir = std::env::temp_dir().join(format!("mcp-platform-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe()?;
    let (mut mock, mock_addr) = spawn_and_read_address(
        Command::new(&exe).args(["mock-llm", "--port", "0", "--word-delay-ms", "0"]),
        "mock-llm",
    )
    .await?;
    let servers = dir.join("servers_config.json");
    std::fs::write(&servers, r#"{"mcpServers": {}}"#)?;
    let mut serve = Command::new(&exe);
    serve
        .args(["serve", "--port", "0", "--servers"])
        .arg(&servers)
        .env("MCP__LLM__ACTIVE", "mock")
        .env("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("{mock_addr}/v1"))
        .env("MCP__STORE__PATH", dir.join("events.jsonl"))
        .env("MCP__STORE__FSYNC", "true")
        .env("MCP__LOGGING__LEVEL", "error")
        .env("MCP__WEBSOCKET__MAX_IN_FLIGHT_PER_CONNECTION", "8");
    let (mut server, server_addr) = spawn_and_read_address(&mut serve, "serve").await?;
    let url = format!("{}/ws/chat", server_addr.replace("http://", "ws://"));
    let server_pid = server.id().context("server pid")?;

    println!("| connections | turns | turns/s | p50 ms | p99 ms |");
    println!("|---:|---:|---:|---:|---:|");
    for &connections in &args.connections {
        let turns = args.turns.max(connections);
        let result = measure_turns(&url, connections, turns).await?;
        println!(
            "| {connections} | {turns} | {:.0} | {:.2} | {:.2} |",
            turns as f64 / result.elapsed.as_secs_f64(),
            percentile(&result.latencies, 0.50),
            percentile(&result.latencies, 0.99)
        );
    }
    if args.idle > 0 {
        let before = resident_kib(server_pid)?;
        let sockets = open_idle(&url, args.idle).await?;
        let after = resident_kib(server_pid)?;
        println!(
            "\nidle sockets: {} open; server RSS {before} KiB → {after} KiB: {:.1} KiB per connection",
            sockets.len(),
            (after.saturating_sub(before)) as f64 / sockets.len() as f64
        );
    }
    let _ = server.start_kill();
    let _ = mock.start_kill();
    let _ = server.wait().await;
    let _ = mock.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

struct Measurement {
    elapsed: Duration,
    latencies: Vec<f64>,
}

/// `turns` chat turns over `connections` sockets, each socket sending its next turn as soon as
/// the previous one completed.
async fn measure_turns(url: &str, connections: usize, turns: usize) -> anyhow::Result<Measurement> {
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(connect(url).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let share = turns / connections + usize::from(index < turns % connections);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for turn in 0..share {
                let request_id = uuid::Uuid::now_v7().to_string();
                let frame = json!({"action": "chat", "request_id": request_id,
                                   "payload": {"text": format!("hello number {turn}")}});
                let sent = Instant::now();
                socket.send(Message::text(frame.to_string())).await?;
                loop {
                    let Some(message) = socket.next().await else { anyhow::bail!("server closed the socket") };
                    if let Message::Text(text) = message? {
                        let message: Value = serde_json::from_str(text.as_str())?;
                        match message["status"].as_str() {
                            Some("complete") => break,
                            Some("error" | "cancelled") => anyhow::bail!("turn failed: {message}"),
                            _ => {}
                        }
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(turns);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    Ok(Measurement { elapsed, latencies })
}

/// Opens `count` sockets and proves each is served (a ping answered) before returning them.
async fn open_idle(url: &str, count: usize) -> anyhow::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let mut socket = connect(url).await.with_context(|| format!("idle socket {index} (raise `ulimit -n`?)"))?;
        socket.send(Message::text(json!({"action": "ping", "request_id": "p"}).to_string())).await?;
        socket.next().await.context("pong")??;
        sockets.push(socket);
    }
    Ok(sockets)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client socket with Nagle's algorithm off, as latency-minded clients use.
async fn connect(url: &str) -> anyhow::Result<Socket> {
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await.context("connect")?;
    Ok(socket)
}

async fn spawn_and_read_address(command: &mut Command, name: &str) -> anyhow::Result<(Child, String)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.split_whitespace().find(|word| word.starts_with("http://")) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, address.to_owned()));
        }
    }
    anyhow::bail!("{name} exited before it printed its address")
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    parse_vm_rss(&status_path)
}

fn parse_vm_rss(path: &Path) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * quantile).round() as usize]
}

/// Ten thousand sockets need more descriptors than the usual soft limit of 1024; children
/// inherit the raised limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
