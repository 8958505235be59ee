//! The checks the gateway runs for kubelet: `exec` and `guestAgentPing` ([`handlers`]), one
//! [`ProbeRunner`] per configured probe (single flight, liveness grace), the [`ProbeSet`] in
//! force and the policy for replacing it ([`InForce`]), and the [`ProbeReport`] every
//! output is made from. Nothing here speaks HTTP.

mod background;
mod handlers;
mod in_force;
mod report;
mod runner;
#[cfg(test)]
mod scripted_agent;

pub use background::{BackgroundProbe, STALE_MARGIN, ThresholdState};
pub use in_force::{InForce, Kept, ProbeSet, SwapOutcome};
pub use report::{BackgroundView, CheckResult, ExecDetails, ProbeReport};
pub use runner::{LivenessGrace, ProbeRunner};
