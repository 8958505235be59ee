//! `virt-probe-gateway`: parse the command line and run it (see [`virt_probe_gateway::cli`]).

use std::process::ExitCode;

use clap::Parser;
use virt_probe_gateway::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
