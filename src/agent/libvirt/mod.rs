//! The libvirt backend: the VM's own agent reached through libvirt's agent command
//! (`virDomainQemuAgentCommand`), with no agent of the gateway's in the guest, and the
//! domain's state learnt from the same daemon (docs/libvirt.md).
//!
//! - [`classify`]: libvirt's errors as [`crate::agent::AgentError`]s (pure, always built).
//! - `connection` (feature `libvirt`): the one kept connection, its keeper thread and
//!   libvirt's event loop (keepalive).
//! - `pool`: the bounded worker threads every blocking libvirt call runs on.
//! - `backend`: [`crate::agent::backend::AgentBackend`] over the two, and the state.
//!
//! Only `virt-probe-gateway-libvirt` (feature `libvirt`) links libvirt0; the other binary
//! refuses a `libvirt:` agent when the config is resolved.

#[cfg(feature = "libvirt")]
mod backend;
pub(crate) mod classify;
#[cfg(feature = "libvirt")]
mod connection;
#[cfg(feature = "libvirt")]
mod pool;

#[cfg(feature = "libvirt")]
pub(crate) use backend::LibvirtBackend;
