//! The outcome of one check, as every output (HTTP text, JSON, logs, the CLI) shows it.

use std::time::{Duration, SystemTime};

use crate::agent::OutputExcerpt;
use crate::config::{CheckName, ProbeKind};

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

/// The report of one check, as the probe it answered for took it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckReport {
    pub name: CheckName,
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
    /// Startup only: the check could not reach an agent that is still coming up (the
    /// liveness grace, or a domain not there yet), so the failure is not counted.
    pub waiting: bool,
}

impl CheckReport {
    /// True when the check counts as passed: its result, or in background mode the
    /// thresholds' state.
    pub(crate) fn passed(&self) -> bool {
        match &self.background {
            Some(view) => view.passing,
            None => self.result == CheckResult::Success,
        }
    }

    /// The one-line reason of this check.
    pub(crate) fn reason_line(&self) -> String {
        self.reason
            .clone()
            .unwrap_or_else(|| self.result.as_str().to_string())
    }
}

/// A background check's state, as reports show it.
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

/// Why a probe answered from its state instead of its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// The startup probe has not passed yet: liveness passes, readiness fails.
    Starting,
    /// The startup probe failed `failureThreshold` times: both fail.
    DidNotStart,
    /// An operator paused the probes for maintenance: liveness passes, readiness fails.
    Paused,
}

impl Standing {
    /// The name in JSON reports (`state`) and verbose text.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Standing::Starting => "starting",
            Standing::DidNotStart => "didNotStart",
            Standing::Paused => "paused",
        }
    }
}

/// A probe's answer from its state: the state, the verdict, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub standing: Standing,
    pub passed: bool,
    pub reason: String,
}

/// The report of one probe: the checks it ran (every check, or those a request selected),
/// all of which must pass, or the state that answered instead of them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeReport {
    pub probe: ProbeKind,
    /// In the probe's order. Empty when `held` answered, or when a request excluded every
    /// check.
    pub checks: Vec<CheckReport>,
    /// Set when the probe's state answered instead of its checks (starting, paused); for
    /// `/started`, the startup state beside the latest checks.
    pub held: Option<Held>,
    /// How long the answer took (the checks ran together).
    pub duration: Duration,
    pub checked_at: SystemTime,
}

impl ProbeReport {
    /// True when kubelet should count the probe as passed.
    pub(crate) fn passed(&self) -> bool {
        match &self.held {
            Some(held) => held.passed,
            None => self.checks.iter().all(CheckReport::passed),
        }
    }

    /// The outcome in one word: the held state's, or the first failing check's.
    pub(crate) fn result(&self) -> CheckResult {
        if let Some(held) = &self.held {
            return if held.passed {
                CheckResult::Success
            } else {
                CheckResult::Failure
            };
        }
        self.checks
            .iter()
            .find(|check| !check.passed())
            .map_or(CheckResult::Success, |check| match check.result {
                // Failing by its thresholds after a passing latest result.
                CheckResult::Success => CheckResult::Failure,
                result => result,
            })
    }

    /// Why the probe failed, or a note when it passed: the held reason, or the failing
    /// checks' reasons (the passing checks' notes when none fail). A named check's reason
    /// starts with its name; the one check of a probe in KubeVirt's shape needs none.
    pub(crate) fn reason(&self) -> Option<String> {
        if let Some(held) = &self.held {
            return Some(held.reason.clone());
        }
        let named = |check: &CheckReport, reason: String| {
            if check.name == CheckName::of_probe(self.probe) {
                reason
            } else {
                format!("{}: {reason}", check.name)
            }
        };
        let failing: Vec<String> = self
            .checks
            .iter()
            .filter(|check| !check.passed())
            .map(|check| named(check, check.reason_line()))
            .collect();
        if !failing.is_empty() {
            return Some(failing.join("; "));
        }
        let notes: Vec<String> = self
            .checks
            .iter()
            .filter_map(|check| Some(named(check, check.reason.clone()?)))
            .collect();
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    /// The one-line reason shown in a 503 body.
    pub(crate) fn reason_line(&self) -> String {
        self.reason()
            .unwrap_or_else(|| self.result().as_str().to_string())
    }

    /// The check the answer rests on, when there is exactly one: the report then also
    /// carries its details at the top level, as for a probe in KubeVirt's shape.
    pub(crate) fn only_check(&self) -> Option<&CheckReport> {
        match (&self.held, self.checks.as_slice()) {
            (None, [check]) => Some(check),
            _ => None,
        }
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
