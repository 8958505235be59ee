//! The guest agent, as the probes reach it. From the bottom up:
//! - [`address`]: where the agent is (`agent` setting), parsed once.
//! - [`transport`]: opening a byte stream to it (unix socket, vsock, hybrid vsock).
//! - [`framing`]: the stream cut into reply lines, in bounded memory.
//! - [`protocol`]: QGA commands and replies as types.
//! - [`link`]: the task that owns one stream: connect, resync, one command on the wire,
//!   graceful close; a backend of [`backend::AgentBackend`], the interface above which
//!   nothing knows how the agent is reached.
//! - [`processes`]: the one owner of guest processes (start, polls, orphans, late pids).
//! - [`GuestAgent`]: the handle the checks hold.
//!
//! [`backoff::Backoff`] is the one retry and polling schedule of them all.

mod address;
pub(crate) mod backend;
mod backoff;
// Only the libvirt backend learns a state; the rules and their tests are in every build.
#[cfg_attr(
    not(feature = "libvirt"),
    allow(
        dead_code,
        reason = "states are learnt by the libvirt backend (feature libvirt)"
    )
)]
mod domain_state;
mod error;
pub mod framing;
mod guest_agent;
#[cfg_attr(
    not(feature = "libvirt"),
    allow(
        dead_code,
        reason = "the classification is used by the libvirt backend (feature libvirt)"
    )
)]
pub(crate) mod libvirt;
mod link;
mod processes;
pub mod protocol;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod transport;

pub(crate) use address::{AgentAddress, parse_port};
pub(crate) use domain_state::{DomainState, PauseReason};
pub(crate) use error::AgentError;
pub(crate) use guest_agent::GuestAgent;
pub(crate) use protocol::{ExecStatus, OutputExcerpt};
