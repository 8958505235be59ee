//! The gateway as a KubeVirt hook sidecar (`serve --kubevirt-hook`) or plugin sidecar
//! (`serve --kubevirt-plugin`, KubeVirt 1.9): KubeVirt's hook gRPC services ([`hook`]) and
//! plugin service ([`plugin`]), the domain edit that gives the gateway a private agent
//! channel ([`domain`]), what the gateway knows of its VM and applying its definition
//! ([`vm`]), and the generated protocol code ([`proto`]).

pub(crate) mod domain;
pub(crate) mod hook;
pub(crate) mod plugin;
pub mod proto;
pub(crate) mod vm;

pub(crate) use hook::{HookEvent, HookServer, HookSetup};
pub(crate) use vm::{VmKnowledge, WAITING_FOR_DEFINITION};
