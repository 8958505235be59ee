//! The gateway as a KubeVirt hook sidecar (`serve --kubevirt-hook`): KubeVirt's hook gRPC
//! services ([`hook`]), the domain edit that gives the gateway a private agent channel
//! ([`domain`]), and the generated protocol code ([`proto`]).

pub mod domain;
pub mod hook;
pub mod proto;

pub use hook::{HookEvent, HookServer, HookSetup};
