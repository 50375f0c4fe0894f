//! Supervision with real, misbehaving child processes: crashes, bad commands, the circuit
//! breaker, hanging tools, name clashes, list changes and clean shutdown.

mod support;

use std::time::{Duration, Instant};

use mcp_platform::mcp::{CircuitState, MAX_NAME_LEN, McpManager, McpServerState, ToolProvider, Unattended};
use serde_json::json;
use std::sync::Arc;
use support::mcp::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_killed_server_fails_its_call_at_once_and_comes_back() {
    let manager = start(servers(vec![("demo", demo())])).await;
    let pid = manager.server("demo").unwrap().pid.expect("a running server has a pid");
    let (progress, mut updates) = mpsc::unbounded_channel();
    let running = {
        let manager = manager.clone();
        tokio::spawn(async move {
            manager
                .call_tool(
                    &tool_call("demo__slow_count", json!({"n": 1000, "delay_ms": 20})),
                    progress,
                    CancellationToken::new(),
                    Arc::new(Unattended),
                )
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), updates.recv()).await.expect("the call is running");
    let killed_at = Instant::now();
    // SAFETY: sends SIGKILL to the server process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let outcome = tokio::time::timeout(Duration::from_secs(1), running)
        .await
        .expect("the call in flight fails within 1 s")
        .unwrap();
    assert!(killed_at.elapsed() < Duration::from_secs(1));
    assert!(!outcome.ok);
    assert!(outcome.content.contains("stopped while"), "{}", outcome.content);
    assert!(outcome.content.contains("signal"), "{}", outcome.content);

    // initial_reconnect_delay 0.2 s plus jitter, plus the start itself.
    wait_for(Duration::from_secs(3), "the restart", || {
        manager.server("demo").is_some_and(|s| s.state == McpServerState::Connected && s.restarts == 1)
    })
    .await;
    let server = manager.server("demo").unwrap();
    assert_ne!(server.pid, Some(pid));
    assert_eq!(server.tools.len(), 10);
    assert!(server.last_error.is_none());
    let next = call(&manager, "demo__sum", json!({"a": 2, "b": 3})).await;
    assert_eq!((next.ok, next.content.as_str()), (true, "5"));
    manager.shutdown().await;
}

#[tokio::test]
async fn a_bad_command_hides_nothing_and_retries_on_the_backoff_schedule() {
    let mut settings = settings();
    settings.connection.initial_reconnect_delay = 0.1;
    settings.connection.max_reconnect_delay = 0.4;
    settings.connection.max_reconnect_attempts = 3;
    let config = servers(vec![("good", demo()), ("bad", server("/nonexistent/mcp-server-binary", &[]))]);
    let started = Instant::now();
    let manager = McpManager::start(&config, &settings, defaults()).await;
    assert!(tool_names(&manager).contains(&"good__sum".to_owned()));
    let issues = manager.unavailable();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].server, "bad");
    assert!(issues[0].reason.contains("cannot start"), "{}", issues[0].reason);
    let bad = manager.server("bad").unwrap();
    assert_eq!(bad.state, McpServerState::Restarting);
    assert_eq!(bad.failed_attempts, 1);
    assert!(bad.next_attempt_at.is_some());

    wait_for(Duration::from_secs(5), "the bad server to be given up", || {
        manager.server("bad").is_some_and(|s| s.state == McpServerState::Failed)
    })
    .await;
    // One first attempt and three retries, separated by at least 0.1 + 0.2 + 0.4 s.
    assert_eq!(manager.server("bad").unwrap().failed_attempts, 4);
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
    let good = call(&manager, "good__sum", json!({"a": 1, "b": 2})).await;
    assert!(good.ok);
    manager.shutdown().await;
}

#[tokio::test]
async fn a_server_that_exits_at_start_is_reported_with_its_reason() {
    let manager = start(servers(vec![("faulty", faulty(&["--exit-at-start"]))])).await;
    let server = manager.server("faulty").unwrap();
    assert_ne!(server.state, McpServerState::Connected);
    let error = server.last_error.unwrap();
    assert!(error.contains("exit status: 2"), "{error}");
    assert!(error.contains("exiting at start as asked"), "{error}");
    manager.shutdown().await;
}

