//! Test peers: a real qemu-ga per test, the gateway binary, a scripted fake agent.

pub mod fake_agent;
pub mod gateway;
pub mod hook;
pub mod hybrid_vsock;
pub mod qga;
pub mod volume;
pub mod webhook;

use std::time::Duration;

/// Waits for `condition` to hold, checking every few milliseconds, up to `limit`.
/// Panics with `what` if it never does. Used to await conditions, never as a delay.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes on this machine (which plays the guest for a local qemu-ga) whose command
/// line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

/// A marker unique to one test run, for counting its guest processes.
pub fn unique_marker(name: &str) -> String {
    format!("vpg-{name}-{}-{}", std::process::id(), fastrand_u64())
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
