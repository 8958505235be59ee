//! virt-probe-gateway: answers kubelet's httpGet probes for a KubeVirt VM by running the
//! VM's configured checks through qemu-guest-agent over one long-lived connection.
//!
//! Where a request goes:
//! - [`http`]: the HTTP API (`/ready`, `/live`, `/healthz`), content negotiation, reports.
//! - [`probe`]: the checks (`exec`, `guestAgentPing`), named checks and the probes made of
//!   them, single flight, the liveness grace, the startup probe, the probe set in force and
//!   the policy for replacing it.
//! - [`agent`]: the guest agent: transports, framing, protocol, the link that owns a
//!   connection, the backend interface, the owner of guest processes.
//! - [`config`]: the config file (or VM manifest), validated once into domain types.
//! - [`kubevirt`]: the KubeVirt hook sidecar: hook gRPC services, the domain XML edit that
//!   gives the gateway its own agent channel, what it knows of its VM.
//! - [`inject`]: `inject`, the admission webhook that puts the gateway into launcher pods
//!   and points their probes at it.
//! - [`reload`]: following the config file (SIGHUP, the directory watch).
//! - [`maintenance`]: the maintenance pause, from the pod's annotations (the same watch).
//! - [`cli`] and [`app`]: the command line, and building and running the server.
//! - [`telemetry`]: logging set-up.
//!
//! `docs/architecture.md` draws the path of a `GET /ready`, of a config reload and of a
//! KubeVirt definition through these modules, with the task that owns each resource.

#![forbid(unsafe_code)]

// Public only for the fuzz target: the agent's framing and protocol.
pub mod agent;
pub(crate) mod app;
// Public for the binary: the command line and `run`.
pub mod cli;
pub(crate) mod config;
pub(crate) mod http;
pub(crate) mod inject;
pub(crate) mod kubevirt;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub(crate) mod probe;
pub(crate) mod reload;
pub(crate) mod telemetry;
