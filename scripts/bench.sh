#!/usr/bin/env bash
# Measures the gateway as it ships (the release build) beside the agent's own round trip
# and beside a process per probe, in one run, and prints BENCHMARKS.md-ready tables (also
# written to target/bench/results.md). Installs Debian's qemu-guest-agent when missing.
#
#   scripts/bench.sh            the full run
#   scripts/bench.sh --quick    every phase with small samples (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_qemu_ga
command -v taskset >/dev/null || apt_install util-linux

# The same build as the image's (docker/Dockerfile).
cargo build --release --locked
# The benchmark's clients: a crate of their own (bench/), sharing no code with the gateway.
cargo build --release --locked --manifest-path bench/Cargo.toml --target-dir target/bench-build
mkdir -p target/bench
target/bench-build/release/gateway-bench \
  --binary target/release/virt-probe-gateway --out target/bench/results.md "$@"
