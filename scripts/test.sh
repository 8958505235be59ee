#!/usr/bin/env bash
# Runs the checks and the test suite: formatting, clippy, unit, integration, VM and
# libvirt tests. The integration tests start real qemu-ga agents, the VM tests boot a
# QEMU guest and the libvirt tests a libvirt daemon with that guest as a domain, so this
# installs Debian's qemu-guest-agent, qemu-system-x86 and libvirt when missing, and
# builds the guest image (cached: tests/vm/build-guest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_qemu_ga
echo "qemu-ga: $(qemu_ga_path) ($("$(qemu_ga_path)" --version 2>&1 | head -n1))"
ensure_qemu_system
if command -v qemu-system-x86_64 >/dev/null; then
  echo "qemu: $(qemu-system-x86_64 --version | head -n1)"
  bash tests/vm/build-guest.sh >/dev/null
fi
ensure_libvirt
ensure_openssl
echo "libvirt: $(virsh --version) (libvirt-dev $(pkg-config --modversion libvirt))"

# Python tools the tests call (a real Prometheus/OpenMetrics parser).
python3 -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# The libvirt feature's code (src/agent/libvirt/) is compiled only with the feature, so it
# is linted with it too. Only this package and the virt crates are checked again (about
# 20 s here): the other dependencies keep their features and their check results.
cargo clippy --locked --all-targets --features libvirt -- -D warnings
# The workspace's FFI crate (crates/libvirt-errors), the one place with unsafe code.
cargo clippy --locked --all-targets -p libvirt-errors -- -D warnings

# The dependency tree against deny.toml: one version of each crate (or a justified skip),
# crates.io only, licences from the allow-list. Not `advisories`: it fetches the RustSec
# database from git, which these machines cannot reach (package registries only).
ensure_cargo_deny
cargo deny --locked check bans licenses sources

# The coverage-guided fuzz target for the agent stream, for a bounded time (before the
# tests, so that the test runner's summary is the last thing printed).
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" scripts/fuzz.sh

# The release builds exactly as docker/Dockerfile runs them (tests/api/deploy.rs keeps the
# two the same): what CI builds is what the image holds. The second is the same main with
# the libvirt backend, the image's virt-probe-gateway-libvirt, in a target dir of its own so
# that neither binary overwrites the other; the libvirt tests and the benchmark run
# target/libvirt/release/virt-probe-gateway. It builds the release dependencies a second
# time (about 4.5 min here, 2 cores).
cargo build --release --locked
cargo build --release --locked --features libvirt --target-dir target/libvirt

# The benchmark's own crate (bench/): formatted, lint-clean, and a smoke run of every phase
# against this release binary, so scripts/bench.sh keeps working.
cargo fmt --manifest-path bench/Cargo.toml -- --check
cargo clippy --locked --manifest-path bench/Cargo.toml --target-dir target/bench-build --release -- -D warnings
cargo build --locked --release --manifest-path bench/Cargo.toml --target-dir target/bench-build
mkdir -p target/bench
source scripts/libvirt-session.sh
trap libvirt_session_stop EXIT
libvirt_session_start vpg-bench bench_vm
target/bench-build/release/gateway-bench --quick \
  --binary target/release/virt-probe-gateway --out target/bench/quick.md \
  --libvirt "$dir" "$domain" "$(id -u "$user")" "$(id -g "$user")" >/dev/null
libvirt_session_stop

# The HTTP API against its OpenAPI document: validator, generated client, schemathesis.
scripts/api-contract.sh

if cargo nextest --version >/dev/null 2>&1; then
  # .config/nextest.toml runs the integration tests one at a time (they assert deadlines).
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked -p libvirt-errors
  cargo test --locked --lib --bins
  cargo test --locked --test api -- --test-threads=1
  cargo test --locked --test vm -- --test-threads=1
  cargo test --locked --test libvirt -- --test-threads=1
fi
