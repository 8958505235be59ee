//! libvirt's errors as the gateway's [`AgentError`]s. Pure, so that the rules are tested
//! without a daemon; the messages quoted are libvirt 9.0's (docs/libvirt.md, "Errors").

use crate::agent::AgentError;
use crate::agent::protocol::ErrorReply;

/// The libvirt error codes (`virErrorNumber`) the backend tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `VIR_ERR_NO_DOMAIN`: no domain of that name or UUID.
    NoDomain,
    /// `VIR_ERR_OPERATION_INVALID`: "domain is not running" (paused, shut off, ...).
    OperationInvalid,
    /// `VIR_ERR_AGENT_UNRESPONSIVE`: the agent is not connected, or libvirt waited for it
    /// in vain (libvirt 9.0 says so, not `VIR_ERR_AGENT_COMMAND_TIMEOUT`, when a command
    /// or its resync times out).
    AgentUnresponsive,
    /// `VIR_ERR_AGENT_COMMAND_TIMEOUT`: no reply within the timeout libvirt was given.
    AgentCommandTimeout,
    /// `VIR_ERR_AGENT_UNSYNCED`: libvirt's guest-sync did not get the agent in step.
    AgentUnsynced,
    /// `VIR_ERR_OPERATION_TIMEOUT`: libvirt waited for its agent job (another client's
    /// command, virt-launcher's own poller) and gave up.
    OperationTimeout,
    /// `VIR_ERR_INTERNAL_ERROR`: among others, the agent's own error reply.
    InternalError,
    /// The connection to the daemon failed (`VIR_ERR_SYSTEM_ERROR`, `VIR_ERR_RPC`,
    /// `VIR_ERR_NO_CONNECT`, `VIR_ERR_INVALID_CONN`, an `internal error: client socket is
    /// closed`).
    Connection,
    /// Anything else.
    Other,
}

/// How libvirt reports the agent's own `{"error": ...}` reply to a command.
const AGENT_ERROR: &str = "unable to execute QEMU agent command '";

/// The error for `command`'s failure `fault`, whose text is `message`.
pub(crate) fn classify(fault: Fault, message: &str, command: &'static str) -> AgentError {
    match fault {
        Fault::NoDomain => AgentError::NoDomain(message.to_string()),
        Fault::OperationInvalid => AgentError::DomainNotRunning(message.to_string()),
        Fault::AgentCommandTimeout => AgentError::Timeout { agent_silent: true },
        Fault::OperationTimeout => AgentError::Unavailable(format!(
            "libvirt's agent job is held by another command: {message}"
        )),
        Fault::InternalError => match agent_reply(message) {
            Some(desc) => AgentError::from_reply(command, reply_of(desc)),
            None if connection_lost(message) => {
                AgentError::Unavailable(format!("libvirt connection lost: {message}"))
            }
            None => AgentError::Unavailable(format!("libvirt: {message}")),
        },
        // Not connected: refused unsent. Otherwise ("Guest agent not available for now")
        // libvirt waited for the agent in vain: for the command itself (the first after the
        // agent stopped answering) or for its guest-sync (every later one), alike in text.
        Fault::AgentUnresponsive if message.contains("not connected") => {
            AgentError::Unavailable(message.to_string())
        }
        Fault::AgentUnresponsive => AgentError::Timeout { agent_silent: true },
        Fault::AgentUnsynced => AgentError::Unavailable(message.to_string()),
        Fault::Connection => AgentError::Unavailable(format!("libvirt connection lost: {message}")),
        Fault::Other => AgentError::Unavailable(format!("libvirt: {message}")),
    }
}

/// Whether `message` (of an internal error) says the daemon's socket went away.
pub(crate) fn connection_lost(message: &str) -> bool {
    message.contains("client socket is closed") || message.contains("End of file while reading")
}

/// The agent's `desc` in libvirt's wording of its error reply.
fn agent_reply(message: &str) -> Option<&str> {
    let start = message.find(AGENT_ERROR)? + AGENT_ERROR.len();
    let rest = &message[start..];
    let (_command, desc) = rest.split_once("': ")?;
    Some(desc)
}

/// libvirt keeps the agent's `desc` but drops its `class`; the class is inferred from the
/// desc the way qemu-ga words its errors (docs/qemu-guest-agent.md).
fn reply_of(desc: &str) -> ErrorReply {
    let class = if desc.contains("has been disabled") || desc.contains("has not been found") {
        "CommandNotFound"
    } else {
        "GenericError"
    };
    ErrorReply {
        class: class.into(),
        desc: desc.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_or_missing_domain_is_said_at_once() {
        assert_eq!(
            classify(
                Fault::OperationInvalid,
                "Requested operation is not valid: domain is not running",
                "guest-ping"
            ),
            AgentError::DomainNotRunning(
                "Requested operation is not valid: domain is not running".into()
            )
        );
        assert!(matches!(
            classify(Fault::NoDomain, "Domain not found", "guest-ping"),
            AgentError::NoDomain(_)
        ));
    }

    #[test]
    fn the_agents_own_error_reply_keeps_its_meaning() {
        let spawn = classify(
            Fault::InternalError,
            "internal error: unable to execute QEMU agent command 'guest-exec': Guest agent command failed, error was 'Failed to execute child process “/nope” (No such file or directory)'",
            "guest-exec",
        );
        assert_eq!(
            spawn,
            AgentError::SpawnFailed(
                "Failed to execute child process “/nope” (No such file or directory)".into()
            )
        );
        let disabled = classify(
            Fault::InternalError,
            "internal error: unable to execute QEMU agent command 'guest-exec': Command guest-exec has been disabled",
            "guest-exec",
        );
        assert_eq!(
            disabled,
            AgentError::Disabled {
                command: "guest-exec"
            }
        );
    }

    #[test]
    fn a_lost_daemon_and_a_silent_agent_are_unavailable_and_timeout() {
        let lost = classify(
            Fault::InternalError,
            "internal error: client socket is closed",
            "guest-ping",
        );
        assert!(lost.to_string().contains("connection lost"), "{lost}");
        assert_eq!(
            classify(Fault::AgentCommandTimeout, "timed out", "guest-ping"),
            AgentError::Timeout { agent_silent: true }
        );
        assert_eq!(
            classify(
                Fault::AgentUnresponsive,
                "Guest agent is not responding: Guest agent not available for now",
                "guest-exec"
            ),
            AgentError::Timeout { agent_silent: true }
        );
        assert_eq!(
            classify(
                Fault::AgentUnresponsive,
                "Guest agent is not responding: QEMU guest agent is not connected",
                "guest-ping"
            ),
            AgentError::Unavailable(
                "Guest agent is not responding: QEMU guest agent is not connected".into()
            )
        );
    }
}
