//! When the gateway's own loops may run checks: not while an operator has paused the probes
//! for maintenance ([`Pause`]), and, for readiness and liveness, not before the startup
//! probe has passed (kubelet does not run them before either). A check in the guest while
//! it installs updates would only add a process the agent cannot kill.

use tokio::sync::watch;

/// An operator's pause of the probes, as the pod's annotations give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pause {
    /// The annotation that paused them.
    pub annotation: &'static str,
    /// What the operator wrote as the reason, if anything.
    pub note: Option<String>,
}

impl Pause {
    /// The reason the probes answer with: `paused for maintenance (NOTE)`.
    pub(crate) fn reason(&self) -> String {
        match &self.note {
            Some(note) => format!("paused for maintenance ({note})"),
            None => format!("paused for maintenance ({})", self.annotation),
        }
    }
}

/// The pause in force, or none; the one watch every reader follows.
pub(crate) type PauseWatch = watch::Receiver<Option<Pause>>;

/// A pause watch that never pauses, for a gateway with nothing to pause it and for tests.
pub(crate) fn never_paused() -> PauseWatch {
    watch::Sender::new(None).subscribe()
}

/// What a loop waits for before each check.
#[derive(Clone)]
pub(crate) struct Gate {
    pause: PauseWatch,
    /// Readiness and liveness: true once the startup probe has passed (or there is none).
    started: Option<watch::Receiver<bool>>,
}

impl Gate {
    /// The gate of the startup probe's loop: the pause only.
    pub(crate) fn pause_only(pause: PauseWatch) -> Gate {
        Gate {
            pause,
            started: None,
        }
    }

    /// The gate of a readiness or liveness loop: the pause and the start.
    pub(crate) fn after_start(pause: PauseWatch, started: watch::Receiver<bool>) -> Gate {
        Gate {
            pause,
            started: Some(started),
        }
    }

    /// Waits until checks may run; true if it had to wait. A watch whose sender is gone
    /// counts as open: its owner (the set of probes) is gone, and the loop with it soon.
    pub(crate) async fn wait_open(&mut self) -> bool {
        let mut waited = false;
        loop {
            if let Some(started) = &mut self.started
                && !*started.borrow_and_update()
            {
                waited = true;
                if started.wait_for(|started| *started).await.is_err() {
                    return waited;
                }
                continue;
            }
            if self.pause.borrow_and_update().is_some() {
                waited = true;
                if self.pause.wait_for(Option::is_none).await.is_err() {
                    return waited;
                }
                continue;
            }
            return waited;
        }
    }
}
