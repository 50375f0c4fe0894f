//! The processes under measurement: `mock-llm` and `serve`, started from a release binary, and
//! what `/proc` says about the server (CPU time, resident memory).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::auth::ServerAuth;

/// A running `serve` child.
pub struct Server {
    child: Child,
    pub pid: u32,
    /// `ws://…/ws/chat`.
    pub url: String,
    /// What each client presents on its upgrade.
    pub bearer: Option<String>,
    address: String,
}

/// Where the load goes: one server, or replicas behind a load balancer.
pub trait Target {
    /// `ws://…/ws/chat`.
    fn url(&self) -> &str;
    /// What each client presents on its upgrade.
    fn bearer(&self) -> Option<&str>;
    /// CPU time the serving processes have used so far, summed.
    fn cpu_time(&self) -> anyhow::Result<CpuTime>;
}

impl Target for Server {
    fn url(&self) -> &str {
        &self.url
    }

    fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    fn cpu_time(&self) -> anyhow::Result<CpuTime> {
        Server::cpu_time(self)
    }
}

/// A process's CPU time, in its own code and in the kernel on its behalf (system calls: socket
/// reads and writes, `fdatasync`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

impl std::ops::AddAssign for CpuTime {
    fn add_assign(&mut self, other: CpuTime) {
        self.user += other.user;
        self.system += other.system;
    }
}

impl CpuTime {
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// The `mock-llm` child every server of a run talks to.
pub struct MockLlm {
    child: Child,
    pub address: String,
}

impl MockLlm {
    pub async fn start(exe: &Path) -> anyhow::Result<Self> {
        let (child, address) = spawn_and_read_address(
            Command::new(exe).args(["mock-llm", "--port", "0", "--word-delay-ms", "0"]),
            "mock-llm",
        )
        .await?;
        Ok(Self { child, address })
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Server {
    /// `serve` with `store.fsync: true`, a fresh events file in `dir` and `auth`; with
    /// `demo_server`, that MCP server is configured (tool turns), else none. The store is
    /// that file unless the environment chooses another (`MCP__STORE__BACKEND=postgres`).
    pub async fn start(
        exe: &Path,
        dir: &Path,
        mock: &MockLlm,
        demo_server: Option<&Path>,
        auth: &ServerAuth,
    ) -> anyhow::Result<Self> {
        let events = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&events);
        Self::start_on(exe, dir, &events, mock, demo_server, auth).await
    }

    /// [`Server::start`] on the events file `events`, which other servers may share.
    pub async fn start_on(
        exe: &Path,
        dir: &Path,
        events: &Path,
        mock: &MockLlm,
        demo_server: Option<&Path>,
        auth: &ServerAuth,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let servers = dir.join("servers_config.json");
        let config = match demo_server {
            Some(demo) => serde_json::json!({"mcpServers": {"demo": {"command": demo}}}),
            None => serde_json::json!({"mcpServers": {}}),
        };
        std::fs::write(&servers, config.to_string())?;
        let mut serve = Command::new(exe);
        serve
            .args(["serve", "--port", "0", "--servers"])
            .arg(&servers)
            .env("MCP__LLM__ACTIVE", "mock")
            .env("MCP__LLM__PROVIDERS__MOCK__BASE_URL", format!("{}/v1", mock.address))
            .env("MCP__STORE__PATH", events)
            .env("MCP__STORE__FSYNC", "true")
            .env("MCP__LOGGING__LEVEL", "error")
            // Every bench socket is the one user `anonymous` from one address: the per-user and
            // per-address limits (SPEC §8) would measure themselves, not the server.
            .env("MCP__LIMITS__CHATS_PER_MINUTE", "0")
            .env("MCP__LIMITS__CONNECTIONS_PER_USER", "0")
            .env("MCP__LIMITS__CONNECTIONS_PER_IP", "0")
            .env("MCP__WEBSOCKET__MAX_IN_FLIGHT_PER_CONNECTION", "8")
            .envs(auth.env.iter().map(|(name, value)| (name, value)));
        if let Some(config) = &auth.config_file {
            serve.env("MCP_CONFIG_PATH", config);
        }
        let (child, address) = spawn_and_read_address(&mut serve, "serve").await?;
        let pid = child.id().context("server pid")?;
        let url = format!("{}/ws/chat", address.replace("http://", "ws://"));
        let server = Self { child, pid, url, bearer: auth.bearer.clone(), address };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits for `/readyz` to answer 200, as a load balancer would before sending traffic.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let host = self.address.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if readyz_ok(&host).await {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the server at {host} did not become ready within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The address it listens on.
    pub fn socket_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.address.trim_start_matches("http://").parse().context("the server's address")
    }

    /// CPU time the server has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<CpuTime> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // The command name (field 2) may hold spaces; the fields after its `)` are plain.
        let fields: Vec<&str> = stat.rsplit_once(')').context("no command name")?.1.split_whitespace().collect();
        // SAFETY: sysconf only reads a constant of the system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let seconds = |index: usize| -> anyhow::Result<Duration> {
            let ticks: u64 = fields.get(index).context("short /proc stat")?.parse().context("CPU ticks")?;
            Ok(Duration::from_secs_f64(ticks as f64 / per_second))
        };
        // utime and stime are fields 14 and 15; `fields` starts at field 3.
        Ok(CpuTime { user: seconds(11)?, system: seconds(12)? })
    }

    pub fn resident_kib(&self) -> anyhow::Result<u64> {
        parse_vm_rss(&PathBuf::from(format!("/proc/{}/status", self.pid)))
    }

    /// SIGTERM, as an operator stops it (a profiler running it then writes its output), and
    /// SIGKILL if it is not gone within a minute.
    pub async fn stop(mut self) {
        // SAFETY: kill only sends a signal to the child's pid, which this struct still owns.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

async fn readyz_ok(host: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else { return false };
    let request = format!("GET /readyz HTTP/1.0\r\nHost: {host}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b" 200")
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

fn parse_vm_rss(path: &Path) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}
