//! Tests against a real libvirt: a session daemon of the test's own, run as an
//! unprivileged user, with the tests/vm guest as a TCG domain (session.rs). One at a time
//! (.config/nextest.toml): a guest under TCG wants a core to itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test harness: a failed set-up step panics with its message, which is the test's failure report"
)]
#![allow(
    unreachable_pub,
    reason = "a test binary: its support modules are `pub` to one another, nothing is exported"
)]

// The guest, its boot parameters and client are the VM tests' own.
#[path = "../vm/host.rs"]
mod host;
#[path = "../vm/image.rs"]
mod image;
#[path = "../vm/qga_client.rs"]
#[allow(dead_code)]
mod qga_client;

// virt-launcher's side of the hook protocol: the API tests' own.
#[path = "../api/support/hook.rs"]
#[allow(dead_code)]
mod hook_support;

// The admission webhook and its HTTPS client: the API tests' own.
#[path = "../api/support/webhook.rs"]
#[allow(dead_code)]
mod webhook;

// Kubelet's atomic writer for volumes: the API tests' own.
#[path = "../api/support/volume.rs"]
#[allow(dead_code)]
mod volume;

mod checks;
mod gateway;
mod harness;
mod hook;
mod inject;
mod migration;
mod plugin;
mod session;
