//! The checks the gateway runs for kubelet: `exec` and `guestAgentPing` ([`handlers`]), one
//! [`ProbeRunner`] per configured probe (single flight, liveness grace), the [`ProbeSet`] in
//! force and the policy for replacing it ([`InForce`]), and the [`ProbeReport`] every
//! output is made from. Nothing here speaks HTTP.

mod background;
mod domain_rules;
mod handlers;
mod in_force;
mod report;
mod runner;
#[cfg(test)]
mod scripted_agent;

pub(crate) use background::BackgroundProbe;
pub(crate) use in_force::{InForce, SwapOutcome, spawn_agent};
#[cfg(test)]
pub(crate) use report::ExecDetails;
pub(crate) use report::{CheckResult, ProbeReport};
pub(crate) use runner::{LivenessGrace, ProbeRunner};
