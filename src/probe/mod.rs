//! The checks the gateway runs for kubelet: `exec` and `guestAgentPing` ([`handlers`]), one
//! [`CheckRunner`] per check (single flight, result reuse), each probe's checks as it takes
//! them ([`ProbeCheck`]: the domain's state, the liveness grace), the startup probe
//! ([`startup`]), the pause and start that hold the probes ([`gate`]), the [`ProbeSet`]
//! in force and the policy for replacing it ([`InForce`]), and the [`ProbeReport`] every
//! output is made from. Nothing here speaks HTTP.

mod background;
mod domain_rules;
pub(crate) mod gate;
mod handlers;
mod in_force;
mod judge;
mod report;
mod runner;
#[cfg(test)]
mod scripted_agent;
mod startup;

pub(crate) use gate::{Pause, PauseWatch, never_paused};
pub(crate) use in_force::{InForce, SwapOutcome, run_once, spawn_agent};
#[cfg(test)]
pub(crate) use report::ExecDetails;
pub(crate) use report::{CheckReport, CheckResult, ProbeReport};
#[cfg(test)]
pub(crate) use report::{Held, Standing};
