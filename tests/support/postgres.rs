//! A real PostgreSQL from Debian's packages, started by the test on a free loopback port in a
//! temp dir and stopped when dropped.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! `postgres` user the package creates, in a data directory handed to it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long start-up may take on two shared cores.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Debian installs the server binaries off PATH, under a versioned folder.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The PostgreSQL binaries, or `None` after reporting the test as skipped (failing in CI).
pub fn available(test: &str) -> Option<PathBuf> {
    let found = bin_dir();
    if found.is_none() {
        assert!(!super::in_ci(), "{test}: PostgreSQL is required in CI (.ci/run installs it) but was not found");
        eprintln!("SKIPPED {test}: PostgreSQL not found under /usr/lib/postgresql");
    }
    found
}

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
    child: Option<Child>,
    databases: u32,
}

/// Owner of the server's files and process: `postgres` when running as root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let output = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&output.stdout).trim().parse().ok()?;
    let output = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&output.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

fn command(bin: &Path, program: &str) -> Command {
    let mut command = Command::new(bin.join(program));
    if let Some((uid, gid)) = run_as() {
        command.uid(uid).gid(gid);
    }
    command
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Postgres {
    /// `initdb` into a temp dir and start the server; waits until it accepts connections.
    pub fn start(bin: &Path) -> Postgres {
        let dir = tempfile::Builder::new().prefix("pg-").tempdir().expect("temp dir");
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the data dir");
        }
        let data = dir.path().join("data");
        let output = command(bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        let mut server = Postgres { port: 0, bin: bin.to_path_buf(), dir, child: None, databases: 0 };
        server.launch();
        server
    }

    fn launch(&mut self) {
        self.port = if self.port == 0 { free_port() } else { self.port };
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        if let Some((uid, gid)) = run_as() {
            let _ = std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid));
        }
        let child = command(&self.bin, "postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=on"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let ready = command(&self.bin, "pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database; its URL.
    pub fn database(&mut self) -> String {
        self.databases += 1;
        let name = format!("events_{}", self.databases);
        let output = command(&self.bin, "createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name])
            .output()
            .expect("run createdb");
        assert!(output.status.success(), "createdb failed: {}", String::from_utf8_lossy(&output.stderr));
        self.url(&name)
    }

    /// Runs SQL with `psql`, returning its unaligned output.
    pub fn psql(&self, database_url: &str, sql: &str) -> String {
        self.try_psql(database_url, sql).unwrap_or_else(|error| panic!("psql failed: {error}"))
    }

    /// Runs SQL with `psql`: its unaligned output, or what the server refused.
    pub fn try_psql(&self, database_url: &str, sql: &str) -> Result<String, String> {
        let output = command(&self.bin, "psql")
            .args([database_url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Fast shutdown (open connections are cut), then the same port again.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the server this struct started. SIGINT is the fast shutdown.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
