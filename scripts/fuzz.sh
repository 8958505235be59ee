#!/usr/bin/env bash
# Runs the coverage-guided fuzz target for the agent stream (framing + reply parsing) for
# a bounded time: FUZZ_SECONDS (default 60). Called by scripts/test.sh in CI.
#
# cargo-fuzz wants nightly features; this machine has only stable Rust, so the build runs
# with RUSTC_BOOTSTRAP=1 and --sanitizer none (libFuzzer's coverage guidance needs no
# sanitizer; the checks are the target's own asserts and Rust's panics).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not found: installing it from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/agent_stream
mkdir -p "$corpus"
# Seeds: what a real agent writes (replies, a delimited sync reply, an error, an exec status).
printf '\x07{"return": {}, "id": 1}\n\xff{"return": 42}\n{"error": {"class": "CommandNotFound", "desc": "Command guest-exec has been disabled"}}\n' >"$corpus/seed-replies"
printf '\x40{"return": {"exited": true, "exitcode": 0, "out-data": "aGVsbG8=", "out-truncated": false}, "id": 9}\n' >"$corpus/seed-status"

RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none agent_stream "$corpus" -- \
  -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -print_final_stats=1
