//! The child process of one MCP server: spawning it in its own process group, draining its
//! stderr into our logs, and making sure nothing of it survives a stop.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::ServerConfig;

/// Longest stderr line we log; the rest of a longer line is dropped.
const MAX_LOG_LINE: usize = 2048;
/// Stderr lines logged per second per server; a flood beyond it is counted, not logged.
const LOG_LINES_PER_SECOND: u32 = 200;

pub struct McpServerProcess {
    child: Child,
    /// The process group, which is the child's pid (`process_group(0)`).
    pgid: i32,
    /// The last line the server wrote to stderr: usually why it could not start.
    last_stderr: Arc<Mutex<Option<String>>>,
    /// Taken by the first stop: a finished task cannot be awaited twice.
    stderr_drained: Option<tokio::task::JoinHandle<()>>,
}

/// Where the command is: a relative path with a slash is relative to the server's `cwd`,
/// like it would be for a shell started there; a bare name is looked up on `PATH`.
fn resolve_command(command: &str, cwd: Option<&Path>) -> PathBuf {
    let path = Path::new(command);
    match cwd {
        Some(cwd) if path.is_relative() && command.contains('/') => cwd.join(path),
        _ => path.to_path_buf(),
    }
}

pub fn spawn(
    server: &str,
    command: &str,
    config: &ServerConfig,
) -> Result<(McpServerProcess, ChildStdout, ChildStdin), String> {
    let program = resolve_command(command, config.cwd.as_deref());
    let mut command = Command::new(&program);
    command
        .args(&config.args)
        .envs(&config.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().map_err(|error| {
        let fix = match error.kind() {
            std::io::ErrorKind::NotFound => "the command or the cwd does not exist",
            std::io::ErrorKind::PermissionDenied => "the command is not executable",
            _ => "the command could not be started",
        };
        format!(
            "cannot start `{}`: {error} ({fix}; check `command` and `cwd` of server `{server}` in servers_config.json)",
            program.display()
        )
    })?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| format!("server `{server}` exited before it could be watched"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(format!("server `{server}`: its stdio pipes were not created"));
    };
    let last_stderr = Arc::new(Mutex::new(None));
    let stderr_drained = Some(tokio::spawn(drain_stderr(server.to_owned(), stderr, last_stderr.clone())));
    Ok((McpServerProcess { child, pgid, last_stderr, stderr_drained }, stdout, stdin))
}

/// Logs the server's stderr line by line. Memory stays bounded whatever the server writes:
/// long lines are cut at [`MAX_LOG_LINE`] and a flood is rate-limited.
async fn drain_stderr(server: String, stderr: impl AsyncRead + Unpin, last_line: Arc<Mutex<Option<String>>>) {
    let mut reader = BufReader::with_capacity(16 * 1024, stderr);
    let mut line = Vec::with_capacity(MAX_LOG_LINE);
    let mut cut = false;
    let mut window_start = Instant::now();
    let mut logged_in_window = 0u32;
    let mut dropped = 0u64;
    loop {
        let (consumed, complete) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(available) => {
                let newline = available.iter().position(|b| *b == b'\n');
                let take = newline.map_or(available.len(), |i| i + 1);
                let room = MAX_LOG_LINE.saturating_sub(line.len());
                let body = &available[..newline.unwrap_or(take)];
                line.extend_from_slice(&body[..body.len().min(room)]);
                cut |= body.len() > room;
                (take, newline.is_some())
            }
        };
        reader.consume(consumed);
        if !complete {
            continue;
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
        if !text.trim().is_empty() {
            *last_line.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.clone());
        }
        if window_start.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(server = %server, dropped, "MCP server stderr flood: lines not logged");
                dropped = 0;
            }
            window_start = Instant::now();
            logged_in_window = 0;
        }
        if logged_in_window < LOG_LINES_PER_SECOND {
            logged_in_window += 1;
            if cut {
                tracing::info!(server = %server, "stderr: {text} [line cut]");
            } else {
                tracing::info!(server = %server, "stderr: {text}");
            }
        } else {
            dropped += 1;
        }
        line.clear();
        cut = false;
    }
    if dropped > 0 {
        tracing::warn!(server = %server, dropped, "MCP server stderr flood: lines not logged");
    }
}

fn signal_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: killpg only sends a signal; the group is one we created for this server.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// True while any process of the group is alive. Zombies do not count: one whose parent
/// died waits for an init that may never reap it, and it holds nothing.
fn group_alive(pgid: i32) -> bool {
    if !signal_group(pgid, 0) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may contain spaces, so split after `)`.
        let mut fields = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace()).into_iter().flatten();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

impl McpServerProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resolves when the server process exits. Cancel-safe; once exited, answers at once.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    pub fn last_stderr(&self) -> Option<String> {
        self.last_stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn wait_group_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            // Reaping the leader matters: a zombie still counts as a member of the group.
            let _ = self.child.try_wait();
            if !group_alive(self.pgid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server the way the MCP stdio transport asks: its stdin is already closed by
    /// the caller; wait, then SIGTERM the whole process group, then SIGKILL it. Grandchildren
    /// share the group, so none survive.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = tokio::time::timeout(grace, self.child.wait()).await;
        if group_alive(self.pgid) {
            signal_group(self.pgid, libc::SIGTERM);
            if !self.wait_group_gone(grace).await {
                signal_group(self.pgid, libc::SIGKILL);
                self.wait_group_gone(grace).await;
            }
        }
        self.finish_stderr().await;
        self.child.try_wait().ok().flatten()
    }

    /// After the server died on its own: whatever it left in its group goes too.
    pub async fn reap_group(&mut self) {
        signal_group(self.pgid, libc::SIGKILL);
        let _ = self.child.wait().await;
        self.wait_group_gone(Duration::from_secs(2)).await;
        self.finish_stderr().await;
    }

    /// The pipe closed with the group; lets the last lines reach the log and `last_stderr`.
    async fn finish_stderr(&mut self) {
        if let Some(drained) = self.stderr_drained.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), drained).await;
        }
    }
}
