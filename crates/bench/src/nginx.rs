//! nginx in front of server replicas, as `deploy/nginx.conf` puts it there (round robin, no
//! stickiness, WebSocket upgrade), on loopback with its prefix in a directory of its own: the
//! configuration the bench's replicas and the replica tests both run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where Debian installs nginx, when it is not on `PATH`.
const DEBIAN_NGINX: &str = "/usr/sbin/nginx";

/// The nginx binary: on `PATH`, else Debian's.
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("nginx")).find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from(DEBIAN_NGINX)).filter(|debian| debian.is_file()))
}

/// `nginx.conf` for an nginx in the foreground listening on `listen`, spreading connections
/// over `upstreams` in turn, with every file it writes under `prefix`.
pub fn config(prefix: &Path, listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams.iter().map(|addr| format!("        server {addr};\n")).collect();
    let prefix = prefix.display();
    format!(
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
        listen {listen};
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
    )
}
