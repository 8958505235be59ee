//! The VM's state as a backend that knows it (libvirt) reports it, in the classes the probes
//! act on (`crate::probe::domain_rules`; the table is in docs/libvirt.md). A stream to the
//! agent knows no state and reports none.

use std::fmt;

/// Why a domain is paused: libvirt's `virDomainPausedReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    User,
    Migration,
    Save,
    Dump,
    IoError,
    Watchdog,
    FromSnapshot,
    ShuttingDown,
    Snapshot,
    Crashed,
    StartingUp,
    PostCopy,
    PostCopyFailed,
    ApiError,
    Unknown,
}

impl PauseReason {
    /// libvirt's name for the reason, as `virsh domstate --reason` prints it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PauseReason::User => "user",
            PauseReason::Migration => "migrating",
            PauseReason::Save => "saving",
            PauseReason::Dump => "dumping",
            PauseReason::IoError => "I/O error",
            PauseReason::Watchdog => "watchdog",
            PauseReason::FromSnapshot => "from snapshot",
            PauseReason::ShuttingDown => "shutting down",
            PauseReason::Snapshot => "creating snapshot",
            PauseReason::Crashed => "crashed",
            PauseReason::StartingUp => "starting up",
            PauseReason::PostCopy => "post-copy",
            PauseReason::PostCopyFailed => "post-copy failed",
            PauseReason::ApiError => "api error",
            PauseReason::Unknown => "unknown",
        }
    }
}

/// The domain's state, as last learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DomainState {
    /// Running (or blocked on a resource, which is running too).
    Running,
    /// Running, with an outgoing or incoming migration job: the migration source.
    Migrating,
    Paused(PauseReason),
    /// Shutting down (the guest was asked to power off).
    ShuttingDown,
    /// Shut off; libvirt's reason (`destroyed`, `shutdown`, `crashed`, ...).
    ShutOff(String),
    /// Crashed; libvirt's reason.
    Crashed(String),
    /// The guest suspended itself (ACPI S3/S4).
    PmSuspended,
    /// No domain of that name: a migration target before the guest arrives, or a VM gone.
    NoDomain,
    /// libvirt could not say: the domain is ending as it is asked.
    Unreadable(String),
}

impl DomainState {
    /// Every [`DomainState::label`], for the metric's closed label set.
    pub(crate) const LABELS: [&'static str; 9] = [
        "running",
        "migrating",
        "paused",
        "shutting_down",
        "shut_off",
        "crashed",
        "pmsuspended",
        "no_domain",
        "unknown",
    ];

    /// The metric label: the state without its reason.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Migrating => "migrating",
            DomainState::Paused(_) => "paused",
            DomainState::ShuttingDown => "shutting_down",
            DomainState::ShutOff(_) => "shut_off",
            DomainState::Crashed(_) => "crashed",
            DomainState::PmSuspended => "pmsuspended",
            DomainState::NoDomain => "no_domain",
            DomainState::Unreadable(_) => "unknown",
        }
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainState::Running => f.write_str("domain running"),
            DomainState::Migrating => f.write_str("domain migrating"),
            DomainState::Paused(reason) => write!(f, "domain paused ({})", reason.as_str()),
            DomainState::ShuttingDown => f.write_str("domain shutting down"),
            DomainState::ShutOff(reason) => write!(f, "domain shut off ({reason})"),
            DomainState::Crashed(reason) => write!(f, "domain crashed ({reason})"),
            DomainState::PmSuspended => f.write_str("domain suspended by the guest"),
            DomainState::NoDomain => f.write_str("no such domain"),
            DomainState::Unreadable(why) => write!(f, "domain state unreadable ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_in_the_closed_set() {
        let states = [
            DomainState::Running,
            DomainState::Migrating,
            DomainState::Paused(PauseReason::User),
            DomainState::ShuttingDown,
            DomainState::ShutOff("destroyed".into()),
            DomainState::Crashed("panicked".into()),
            DomainState::PmSuspended,
            DomainState::NoDomain,
            DomainState::Unreadable("x".into()),
        ];
        let labels: Vec<_> = states.iter().map(DomainState::label).collect();
        assert_eq!(labels, DomainState::LABELS);
        assert_eq!(
            DomainState::Paused(PauseReason::IoError).to_string(),
            "domain paused (I/O error)"
        );
    }
}