#[tokio::test]
async fn the_circuit_opens_after_n_failures_and_closes_after_the_cooldown() {
    let mut settings = settings();
    settings.circuit_breaker.failure_threshold = 3;
    settings.circuit_breaker.cooldown = 0.5;
    let manager = McpManager::start(&servers(vec![("faulty", faulty(&[]))]), &settings, defaults()).await;
    for _ in 0..3 {
        let outcome = call(&manager, "faulty__fail", json!({})).await;
        assert!(!outcome.ok);
        assert!(outcome.content.contains("failing on purpose"), "{}", outcome.content);
    }
    let server = manager.server("faulty").unwrap();
    assert_eq!(server.state, McpServerState::CircuitOpen);
    assert_eq!(server.circuit, CircuitState::Open);
    assert!(tool_names(&manager).is_empty(), "an open circuit offers no tools");
    let refused_at = Instant::now();
    let refused = call(&manager, "faulty__ok", json!({})).await;
    assert!(refused_at.elapsed() < Duration::from_millis(100));
    assert!(!refused.ok);
    assert!(refused.content.contains("circuit breaker"), "{}", refused.content);

    wait_for(Duration::from_secs(2), "the cooldown", || {
        manager.server("faulty").unwrap().circuit == CircuitState::HalfOpen
    })
    .await;
    let trial = call(&manager, "faulty__ok", json!({})).await;
    assert_eq!((trial.ok, trial.content.as_str()), (true, "ok"));
    let server = manager.server("faulty").unwrap();
    assert_eq!(server.circuit, CircuitState::Closed);
    assert_eq!(server.state, McpServerState::Connected);
    manager.shutdown().await;
}

#[tokio::test]
async fn a_hanging_tool_times_out_and_the_server_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = faulty(&["--marker-dir", &dir.path().display().to_string()]);
    config.tool_timeout = Some(0.5);
    let manager = start(servers(vec![("faulty", config)])).await;
    let started = Instant::now();
    let outcome = call(&manager, "faulty__hang", json!({})).await;
    let took = started.elapsed();
    assert!(!outcome.ok);
    assert!(outcome.content.contains("timed out after 0.5s"), "{}", outcome.content);
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1500), "{took:?}");
    wait_for(Duration::from_secs(3), "the server to see the cancellation", || {
        dir.path().join("hang-cancelled").exists()
    })
    .await;
    manager.shutdown().await;
}

#[tokio::test]
async fn same_tool_names_and_long_names_stay_distinct_and_callable() {
    let long_server = "a_server_whose_name_alone_is_already_quite_long_for_a_tool_prefix";
    let manager =
        start(servers(vec![("calc.a", demo()), ("calc_a", demo()), (long_server, demo()), ("faulty", faulty(&[]))]))
            .await;
    let names = tool_names(&manager);
    assert_eq!(names.len(), 10 * 3 + 12);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "names are unique: {names:?}");
    for name in &names {
        assert!(name.len() <= MAX_NAME_LEN, "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{name}");
    }
    let sums: Vec<_> = manager.tools_view().into_iter().filter(|tool| tool.item.original_name == "sum").collect();
    assert_eq!(sums.len(), 4);
    for sum in &sums {
        let outcome = call(&manager, &sum.item.name, json!({"a": 2, "b": 3})).await;
        assert!(outcome.ok, "{}: {}", sum.item.name, outcome.content);
        let expected = if sum.server == "faulty" { "faulty sum 5" } else { "5" };
        assert_eq!(outcome.content, expected, "{}", sum.item.name);
    }
    for (original, answer) in [
        ("report_every_single_detail_of_the_current_configuration_in_a_very_verbose_way", "long"),
        ("dotted.name", "dotted"),
    ] {
        let tool = manager.tools_view().into_iter().find(|tool| tool.item.original_name == original).unwrap();
        let outcome = call(&manager, &tool.item.name, json!({})).await;
        assert_eq!((outcome.ok, outcome.content.as_str()), (true, answer));
    }
    manager.shutdown().await;
}

#[tokio::test]
async fn list_changed_refreshes_the_tools() {
    let manager = start(servers(vec![("faulty", faulty(&[]))])).await;
    assert!(!tool_names(&manager).contains(&"faulty__extra".to_owned()));
    let added = call(&manager, "faulty__add_tool", json!({})).await;
    assert!(added.ok);
    wait_for(Duration::from_secs(3), "the new tool", || tool_names(&manager).contains(&"faulty__extra".to_owned()))
        .await;
    let extra = call(&manager, "faulty__extra", json!({})).await;
    assert_eq!((extra.ok, extra.content.as_str()), (true, "extra"));
    manager.shutdown().await;
}

