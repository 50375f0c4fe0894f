//! A real nginx from Debian's packages in front of server processes: round robin, no
//! stickiness, WebSocket upgrade — the configuration of `deploy/nginx.conf` on a free
//! loopback port, with its prefix in a temp dir. Stopped when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const NGINX: &str = "/usr/sbin/nginx";

/// Whether nginx is installed; reports the test as skipped otherwise (failing in CI).
pub fn available(test: &str) -> bool {
    if std::path::Path::new(NGINX).exists() {
        return true;
    }
    assert!(!super::in_ci(), "{test}: nginx is required in CI (.ci/run installs it) but was not found");
    eprintln!("SKIPPED {test}: nginx not found at {NGINX}");
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
        let port = super::postgres::free_port();
        let servers: String = upstreams.iter().map(|addr| format!("        server {addr};\n")).collect();
        let prefix = dir.path().display();
        let config = format!(
            "daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream mcp_platform {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mcp_platform;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
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
