//! The two checks, run once each: `guestAgentPing` and `exec`.

use std::time::Duration;

use tokio::time::Instant;

use super::report::{CheckResult, ExecDetails, signal_name};
use crate::agent::{AgentError, ExecStatus, GuestAgent};
use crate::config::{CheckName, ExecCommand};

/// What a check found, before it becomes a [`super::ProbeReport`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    pub result: CheckResult,
    pub reason: Option<String>,
    pub exec: Option<ExecDetails>,
}

impl Outcome {
    fn success() -> Self {
        Outcome {
            result: CheckResult::Success,
            reason: None,
            exec: None,
        }
    }

    /// The outcome of a check that could not get an answer from the agent.
    pub(super) fn from_agent_error(error: &AgentError, timeout: Duration) -> Self {
        let secs = timeout.as_secs();
        let (result, reason) = match error {
            AgentError::Timeout {
                agent_silent: false,
            } => (CheckResult::Timeout, format!("timed out after {secs}s")),
            AgentError::Timeout { agent_silent: true } => (
                CheckResult::Timeout,
                format!(
                    "timed out after {secs}s: the agent did not answer (hung, not started yet, or serving another client)"
                ),
            ),
            AgentError::PreviousStillRunning { .. } => (CheckResult::Timeout, error.to_string()),
            AgentError::SpawnFailed(message) => (
                CheckResult::Error,
                format!("exec: cannot start the command: {message}"),
            ),
            other => (CheckResult::Error, other.to_string()),
        };
        Outcome {
            result,
            reason: Some(reason),
            exec: None,
        }
    }
}

/// `guest-ping` within the deadline.
pub(super) async fn ping(agent: &GuestAgent, timeout: Duration, deadline: Instant) -> Outcome {
    match agent.ping(deadline).await {
        Ok(()) => Outcome::success(),
        Err(error) => Outcome::from_agent_error(&error, timeout),
    }
}

/// Runs the configured command in the guest (the agent's guest processes poll it until it
/// exits or the deadline passes; one still running then stays tracked and keeps this
/// check from starting another) and judges its exit.
pub(super) async fn exec(
    agent: &GuestAgent,
    check: &CheckName,
    command: &ExecCommand,
    timeout: Duration,
    deadline: Instant,
) -> Outcome {
    match agent.exec(check, command, deadline).await {
        Ok(status) => exited(status),
        Err(error) => Outcome::from_agent_error(&error, timeout),
    }
}

/// Judges an exited process: only exit code 0 passes; a signal or a missing exit code fails.
fn exited(status: ExecStatus) -> Outcome {
    let (result, reason) = match (status.exit_code, status.signal) {
        (_, Some(signal)) => (
            CheckResult::Failure,
            Some(match signal_name(signal) {
                Some(name) => format!("exec: killed by signal {signal} ({name})"),
                None => format!("exec: killed by signal {signal}"),
            }),
        ),
        (Some(0), None) => (CheckResult::Success, None),
        (Some(code), None) => (
            CheckResult::Failure,
            Some(format!("exec: exit code {code}")),
        ),
        (None, None) => (
            CheckResult::Failure,
            Some("exec: the process exited without an exit code".to_string()),
        ),
    };
    Outcome {
        result,
        reason,
        exec: Some(ExecDetails {
            exit_code: status.exit_code,
            signal: status.signal,
            stdout: status.stdout,
            stderr: status.stderr,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::OutputExcerpt;

    fn status(exit_code: Option<i64>, signal: Option<i64>) -> ExecStatus {
        ExecStatus {
            exited: true,
            exit_code,
            signal,
            stdout: OutputExcerpt::default(),
            stderr: OutputExcerpt::default(),
        }
    }

    #[test]
    fn only_exit_code_zero_passes() {
        assert_eq!(exited(status(Some(0), None)).result, CheckResult::Success);
        let failed = exited(status(Some(3), None));
        assert_eq!(failed.result, CheckResult::Failure);
        assert_eq!(failed.reason.as_deref(), Some("exec: exit code 3"));
    }

    #[test]
    fn a_signal_or_a_missing_exit_code_is_a_failure() {
        let killed = exited(status(None, Some(9)));
        assert_eq!(killed.result, CheckResult::Failure);
        assert_eq!(
            killed.reason.as_deref(),
            Some("exec: killed by signal 9 (SIGKILL)")
        );
        assert_eq!(exited(status(None, None)).result, CheckResult::Failure);
    }

    #[test]
    fn agent_errors_map_to_results() {
        let t = Duration::from_secs(5);
        let timeout = Outcome::from_agent_error(
            &AgentError::Timeout {
                agent_silent: false,
            },
            t,
        );
        assert_eq!(timeout.result, CheckResult::Timeout);
        assert_eq!(timeout.reason.as_deref(), Some("timed out after 5s"));
        let disabled = Outcome::from_agent_error(
            &AgentError::Disabled {
                command: "guest-exec",
            },
            t,
        );
        assert_eq!(disabled.result, CheckResult::Error);
        assert_eq!(
            disabled.reason.as_deref(),
            Some("guest-exec is disabled in the guest agent")
        );
        let unavailable = Outcome::from_agent_error(&AgentError::Unavailable("gone".into()), t);
        assert_eq!(
            unavailable.reason.as_deref(),
            Some("agent unavailable: gone")
        );
        let still =
            Outcome::from_agent_error(&AgentError::PreviousStillRunning { pid: Some(7) }, t);
        assert_eq!(
            still.reason.as_deref(),
            Some("previous command still running (pid 7)")
        );
    }
}