#[tokio::test]
async fn a_server_that_ends_the_list_changed_subscription_gets_a_new_session() {
    let manager = start(servers(vec![("faulty", faulty(&[]))])).await;
    let first = manager.server("faulty").unwrap();
    assert_eq!(first.protocol_version.as_deref(), Some("2026-07-28"), "subscriptions belong to 2026-07-28");
    let ended = call(&manager, "faulty__end_subscriptions", json!({})).await;
    assert!(ended.ok, "{}", ended.content);
    wait_for(Duration::from_secs(5), "a new session", || {
        manager.server("faulty").is_some_and(|server| server.restarts == 1 && server.state == McpServerState::Connected)
    })
    .await;
    assert_ne!(manager.server("faulty").unwrap().pid, first.pid);
    call(&manager, "faulty__add_tool", json!({})).await;
    wait_for(Duration::from_secs(3), "list_changed in the new session", || {
        tool_names(&manager).contains(&"faulty__extra".to_owned())
    })
    .await;
    manager.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let pidfile_arg = pidfile.display().to_string();
    let manager = start(servers(vec![("polite", faulty(&["--grandchild", &pidfile_arg])), ("demo", demo())])).await;
    let stubborn_pidfile = dir.path().join("stubborn-grandchild.pid");
    let stubborn = McpManager::start(
        &servers(vec![(
            "stubborn",
            faulty(&["--ignore-sigterm", "--grandchild", &stubborn_pidfile.display().to_string()]),
        )]),
        &settings(),
        defaults(),
    )
    .await;
    let mut pids: Vec<u32> = [&manager, &stubborn]
        .iter()
        .flat_map(|m| m.servers_view())
        .map(|server| server.pid.expect("running"))
        .collect();
    for file in [&pidfile, &stubborn_pidfile] {
        pids.push(std::fs::read_to_string(file).unwrap().trim().parse().unwrap());
    }
    assert!(pids.iter().all(|pid| process_alive(*pid)), "all running at first");

    manager.shutdown().await;
    let stopped_at = Instant::now();
    stubborn.shutdown().await;
    // The stubborn one ignores stdin closing and SIGTERM: it takes both grace periods.
    assert!(stopped_at.elapsed() < Duration::from_secs(8));
    let left: Vec<_> = pids.iter().filter(|pid| process_alive(**pid)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert_eq!(manager.server("demo").unwrap().state, McpServerState::Stopped);
    let after = call(&manager, "demo__sum", json!({"a": 1, "b": 1})).await;
    assert!(!after.ok);
}

/// Live processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args.iter().flat_map(|arg| arg.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline == wanted))
        .filter(|pid| process_alive(*pid))
        .collect()
}

#[tokio::test]
async fn a_server_that_never_answers_delays_no_other_and_is_killed() {
    let mut settings = settings();
    settings.connection.connection_timeout = 0.5;
    settings.connection.initial_reconnect_delay = 5.0;
    settings.connection.max_reconnect_delay = 5.0;
    // `sleep` never answers `initialize` and ignores stdin closing: only a signal stops it.
    let silent = ["sleep", "987654"];
    let config = servers(vec![("good", demo()), ("silent", server("sleep", &["987654"]))]);
    let started = Instant::now();
    let manager = McpManager::start(&config, &settings, defaults()).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert!(tool_names(&manager).contains(&"good__echo".to_owned()));
    let error = manager.server("silent").unwrap().last_error.unwrap();
    assert!(error.contains("connection_timeout (0.5s)"), "{error}");
    wait_for(Duration::from_secs(5), "the silent server to be stopped", || processes_running(&silent).is_empty()).await;
    manager.shutdown().await;
    assert!(processes_running(&silent).is_empty());
}

#[tokio::test]
async fn a_failed_refresh_is_reported_and_the_last_lists_kept() {
    let manager = start(servers(vec![("faulty", faulty(&[]))])).await;
    let before = tool_names(&manager);
    let broken = call(&manager, "faulty__break_listing", json!({})).await;
    assert!(broken.ok);
    wait_for(Duration::from_secs(3), "the failed refresh to be reported", || {
        manager.server("faulty").unwrap().last_error.is_some()
    })
    .await;
    let error = manager.server("faulty").unwrap().last_error.unwrap();
    assert!(error.contains("refreshing the lists"), "{error}");
    assert!(error.contains("broken on purpose"), "{error}");
    assert_eq!(tool_names(&manager), before);
    manager.shutdown().await;
}

#[tokio::test]
async fn a_server_that_the_discovery_probe_breaks_is_started_with_initialize_alone_from_then_on() {
    let manager = start(servers(vec![("old", faulty(&["--exit-on-discover"]))])).await;
    let connected =
        |manager: &McpManager| manager.server("old").is_some_and(|server| server.state == McpServerState::Connected);
    wait_for(Duration::from_secs(5), "the second attempt, without the probe", || connected(&manager)).await;
    let server = manager.server("old").unwrap();
    assert_eq!(server.failed_attempts, 0);
    assert_eq!(server.protocol_version.as_deref(), Some("2025-11-25"));
    assert_eq!(call(&manager, "old__ok", json!({})).await.content, "ok");

    call(&manager, "old__crash", json!({})).await;
    wait_for(Duration::from_secs(5), "a restart that does not probe again", || {
        manager.server("old").is_some_and(|server| server.restarts == 1) && connected(&manager)
    })
    .await;
    assert_eq!(manager.server("old").unwrap().protocol_version.as_deref(), Some("2025-11-25"));
    manager.shutdown().await;
}
