//! `mcp-platform bench`: load on a real server over real WebSockets.
//!
//! It starts `mock-llm` (no delay) and `serve` (fsync on, a fresh events file) as child
//! processes of a release binary, so the figures are those of the server a user runs, with the
//! load generator in a separate process; all of them share the machine's cores. It reports,
//! per connection count, turns per second, latency percentiles and the server's CPU time per
//! turn (from `/proc/<pid>/stat`), for plain turns and for tool turns (one call to the demo
//! MCP server); the first turn of a fresh server; latency along one long conversation; and the
//! server's resident memory per idle socket. With several `--auth` modes, one server per mode
//! runs the same plain-turn load in alternating rounds, and each measures WebSocket upgrades
//! per second with its credential. With `--replicas N`, the plain turns are also measured
//! through nginx in front of N servers sharing one store.

mod auth;
mod children;
mod load;
pub mod nginx;
mod replicas;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use auth::{AuthMode, ServerAuth};
use children::{MockLlm, Server};
use replicas::Replicas;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Connection counts to measure plain turns at, each connection sending turns back to back
    /// (0 skips).
    #[arg(long, value_delimiter = ',', default_value = "1,64,512")]
    pub connections: Vec<usize>,
    /// Connection counts to measure tool turns ("what is 2+3": one call to the demo MCP
    /// server, two model calls) at; needs `demo-server` beside the binary (0 skips).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub tool_connections: Vec<usize>,
    /// Turns per measurement (spread over its connections).
    #[arg(long, default_value_t = 2000)]
    pub turns: usize,
    /// Idle sockets held open to measure memory per connection (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Instead of everything above: N turns of one conversation on one connection, with the
    /// latency at turns 10, 100, 1,000 and N.
    #[arg(long, default_value_t = 0)]
    pub one_conversation: usize,
    /// The `mcp-platform` binary whose `serve` and `mock-llm` are measured [default: this one],
    /// so that two builds can be compared by the same load generator.
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Authentication modes to measure plain turns and upgrades under, one server each (the
    /// first also serves the other measurements); `jwt` is an RS256 token checked against a
    /// JWKS file.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub auth: Vec<AuthMode>,
    /// Rounds of the plain-turn measurements, alternating between the `--auth` modes (each
    /// round starting with the next one) so that the machine's changing load falls on each
    /// alike.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// WebSocket upgrades to measure per `--auth` mode, 16 clients at a time (0 skips).
    #[arg(long, default_value_t = 0)]
    pub upgrades: usize,
    /// Also measures the plain turns, in each round after the single server, through nginx in
    /// front of this many `serve` replicas sharing one store: an events file of their own, or
    /// the database the environment names (`MCP__STORE__BACKEND=postgres`, `DATABASE_URL`),
    /// which the single server uses too; with the first `--auth` mode; the CPU time is the
    /// replicas' summed. Needs nginx, on `PATH` or at /usr/sbin/nginx (0 skips).
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
}

/// Clients upgrading at once in the upgrade measurement.
const UPGRADING_CLIENTS: usize = 16;

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    raise_open_file_limit();
    let dir = std::env::temp_dir().join(format!("mcp-platform-bench-{}", std::process::id()));
    let exe = match &args.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let mock = MockLlm::start(&exe).await?;
    let outcome = measure(&args, &exe, &dir, &mock).await;
    mock.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(args: &BenchArgs, exe: &Path, dir: &Path, mock: &MockLlm) -> anyhow::Result<()> {
    let mut modes = args.auth.clone();
    modes.dedup();
    anyhow::ensure!(!modes.is_empty(), "--auth needs at least one mode");
    let mut servers = Vec::with_capacity(modes.len());
    for &mode in &modes {
        let auth = ServerAuth::prepare(mode, &dir.join(format!("auth-{}", mode.name())))?;
        servers.push((
            auth.mode,
            Server::start(exe, &dir.join(format!("plain-{}", mode.name())), mock, None, &auth).await?,
        ));
    }
    let replicas = match args.replicas {
        0 => None,
        count => {
            let auth = ServerAuth::prepare(modes[0], &dir.join("auth-replicas"))?;
            Some(Replicas::start(exe, &dir.join("replicas"), mock, &auth, count).await?)
        }
    };
    let outcome = measure_on(args, exe, dir, mock, &servers, replicas.as_ref()).await;
    if let Some(replicas) = replicas {
        replicas.stop().await;
    }
    for (_, server) in servers {
        server.stop().await;
    }
    outcome
}

