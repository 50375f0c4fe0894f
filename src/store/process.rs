//! Server processes as owners of the requests they claim, for the JSONL store: its processes
//! share one host, so whether a claim's owner still runs is a question for `/proc`, not a
//! lease.
//!
//! An owner is `<boot id>/<pid>/<start time>`: the pid alone could be reused by a later
//! process, and the start time (clock ticks since boot) alone repeats across boots.

use std::sync::OnceLock;

/// This process, as it signs the claims it stores.
pub fn this_process() -> &'static str {
    static THIS: OnceLock<String> = OnceLock::new();
    THIS.get_or_init(|| {
        let pid = std::process::id();
        format!("{}/{pid}/{}", boot_id(), start_time(pid).unwrap_or_default())
    })
}

/// Whether the process `owner` names has stopped. An owner that does not read as one (a line
/// of another version), or a process `/proc` does not let this one see, is never taken for
/// gone: a live request must not be finished.
pub fn is_gone(owner: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some(boot), Some(pid), Some(started)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else { return false };
    if boot != boot_id() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_start_time(&stat) != Some(started),
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned()
}

/// Field 22 of `/proc/<pid>/stat`; `None` when no such process runs.
fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_stopped_one_is_gone() {
        assert!(!is_gone(this_process()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn `true`");
        let owner = format!("{}/{}/{}", boot_id(), child.id(), start_time(child.id()).unwrap_or_default());
        child.wait().expect("wait for `true`");
        assert!(is_gone(&owner));
        assert!(is_gone(&format!("another-boot/{}", this_process().split_once('/').unwrap().1)));
        assert!(!is_gone("not an owner"), "an unreadable owner is never taken for gone");
    }
}
