//! What a probe answers when its check could not get an answer from the agent and the
//! backend knows the domain's state (libvirt). KubeVirt's rule for guestAgentPing, extended
//! to every check: a VM that is migrating, paused for a benign reason or ending is not
//! restarted because its agent is away; a crashed one, or one paused on an I/O error or a
//! failed post-copy migration, fails both probes at once. The table, beside KubeVirt's, with
//! the reason for each difference, is in docs/libvirt.md.
//!
//! Only checks that did not reach the agent are judged here: an exec that ran and exited
//! non-zero reached a running guest, and its result stands.

use crate::agent::{DomainState, PauseReason};
use crate::config::ProbeKind;

/// What the state makes of a check that could not reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The probe passes: the reason names the state.
    Pass(String),
    /// The probe fails with the state as the reason.
    Fail(String),
    /// The state says nothing more: the check's own outcome stands (a running domain whose
    /// agent does not answer).
    AsChecked,
}

/// How a state is taken, whichever probe asks.
enum Rule {
    /// Both probes pass: the source of a migration, where the guest runs and serves until
    /// the switch-over.
    BothPass,
    /// Liveness passes (restarting would not help, or would lose the VM's state);
    /// readiness fails (the guest serves nothing meanwhile).
    LivenessOnly,
    /// Both fail: the VM is broken.
    BothFail,
    AsChecked,
}

fn rule(state: &DomainState) -> Rule {
    match state {
        DomainState::Running => Rule::AsChecked,
        DomainState::Migrating => Rule::BothPass,
        // Paused for a migration: a target whose guest has not arrived, or a source at the
        // switch-over or in post-copy, whose guest runs on the target. Not serving here.
        DomainState::Paused(
            PauseReason::Migration
            | PauseReason::PostCopy
            | PauseReason::User
            | PauseReason::Save
            | PauseReason::Dump
            | PauseReason::FromSnapshot
            | PauseReason::ShuttingDown
            | PauseReason::Snapshot
            | PauseReason::StartingUp,
        )
        | DomainState::ShuttingDown
        | DomainState::ShutOff(_)
        | DomainState::PmSuspended
        | DomainState::NoDomain
        | DomainState::Unreadable(_) => Rule::LivenessOnly,
        DomainState::Paused(
            PauseReason::IoError
            | PauseReason::PostCopyFailed
            | PauseReason::Crashed
            | PauseReason::Watchdog
            | PauseReason::ApiError
            | PauseReason::Unknown,
        )
        | DomainState::Crashed(_) => Rule::BothFail,
    }
}

/// The verdict for `probe` in `state`, for a check that did not reach the agent. The
/// startup probe has its own reading ([`judge_startup`]); here it is taken as liveness.
pub(super) fn judge(probe: ProbeKind, state: &DomainState) -> Verdict {
    let (pass, fail) = (
        || Verdict::Pass(state.to_string()),
        || Verdict::Fail(state.to_string()),
    );
    match (rule(state), probe) {
        (Rule::AsChecked, _) => Verdict::AsChecked,
        (Rule::BothPass, _) | (Rule::LivenessOnly, ProbeKind::Liveness | ProbeKind::Startup) => {
            pass()
        }
        (Rule::LivenessOnly, ProbeKind::Readiness) | (Rule::BothFail, _) => fail(),
    }
}

/// What the state makes of a startup check that could not reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartupVerdict {
    /// The guest started already: it is migrating, here or to here.
    Started(String),
    /// Not counted: the domain is not there yet, or is held (paused, ending) for a reason
    /// that says nothing about the guest starting.
    Waiting(String),
    /// Counted: the VM is broken.
    Fail(String),
    /// The domain runs: the check's own outcome counts.
    AsChecked,
}

/// The startup probe's reading of `state`. A migration target's gateway starts while its
/// guest is still on the source (no domain, then a domain paused while it comes in): the
/// startup probe must neither fail it then nor wait for it to pass here.
pub(super) fn judge_startup(state: &DomainState) -> StartupVerdict {
    let why = state.to_string();
    match state {
        DomainState::Running => StartupVerdict::AsChecked,
        DomainState::Migrating
        | DomainState::Paused(PauseReason::Migration | PauseReason::PostCopy) => {
            StartupVerdict::Started(why)
        }
        _ => match rule(state) {
            Rule::BothFail => StartupVerdict::Fail(why),
            _ => StartupVerdict::Waiting(why),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: ProbeKind = ProbeKind::Liveness;
    const READY: ProbeKind = ProbeKind::Readiness;

    fn paused(reason: PauseReason) -> DomainState {
        DomainState::Paused(reason)
    }

    #[test]
    fn a_migration_source_still_running_passes_both_probes() {
        let state = DomainState::Migrating;
        assert_eq!(judge(LIVE, &state), Verdict::Pass(state.to_string()));
        assert_eq!(judge(READY, &state), Verdict::Pass(state.to_string()));
    }

    #[test]
    fn a_benign_pause_or_an_ending_domain_keeps_liveness_and_fails_readiness() {
        for state in [
            paused(PauseReason::Migration),
            paused(PauseReason::PostCopy),
            paused(PauseReason::User),
            paused(PauseReason::Snapshot),
            paused(PauseReason::StartingUp),
            DomainState::ShuttingDown,
            DomainState::ShutOff("destroyed".into()),
            DomainState::NoDomain,
            DomainState::Unreadable("gone".into()),
        ] {
            assert_eq!(judge(LIVE, &state), Verdict::Pass(state.to_string()));
            assert_eq!(judge(READY, &state), Verdict::Fail(state.to_string()));
        }
    }

    #[test]
    fn a_broken_domain_fails_both_probes() {
        for state in [
            paused(PauseReason::IoError),
            paused(PauseReason::PostCopyFailed),
            DomainState::Crashed("panicked".into()),
        ] {
            assert_eq!(judge(LIVE, &state), Verdict::Fail(state.to_string()));
            assert_eq!(judge(READY, &state), Verdict::Fail(state.to_string()));
        }
    }

    #[test]
    fn startup_counts_a_running_domain_passes_a_migrating_one_and_waits_for_the_rest() {
        assert_eq!(
            judge_startup(&DomainState::Running),
            StartupVerdict::AsChecked
        );
        for state in [
            DomainState::Migrating,
            paused(PauseReason::Migration),
            paused(PauseReason::PostCopy),
        ] {
            assert_eq!(
                judge_startup(&state),
                StartupVerdict::Started(state.to_string())
            );
        }
        for state in [
            DomainState::NoDomain,
            paused(PauseReason::StartingUp),
            paused(PauseReason::User),
            DomainState::ShutOff("destroyed".into()),
        ] {
            assert_eq!(
                judge_startup(&state),
                StartupVerdict::Waiting(state.to_string())
            );
        }
        let crashed = DomainState::Crashed("panicked".into());
        assert_eq!(
            judge_startup(&crashed),
            StartupVerdict::Fail(crashed.to_string())
        );
    }

    #[test]
    fn a_running_domain_leaves_the_checks_outcome() {
        assert_eq!(judge(LIVE, &DomainState::Running), Verdict::AsChecked);
    }
}