async fn measure_on(
    args: &BenchArgs,
    exe: &Path,
    dir: &Path,
    mock: &MockLlm,
    servers: &[(AuthMode, Server)],
    replicas: Option<&Replicas>,
) -> anyhow::Result<()> {
    let (first_mode, server) = &servers[0];
    // One sample of a once-only cost is noise on a shared machine: every fresh server gives one.
    let mut firsts = Vec::with_capacity(servers.len());
    for (_, fresh) in servers {
        firsts.push(load::first_turn(fresh).await?);
    }
    let mut warm = load::Measurement::default();
    for (_, started) in servers {
        warm.add(load::measure_turns(started, 1, 50, load::PLAIN).await?);
    }
    let shown: Vec<String> = firsts.iter().map(|first| format!("{first:.2}")).collect();
    println!(
        "first turn of a fresh server ({} servers): {} ms; warm turns after them: p50 {:.2} ms (worst first turn {:.1}×)\n",
        servers.len(),
        shown.join(", "),
        warm.percentile(0.5),
        firsts.iter().copied().fold(0.0, f64::max) / warm.percentile(0.5)
    );
    if args.one_conversation > 0 {
        let auth = ServerAuth::prepare(*first_mode, &dir.join("auth-one"))?;
        let server = Server::start(exe, &dir.join("one"), mock, None, &auth).await?;
        let outcome = one_conversation(&server, args.one_conversation).await;
        server.stop().await;
        return outcome;
    }
    println!(
        "| turns | auth | connections | count | turns/s | p50 ms | p99 ms | server CPU ms/turn | of it in the kernel |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for &connections in args.connections.iter().filter(|&&count| count > 0) {
        let mut totals = vec![load::Measurement::default(); servers.len()];
        let mut replicated = load::Measurement::default();
        let through_nginx = format!("plain, {} replicas behind nginx", args.replicas);
        for round in 0..args.rounds.max(1) {
            // Each round starts with the next mode, so none is always measured first.
            for offset in 0..servers.len() {
                let index = (round + offset) % servers.len();
                let (mode, server) = &servers[index];
                let measured = load::measure_turns(server, connections, args.turns, load::PLAIN).await?;
                report("plain", *mode, connections, &measured);
                totals[index].add(measured);
            }
            if let Some(replicas) = replicas {
                let measured = load::measure_turns(replicas, connections, args.turns, load::PLAIN).await?;
                report(&through_nginx, *first_mode, connections, &measured);
                replicated.add(measured);
            }
        }
        if servers.len() > 1 || args.rounds > 1 {
            for ((mode, _), total) in servers.iter().zip(&totals) {
                report("plain, all rounds", *mode, connections, total);
            }
            if replicas.is_some() {
                report(&format!("{through_nginx}, all rounds"), *first_mode, connections, &replicated);
            }
        }
    }
    let demo = exe.with_file_name("demo-server");
    if !demo.exists() {
        println!(
            "(no tool turns: {} is missing; `cargo build --release --workspace --bins` builds it)",
            demo.display()
        );
    } else if args.tool_connections.iter().any(|&count| count > 0) {
        let auth = ServerAuth::prepare(*first_mode, &dir.join("auth-tools"))?;
        let tools = Server::start(exe, &dir.join("tools"), mock, Some(&demo), &auth).await?;
        for &connections in args.tool_connections.iter().filter(|&&count| count > 0) {
            let measured = load::measure_turns(&tools, connections, args.turns, load::TOOL).await;
            report("tool", *first_mode, connections, &measured?);
        }
        tools.stop().await;
    }
    if args.upgrades > 0 {
        println!("\n| auth | upgrades | upgrades/s | server CPU ms/upgrade |");
        println!("|---|---:|---:|---:|");
        for (mode, server) in servers {
            let (per_second, cpu) = load::measure_upgrades(server, args.upgrades, UPGRADING_CLIENTS).await?;
            println!("| {} | {} | {per_second:.0} | {:.3} |", mode.name(), args.upgrades, cpu.as_secs_f64() * 1e3);
        }
    }
    if args.idle > 0 {
        let before = server.resident_kib()?;
        let sockets = load::open_idle(server, args.idle).await?;
        let after = server.resident_kib()?;
        println!(
            "\nidle sockets: {} open; server RSS {before} KiB → {after} KiB: {:.1} KiB per connection",
            sockets.len(),
            (after.saturating_sub(before)) as f64 / sockets.len() as f64
        );
    }
    Ok(())
}

fn report(kind: &str, mode: AuthMode, connections: usize, measured: &load::Measurement) {
    let turns = measured.latencies.len();
    let per_turn_ms = |time: std::time::Duration| time.as_secs_f64() * 1e3 / turns as f64;
    println!(
        "| {kind} | {} | {connections} | {turns} | {:.0} | {:.2} | {:.2} | {:.3} | {:.3} |",
        mode.name(),
        turns as f64 / measured.elapsed.as_secs_f64(),
        measured.percentile(0.50),
        measured.percentile(0.99),
        per_turn_ms(measured.server_cpu.total()),
        per_turn_ms(measured.server_cpu.system),
    );
}

async fn one_conversation(server: &Server, turns: usize) -> anyhow::Result<()> {
    let measured = load::one_conversation(server, turns).await.context("one conversation")?;
    println!("one conversation of {turns} turns on one connection (median of the 11 turns ending at each):");
    println!("| turn | latency ms |");
    println!("|---:|---:|");
    let mut marks = vec![10, 100, 1000, turns];
    marks.retain(|&mark| mark <= turns);
    marks.dedup();
    for mark in marks {
        println!("| {mark} | {:.2} |", load::median_ending_at(&measured, mark));
    }
    Ok(())
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
