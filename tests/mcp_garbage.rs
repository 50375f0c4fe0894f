//! A server that writes garbage to stdout and floods stderr: calls still complete and our
//! memory stays bounded. Alone in its binary so other tests do not move the RSS figure.

mod support;

use std::time::Duration;

use serde_json::json;
use support::mcp::*;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn garbage_on_stdout_and_a_stderr_flood_neither_hang_nor_grow_memory() {
    let manager = start(servers(vec![("faulty", faulty(&[]))])).await;
    let warm = call(&manager, "faulty__ok", json!({})).await;
    assert!(warm.ok);
    let before = resident_bytes();

    // 10k non-JSON lines, then one 64 MiB line: rmcp drops lines beyond its 16 MiB cap.
    let garbage = tokio::time::timeout(
        Duration::from_secs(60),
        call(&manager, "faulty__garbage", json!({"lines": 10_000, "blob_mb": 64})),
    )
    .await
    .expect("garbage on stdout does not hang the call");
    assert_eq!((garbage.ok, garbage.content.as_str()), (true, "garbage written"));

    // 200k short lines and one 1 MiB line on stderr.
    let flood =
        tokio::time::timeout(Duration::from_secs(60), call(&manager, "faulty__flood", json!({"lines": 200_000})))
            .await
            .expect("a stderr flood does not hang the call");
    assert_eq!((flood.ok, flood.content.as_str()), (true, "flooded"));

    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 40 * MIB, "memory grew by {} MiB", grown / MIB);
    let after = call(&manager, "faulty__sum", json!({"a": 1, "b": 2})).await;
    assert_eq!((after.ok, after.content.as_str()), (true, "faulty sum 3"));
    assert_eq!(manager.servers_view()[0].restarts, 0, "the server was never restarted");
    manager.shutdown().await;
}
