//! The qemu-guest-agent client: address parsing, transports, framing, the QGA protocol, and
//! the task that owns the one connection ([`GuestAgent`] is its handle).

mod address;
mod client;
mod error;
pub mod framing;
pub mod protocol;
pub mod transport;

pub use address::{ACCEPTED_FORMS, AgentAddress, VSOCK_OF_VMI_NEEDS_HOOK};
pub use client::{GuestAgent, LinkState, LinkStatus};
pub use error::AgentError;
pub use protocol::{ExecStatus, OutputExcerpt};
