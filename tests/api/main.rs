//! Integration tests: the gateway binary against real qemu-ga agents (one per test, in a
//! temp dir) and, for faults a real agent cannot show, a scripted fake. One binary, so
//! the suite links once; nextest runs these serially (.config/nextest.toml) because many
//! assert deadlines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test harness: a failed set-up step panics with its message, which is the test's failure report"
)]
#![allow(
    unreachable_pub,
    reason = "a test binary: its support modules are `pub` to one another, nothing is exported"
)]

mod support;

mod agent_faults;
mod cli;
mod deploy;
mod faults;
mod http_api;
mod inject;
mod inject_fixtures;
mod kubevirt_hook;
mod kubevirt_plugin;
mod lifecycle;
mod linkage;
mod maintenance;
mod modes;
mod named_checks;
mod real_agent;
mod reload;
mod startup;
mod transports;
