//! The checks the gateway runs for kubelet: `exec` and `guestAgentPing` ([`checks`]), one
//! [`Checker`] per configured probe (single flight, liveness grace), the [`ProbeSet`] in
//! force and the policy for replacing it ([`InForce`]), and the [`ProbeReport`] every
//! output is made from. Nothing here speaks HTTP.

mod background;
mod checker;
mod checks;
mod in_force;
mod report;
#[cfg(test)]
mod scripted_agent;

pub use background::{BackgroundProbe, STALE_MARGIN, ThresholdState};
pub use checker::{Checker, LivenessGrace};
pub use in_force::{InForce, Kept, ProbeSet, SwapOutcome};
pub use report::{BackgroundView, CheckResult, ExecDetails, ProbeReport};
