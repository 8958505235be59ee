//! What the VM and libvirt tests need from this host: the programs they drive (and the
//! policy when one is missing) and whether a process they started is still there.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// True if `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True if nothing is `missing`. Otherwise the test skips, saying so, except in CI
/// (`CI=true`), where a missing peer is a failure: scripts/test.sh installs them all.
pub fn present_or_skip(test: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join("; ");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "missing in CI, where scripts/test.sh sets everything up: {missing}"
    );
    eprintln!("SKIPPED {test}: {missing}");
    false
}

/// True while `pid` runs (a zombie left for an init that does not reap counts as gone).
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Ends `pid` with SIGKILL and waits until it is gone (up to 10 s); true if it is. For
/// processes that are not our children (QEMU daemonized), which `Child::wait` cannot reap.
pub fn end_process(pid: i32) -> bool {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
