//! `virt-probe-gateway-inject` (also `virt-probe-gateway inject`, which runs it): the
//! mutating admission webhook (see [`virt_probe_gateway::cli::run_inject`]). A binary of
//! its own so that the gateway's carries none of its HTTPS and Kubernetes types.

use std::process::ExitCode;

use clap::Parser;
use virt_probe_gateway::cli::{InjectCli, run_inject};

fn main() -> ExitCode {
    run_inject(InjectCli::parse().args)
}
