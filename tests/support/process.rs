//! The workspace's binaries as child processes: finding them, starting one and reading the
//! address it prints, and `replay --verify`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace, from the target folder the test runs from (`target/debug`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (./run_tests.sh does)",
        path.display()
    );
    path
}

/// A child process that is killed if the test ends before it is waited for.
pub struct ChildProcess {
    pub child: Child,
    /// The address the process printed (`... http://ADDR` or `... listening on ADDR`).
    pub addr: SocketAddr,
}

impl ChildProcess {
    /// Starts `command` with stdout piped and waits for the first line naming a socket address;
    /// the rest of its stdout is drained so the child never blocks on a full pipe.
    pub fn start(mut command: Command) -> Self {
        command.stdout(Stdio::piped());
        let mut child = command.spawn().expect("spawn the child process");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("the process prints its address").expect("utf-8");
            if let Some(addr) = line.split_whitespace().find_map(parse_address) {
                break addr;
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid this test spawned and still owns.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(result, 0, "signal delivered");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a `serve` process at `addr` has every MCP server's first start attempt behind
/// it (`/readyz`'s `mcp_servers_starting` is 0): `serve` is ready before its MCP servers are.
pub fn wait_for_mcp_servers(addr: SocketAddr) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut body = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let _ = stream.read_to_string(&mut body);
        }
        let starting = body
            .split_once("\r\n\r\n")
            .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|readyz| readyz["mcp_servers_starting"].as_u64());
        if starting == Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "the MCP servers did not settle: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_address(word: &str) -> Option<SocketAddr> {
    word.strip_prefix("http://").unwrap_or(word).trim_end_matches('/').parse().ok()
}

/// `mcp-platform ARGS`, not yet started.
pub fn mcp_platform(args: &[&str]) -> Command {
    let mut command = Command::new(binary("mcp-platform"));
    command.args(args);
    command
}

/// Runs `mcp-platform replay ARGS`.
pub fn replay(args: &[&str]) -> Output {
    mcp_platform(&["replay"]).args(args).output().expect("run mcp-platform replay")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `replay --verify` on `path`, asserting it passes.
pub fn assert_verifies(path: &Path) {
    let output = replay(&[path.to_str().expect("utf-8 path"), "--verify"]);
    assert!(output.status.success(), "replay --verify failed:\n{}{}", text(&output.stdout), text(&output.stderr));
}

/// Every line of an events file, parsed.
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).expect("every log line is JSON")).collect()
}

/// Runs `mcp-platform check` on `servers` (the JSON of a `servers_config.json`) with the
/// shipped config.yaml, `extra` flags and `env` added: the exit code, stdout and stderr.
pub fn check(servers: &serde_json::Value, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let servers_file = dir.path().join("servers_config.json");
    std::fs::write(&servers_file, servers.to_string()).unwrap();
    let output = mcp_platform(&["check", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"))
        .arg("--servers")
        .arg(&servers_file)
        .args(extra)
        // A provider without a key, so the settings check needs no secret.
        .env("MCP__LLM__ACTIVE", "ollama")
        // `check` opens the store as `serve` would; keep it out of the working directory.
        .env("MCP__STORE__PATH", dir.path().join("events.jsonl"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}
