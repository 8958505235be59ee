//! The checks the gateway runs for kubelet: `exec` and `guestAgentPing` ([`checks`]), one
//! [`Checker`] per configured probe (single flight, liveness grace), and the
//! [`ProbeReport`] every output is made from. Nothing here speaks HTTP.

mod background;
mod checker;
mod checks;
mod in_force;
mod report;

use std::sync::Arc;

pub use background::{BackgroundProbe, STALE_MARGIN, ThresholdState};
pub use checker::{Checker, LivenessGrace};
pub use in_force::{CheckSet, ChecksInForce};
pub use report::{BackgroundView, CheckResult, ExecDetails, ProbeReport};

use crate::config::ProbeKind;

/// The configured probes; either may be absent.
#[derive(Clone, Default)]
pub struct Probes {
    pub readiness: Option<Arc<Checker>>,
    pub liveness: Option<Arc<Checker>>,
}

impl Probes {
    pub fn get(&self, kind: ProbeKind) -> Option<&Arc<Checker>> {
        match kind {
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
        }
    }
}
