//! What can go wrong when asking the agent something, whatever the backend: a stream to
//! the agent ([`super::link`]) or, later, libvirt's agent command.

use super::protocol::ErrorReply;

/// Why a command did not give a result. Each variant is a distinct situation an operator
/// acts on differently, so reasons in reports are built from these, not from strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AgentError {
    /// No connection: the socket is missing, refuses, or the connection was lost.
    #[error("agent unavailable: {0}")]
    Unavailable(String),
    /// No reply in time. `agent_silent` is true when the gateway could not even get the
    /// agent to answer a resync (hung, not started yet, or serving another client).
    #[error("no reply in time")]
    Timeout { agent_silent: bool },
    /// The agent runs with this command disabled (`qemu-ga -b`).
    #[error("{command} is disabled in the guest agent")]
    Disabled { command: &'static str },
    /// The agent does not know this command (too old or not a qemu-ga).
    #[error("the guest agent has no command {command}")]
    CommandNotFound { command: &'static str },
    /// `guest-exec` could not start the program in the guest.
    #[error("{0}")]
    SpawnFailed(String),
    /// A guest process started earlier for the same probe has not exited yet; starting
    /// another would pile processes up in the guest (there is no way to kill one).
    #[error("previous command still running ({})", match .pid { Some(pid) => format!("pid {pid}"), None => "pid not known yet: its guest-exec reply is still due".to_string() })]
    PreviousStillRunning { pid: Option<i64> },
    /// The agent refused the command for another reason.
    #[error("{command} failed: {class}: {desc}")]
    Rejected {
        command: &'static str,
        class: String,
        desc: String,
    },
    /// The peer said something that is not a valid answer.
    #[error("protocol fault: {0}")]
    Protocol(String),
    /// The backend knows the VM is not running (paused, shutting down, crashed) and refused
    /// the command without sending it: libvirt does so at once, where a stream to the agent
    /// could only time out.
    #[error("the VM is not running: {0}")]
    #[allow(
        dead_code,
        reason = "raised by the libvirt backend (next), which knows the domain's state"
    )]
    DomainNotRunning(String),
    /// The backend has no such VM: not defined yet (a migration target before the guest
    /// arrives) or gone.
    #[error("no such VM: {0}")]
    #[allow(dead_code, reason = "raised by the libvirt backend (next)")]
    NoDomain(String),
}

impl AgentError {
    /// Classifies an `{"error": ...}` reply to `command`.
    pub(crate) fn from_reply(command: &'static str, reply: ErrorReply) -> Self {
        const SPAWN_FAILED: &str = "Guest agent command failed, error was '";
        match reply.class.as_str() {
            "CommandNotFound" if reply.desc.contains("has been disabled") => {
                AgentError::Disabled { command }
            }
            "CommandNotFound" => AgentError::CommandNotFound { command },
            _ if command == "guest-exec" && reply.desc.starts_with(SPAWN_FAILED) => {
                let inner = reply.desc[SPAWN_FAILED.len()..].trim_end_matches('\'');
                AgentError::SpawnFailed(inner.to_string())
            }
            _ => AgentError::Rejected {
                command,
                class: reply.class,
                desc: reply.desc,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(class: &str, desc: &str) -> ErrorReply {
        ErrorReply {
            class: class.into(),
            desc: desc.into(),
        }
    }

    #[test]
    fn a_disabled_command_is_told_apart_from_an_unknown_one() {
        assert_eq!(
            AgentError::from_reply(
                "guest-exec",
                reply("CommandNotFound", "Command guest-exec has been disabled")
            ),
            AgentError::Disabled {
                command: "guest-exec"
            }
        );
        assert_eq!(
            AgentError::from_reply(
                "guest-exec",
                reply(
                    "CommandNotFound",
                    "The command guest-exec has not been found"
                )
            ),
            AgentError::CommandNotFound {
                command: "guest-exec"
            }
        );
    }

    #[test]
    fn a_spawn_failure_keeps_the_agents_explanation() {
        let error = AgentError::from_reply(
            "guest-exec",
            reply(
                "GenericError",
                "Guest agent command failed, error was 'Failed to execute child process “/x” (No such file or directory)'",
            ),
        );
        assert_eq!(
            error.to_string(),
            "Failed to execute child process “/x” (No such file or directory)"
        );
    }
}
