//! Several `serve` replicas on one store behind nginx (round robin, no stickiness), as
//! `deploy/compose.yaml` runs them: the load goes to nginx, and the CPU time is the replicas'
//! summed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::auth::ServerAuth;
use crate::children::{CpuTime, MockLlm, Server, Target};

pub struct Replicas {
    servers: Vec<Server>,
    nginx: Child,
    url: String,
    bearer: Option<String>,
}

impl Replicas {
    /// `count` servers sharing one store (the events file in `dir`, or the database the
    /// environment names) and nginx in front of them, listening once this returns.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        mock: &MockLlm,
        auth: &ServerAuth,
        count: usize,
    ) -> anyhow::Result<Self> {
        let nginx = crate::nginx::binary().context("--replicas needs nginx, on PATH or at /usr/sbin/nginx")?;
        let events = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&events);
        let mut servers = Vec::with_capacity(count);
        for index in 0..count {
            servers
                .push(Server::start_on(exe, &dir.join(format!("replica-{index}")), &events, mock, None, auth).await?);
        }
        let upstreams = servers.iter().map(Server::socket_addr).collect::<anyhow::Result<Vec<_>>>()?;
        let listen: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        let config = prefix.join("nginx.conf");
        std::fs::write(&config, crate::nginx::config(&prefix, listen, &upstreams))?;
        let nginx = Command::new(nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nginx")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nginx did not listen on {listen} within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { servers, nginx, url: format!("ws://{listen}/ws/chat"), bearer: auth.bearer.clone() })
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.nginx.id() {
            // SAFETY: kill only sends a signal to the nginx master this struct started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        let _ = self.nginx.wait().await;
        for server in self.servers {
            server.stop().await;
        }
    }
}

impl Target for Replicas {
    fn url(&self) -> &str {
        &self.url
    }

    fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    fn cpu_time(&self) -> anyhow::Result<CpuTime> {
        let mut total = CpuTime::default();
        for server in &self.servers {
            total += server.cpu_time()?;
        }
        Ok(total)
    }
}
