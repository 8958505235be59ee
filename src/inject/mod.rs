//! `virt-probe-gateway inject`: the mutating admission webhook that puts the gateway into
//! virt-launcher pods and points their probes at it, with no change to the VM manifest or
//! the guest and no KubeVirt feature gate (docs/inject.md, deploy/README.md).
//!
//! A review goes: [`server`] (HTTPS, `POST /mutate`) → [`admission`] (the AdmissionReview,
//! dispatched on the object's kind) →
//! - a VM or VMI: [`eligibility`] decides from the spec whether kubelet can reach the
//!   gateway's port, and [`decision`] is the annotation that carries it to the pods;
//! - a launcher pod: [`launcher_pod`] reads its `virt-probe` lines ([`virt_probe`]) and
//!   builds the JSON Patch that adds the gateway and rewrites the probes.
//!
//! It needs no Kubernetes API access (everything it decides is in the object reviewed),
//! and does not link libvirt (the gateway it injects does).

mod admission;
mod decision;
mod eligibility;
mod launcher_pod;
mod metrics;
mod server;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod tls;
mod virt_probe;

pub(crate) use server::{InjectError, Listen, run};
pub(crate) use tls::{CertificateFiles, ReloadingCertificate};
