#!/usr/bin/env bash
# Measures the gateway as it ships (the release build) beside the agent's own round trip
# and beside a process per probe, in one run, and prints BENCHMARKS.md-ready tables (also
# written to target/bench/results.md). Installs Debian's qemu-guest-agent and libvirt
# (libvirt-dev to build the libvirt binary, libvirt0 to run it, the daemon and virsh for
# its path) when missing.
#
#   scripts/bench.sh            the full run
#   scripts/bench.sh --quick    every phase with small samples (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_qemu_ga
ensure_libvirt
ensure_openssl
command -v taskset >/dev/null || apt_install util-linux

# The same builds as the image's (docker/Dockerfile): the default binary, and the libvirt
# one that the libvirt path measures.
cargo build --release --locked
cargo build --release --locked --features libvirt --target-dir target/libvirt
# The benchmark's clients: a crate of their own (bench/), sharing no code with the gateway.
cargo build --release --locked --manifest-path bench/Cargo.toml --target-dir target/bench-build
mkdir -p target/bench
# The libvirt path's daemon and domain (the tests/vm guest under TCG), as the demo's.
source scripts/libvirt-session.sh
trap libvirt_session_stop EXIT
libvirt_session_start vpg-bench bench_vm
target/bench-build/release/gateway-bench \
  --binary target/release/virt-probe-gateway --out target/bench/results.md \
  --libvirt "$dir" "$domain" "$(id -u "$user")" "$(id -g "$user")" "$@"
