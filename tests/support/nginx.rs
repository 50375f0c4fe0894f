//! A real nginx from Debian's packages in front of server processes: round robin, no
//! stickiness, WebSocket upgrade — the configuration the bench runs too
//! (`mcp_bench::nginx`) on a free loopback port, with its prefix in a temp dir. Stopped when
//! dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Whether nginx is installed; reports the test as skipped otherwise (failing in CI).
pub fn available(test: &str) -> bool {
    if mcp_bench::nginx::binary().is_some() {
        return true;
    }
    assert!(!super::in_ci(), "{test}: nginx is required in CI (.ci/run installs it) but was not found");
    eprintln!("SKIPPED {test}: nginx not found on PATH or at /usr/sbin/nginx");
    false
}

pub struct Nginx {
    pub addr: SocketAddr,
    _dir: TempDir,
    child: Child,
}

impl Nginx {
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        let dir = tempfile::Builder::new().prefix("nginx-").tempdir().expect("temp dir");
        let addr: SocketAddr = ([127, 0, 0, 1], super::postgres::free_port()).into();
        let config = mcp_bench::nginx::config(dir.path(), addr, upstreams);
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let child = Command::new(mcp_bench::nginx::binary().expect("nginx"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start listening on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { addr, _dir: dir, child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the nginx master this struct started; SIGTERM is its fast stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
