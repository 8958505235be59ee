//! The outcome of one check, as every output (HTTP text, JSON, logs, the CLI) shows it.

use std::time::{Duration, SystemTime};

use crate::agent::OutputExcerpt;
use crate::config::ProbeKind;

/// How a check ended. `Failure`: the check ran and failed; `Timeout`: it did not finish
/// in time; `Error`: the agent could not run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CheckResult {
    Success,
    Failure,
    Timeout,
    Error,
}

impl CheckResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckResult::Success => "success",
            CheckResult::Failure => "failure",
            CheckResult::Timeout => "timeout",
            CheckResult::Error => "error",
        }
    }
}

/// What an exec check learnt about its guest process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecDetails {
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub stdout: OutputExcerpt,
    pub stderr: OutputExcerpt,
}

/// The report of one check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeReport {
    pub probe: ProbeKind,
    /// `exec` or `guestAgentPing`.
    pub handler: &'static str,
    pub result: CheckResult,
    /// Why it failed; on success, a note (e.g. the liveness grace), usually none.
    pub reason: Option<String>,
    pub duration: Duration,
    pub checked_at: SystemTime,
    /// Present for exec checks.
    pub exec: Option<ExecDetails>,
    /// Background mode: the state the thresholds give, which decides the answer.
    pub background: Option<BackgroundView>,
    /// On-demand mode with `minIntervalSeconds`: this result was reused, at this age.
    pub reused_age: Option<Duration>,
}

/// A background probe's state, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackgroundView {
    /// The verdict: the thresholds' state, and not stale.
    pub passing: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// When the latest check started; none before the first.
    pub last_checked_at: Option<SystemTime>,
    /// When the state last flipped; none while it is the initial one.
    pub last_transition_at: Option<SystemTime>,
}

impl ProbeReport {
    /// True when kubelet should count the probe as passed: the check's result, or in
    /// background mode the thresholds' state.
    pub(crate) fn passed(&self) -> bool {
        match &self.background {
            Some(view) => view.passing,
            None => self.result == CheckResult::Success,
        }
    }

    /// The one-line reason shown in a 503 body.
    pub(crate) fn reason_line(&self) -> String {
        self.reason
            .clone()
            .unwrap_or_else(|| self.result.as_str().to_string())
    }
}

/// The conventional name of a Linux signal number, for reasons people read.
pub(super) fn signal_name(signal: i64) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_have_their_linux_names() {
        assert_eq!(signal_name(9), Some("SIGKILL"));
        assert_eq!(signal_name(15), Some("SIGTERM"));
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(64), None);
    }
}
