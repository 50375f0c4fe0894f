//! Everything the integration tests share, in one place: the application started on
//! loopback ([`app`]), a WebSocket client of the protocol ([`ws`]), child processes of the
//! workspace's binaries ([`process`]), a program in a pseudo-terminal ([`terminal`]), a real
//! Chromium ([`browser`]), PostgreSQL ([`postgres`]) and nginx ([`nginx`]), users with API
//! keys ([`users`]), the demo server with its notes in a file ([`notes`]), and builders for the
//! LLM ([`llm`]), MCP ([`mcp`]) and store ([`store`]) tests.
//!
//! Tests never build crates themselves: `./run_tests.sh` builds every workspace binary first
//! (`cargo build --workspace --bins`), and [`process::binary`] says so when one is missing.
#![allow(dead_code, unused_imports)] // each test binary uses its own part of the helpers

pub mod app;
pub mod browser;
pub mod llm;
pub mod mcp;
pub mod nginx;
pub mod notes;
pub mod postgres;
pub mod process;
pub mod store;
pub mod terminal;
pub mod users;
pub mod ws;

pub use app::*;
pub use process::*;
pub use ws::*;

/// Whether this run is CI's, where a missing external program fails a test instead of
/// skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// Reports a test as skipped because `program` is missing, or fails it in CI, where every
/// program a test needs is installed by `.ci/run`.
pub fn skip_without(program: &str, test: &str) -> bool {
    let found =
        std::process::Command::new(program).arg("--version").output().is_ok_and(|output| output.status.success());
    if found {
        return false;
    }
    assert!(!in_ci(), "{test}: {program} is required in CI (.ci/run installs it) but was not found");
    eprintln!("SKIPPED {test}: {program} not found on PATH");
    true
}
