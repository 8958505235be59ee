#!/usr/bin/env bash
# Runs the checks and the test suite: formatting, clippy, unit and integration tests.
# The integration tests start real qemu-ga agents, so this installs Debian's
# qemu-guest-agent first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_qemu_ga
echo "qemu-ga: $(qemu_ga_path) ($("$(qemu_ga_path)" --version 2>&1 | head -n1))"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  # .config/nextest.toml runs the integration tests one at a time (they assert deadlines).
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --lib --bins
  cargo test --locked --test api -- --test-threads=1
fi
