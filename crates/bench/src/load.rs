//! The load: WebSocket clients sending `chat` turns back to back, and idle sockets.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::children::{CpuTime, Server, Target};

/// A turn's user text: mock-llm answers plain text with a sentence, arithmetic with a tool call
/// when a fitting tool is offered.
pub type Prompt = fn(usize) -> String;
pub const PLAIN: Prompt = |turn| format!("hello number {turn}");
pub const TOOL: Prompt = |turn| format!("what is {turn}+3");

#[derive(Clone, Default)]
pub struct Measurement {
    pub elapsed: Duration,
    /// Milliseconds, sorted.
    pub latencies: Vec<f64>,
    /// The server's CPU time over the measurement.
    pub server_cpu: CpuTime,
}

impl Measurement {
    /// Both measurements as one: times summed, latencies merged.
    pub fn add(&mut self, other: Measurement) {
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
        self.latencies.extend(other.latencies);
        self.latencies.sort_by(f64::total_cmp);
    }

    pub fn percentile(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * quantile).round() as usize]
    }
}

/// `turns` chat turns over `connections` sockets, each socket sending its next turn as soon as
/// the previous one completed.
pub async fn measure_turns(
    server: &impl Target,
    connections: usize,
    turns: usize,
    prompt: Prompt,
) -> anyhow::Result<Measurement> {
    let turns = turns.max(connections);
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(connect(server).await?);
    }
    let cpu_before = server.cpu_time()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let share = turns / connections + usize::from(index < turns % connections);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for turn in 0..share {
                latencies.push(chat_turn(&mut socket, &prompt(turn), None).await?);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(turns);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let server_cpu = server.cpu_time()? - cpu_before;
    latencies.sort_by(f64::total_cmp);
    Ok(Measurement { elapsed, latencies, server_cpu })
}

/// The latency of the very first turn a server answers.
pub async fn first_turn(server: &Server) -> anyhow::Result<f64> {
    let mut socket = connect(server).await?;
    chat_turn(&mut socket, &PLAIN(0), None).await
}

/// Latency of each of `turns` turns of one conversation, in order.
pub async fn one_conversation(server: &Server, turns: usize) -> anyhow::Result<Vec<f64>> {
    let mut socket = connect(server).await?;
    let conversation_id = uuid::Uuid::now_v7().to_string();
    let mut latencies = Vec::with_capacity(turns);
    for turn in 0..turns {
        latencies.push(chat_turn(&mut socket, &PLAIN(turn), Some(&conversation_id)).await?);
    }
    Ok(latencies)
}

/// The median latency of the (up to) 11 turns ending at 1-based turn `mark`: single turns
/// wait on an fsync, whose time varies more than what is measured here.
pub fn median_ending_at(latencies: &[f64], mark: usize) -> f64 {
    let mut window = latencies[mark.saturating_sub(11)..mark].to_vec();
    window.sort_by(f64::total_cmp);
    window[window.len() / 2]
}

/// One `chat` from send to `complete`, in milliseconds.
async fn chat_turn(socket: &mut Socket, text: &str, conversation_id: Option<&str>) -> anyhow::Result<f64> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let mut payload = json!({"text": text});
    if let Some(conversation_id) = conversation_id {
        payload["conversation_id"] = json!(conversation_id);
    }
    let frame = json!({"action": "chat", "request_id": request_id, "payload": payload});
    let sent = Instant::now();
    socket.send(Message::text(frame.to_string())).await?;
    loop {
        let Some(message) = socket.next().await else { anyhow::bail!("server closed the socket") };
        if let Message::Text(text) = message? {
            let message: Value = serde_json::from_str(text.as_str())?;
            match message["status"].as_str() {
                Some("complete") => return Ok(sent.elapsed().as_secs_f64() * 1e3),
                Some("error" | "cancelled") => anyhow::bail!("turn failed: {message}"),
                _ => {}
            }
        }
    }
}

/// Opens `count` sockets and proves each is served (a ping answered) before returning them.
pub async fn open_idle(server: &Server, count: usize) -> anyhow::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let mut socket = connect(server).await.with_context(|| format!("idle socket {index} (raise `ulimit -n`?)"))?;
        ping(&mut socket).await?;
        sockets.push(socket);
    }
    Ok(sockets)
}

async fn ping(socket: &mut Socket) -> anyhow::Result<()> {
    socket.send(Message::text(json!({"action": "ping", "request_id": "p"}).to_string())).await?;
    socket.next().await.context("pong")??;
    Ok(())
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// WebSocket upgrades (each then answering a `ping`, so the server has taken the socket on)
/// from `parallel` clients at once, `count` in all: upgrades per second and the server's CPU
/// time per upgrade. The TCP and HTTP work is in it as well as the credential check.
pub async fn measure_upgrades(server: &Server, count: usize, parallel: usize) -> anyhow::Result<(f64, Duration)> {
    let parallel = parallel.clamp(1, count.max(1));
    let cpu_before = server.cpu_time()?;
    let started = Instant::now();
    let clients = (0..parallel).map(|index| {
        let share = count / parallel + usize::from(index < count % parallel);
        async move {
            for _ in 0..share {
                let mut socket = connect(server).await?;
                ping(&mut socket).await?;
                socket.close(None).await?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(clients).await?;
    let elapsed = started.elapsed();
    let server_cpu = (server.cpu_time()? - cpu_before).total();
    Ok((count as f64 / elapsed.as_secs_f64(), server_cpu / count.max(1) as u32))
}

/// A client socket with Nagle's algorithm off, as latency-minded clients use, presenting the
/// server's bearer credential if it has one.
async fn connect(server: &impl Target) -> anyhow::Result<Socket> {
    let mut request = server.url().into_client_request()?;
    if let Some(bearer) = server.bearer() {
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {bearer}"))?);
    }
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await.context("connect")?;
    Ok(socket)
}
