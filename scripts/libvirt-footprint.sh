#!/usr/bin/env bash
# What the libvirt binary costs beside the default one, measured from the two release
# builds (the figures are in docker/README.md):
# - the shared libraries it loads that the default binary does not (the set difference of
#   the two `ldd` closures), with their sizes summed;
# - what the image adds for it: the binary plus what docker/copy-closure.sh copies into
#   the distroless runtime (that closure minus the base image's packages);
# - VmRSS and RssAnon of `serve` at idle for each, on the same config
#   (examples/gateway.yaml) with a real local qemu-ga (unix-listen) connected, read from
#   /proc/PID/status once the first /live has answered 200.
# While the libvirt binary does not link libvirt.so.0 (no backend code calls libvirt yet),
# all three are measured with libvirt.so.0 and libvirt-qemu.so.0 loaded into it through
# LD_PRELOAD: the loader maps them and their dependencies and runs their initialisers
# as it does for linked libraries, so the figures are those of linking them.
#
#   scripts/libvirt-footprint.sh [DEFAULT_BINARY [LIBVIRT_BINARY]]
#   defaults: target/release/virt-probe-gateway, and $VPG_LIBVIRT_GATEWAY or
#   target/libvirt/release/virt-probe-gateway (the builds of scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

default_binary="${1:-target/release/virt-probe-gateway}"
libvirt_binary="${2:-${VPG_LIBVIRT_GATEWAY:-target/libvirt/release/virt-probe-gateway}}"
for binary in "$default_binary" "$libvirt_binary"; do
  [ -x "$binary" ] || { echo "error: $binary missing: build it as scripts/test.sh does" >&2; exit 1; }
done
ensure_qemu_ga

dir="$(mktemp -d -t libvirt-footprint.XXXXXX)"
agent_pid=""
gateway_pid=""
stop() {
  if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  if [ -n "$agent_pid" ]; then kill -TERM "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
  gateway_pid=""
  agent_pid=""
}
trap 'stop; rm -rf "$dir"' EXIT

# The libraries a binary loads (with $preload), one canonical path a line, sorted.
closure() {
  LD_PRELOAD="$2" ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | xargs -r readlink -f | sort -u
}

mib() { awk -v bytes="$1" 'BEGIN { printf "%.1f MiB", bytes / 1048576 }'; }

preload=""
if ! closure "$libvirt_binary" "" | grep -q '/libvirt\.so\.'; then
  preload="libvirt.so.0 libvirt-qemu.so.0"
  echo "The libvirt binary does not link libvirt.so.0 yet: it is measured with LD_PRELOAD=\"$preload\"."
fi

closure "$default_binary" "" >"$dir/default.libs"
closure "$libvirt_binary" "$preload" >"$dir/libvirt.libs"
comm -13 "$dir/default.libs" "$dir/libvirt.libs" >"$dir/added.libs"
added_bytes=0
while read -r library; do
  added_bytes=$((added_bytes + $(stat -L -c %s "$library")))
done <"$dir/added.libs"
echo "Libraries the libvirt binary loads beyond the default binary's: $(wc -l <"$dir/added.libs"), $(mib "$added_bytes")"
sed 's/^/  /' "$dir/added.libs"

LD_PRELOAD="$preload" sh docker/copy-closure.sh "$libvirt_binary" "$dir/root" >/dev/null
copied_bytes=$(find "$dir/root" -type f -printf '%s\n' | awk '{ sum += $1 } END { print sum + 0 }')
copied_files=$(find "$dir/root" -type f | wc -l)
libraries_bytes=$(find "$dir/root" -type f -name '*.so*' -printf '%s\n' | awk '{ sum += $1 } END { print sum + 0 }')
binary_bytes=$(stat -L -c %s "$libvirt_binary")
echo "The image adds: the libvirt binary $(mib "$binary_bytes"), and docker/copy-closure.sh's $copied_files files $(mib "$copied_bytes") (libraries $(mib "$libraries_bytes")): $(mib $((binary_bytes + copied_bytes)))"

# Starts BINARY serve with a fresh agent, waits until /live answers 200 (listening, agent
# connected, a ping answered), prints VmRSS and RssAnon, stops both.
idle_rss() {
  local label=$1 binary=$2 with=$3 port="" _
  rm -f "$dir/qga.sock"
  "$(qemu_ga_path)" -m unix-listen -p "$dir/qga.sock" -t "$dir" -f "$dir/qga.pid" &
  agent_pid=$!
  for _ in $(seq 1 200); do [ -S "$dir/qga.sock" ] && break; sleep 0.05; done
  [ -S "$dir/qga.sock" ] || { echo "error: qemu-ga did not create $dir/qga.sock" >&2; exit 1; }
  LD_PRELOAD="$with" "$binary" serve --config examples/gateway.yaml \
    --agent "unix://$dir/qga.sock" --listen 127.0.0.1:0 >"$dir/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 1 200); do
    port=$(sed -n 's/.* listening address=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$dir/gateway.log")
    [ -n "$port" ] && curl -fsS -o /dev/null "http://127.0.0.1:$port/live" 2>/dev/null && break
    port=""
    sleep 0.05
  done
  [ -n "$port" ] || { cat "$dir/gateway.log" >&2; echo "error: $label: /live never answered 200" >&2; exit 1; }
  awk -v label="$label" '/^VmRSS:/ { vm = $2 } /^RssAnon:/ { anon = $2 }
    END { printf "  %-16s VmRSS %5.1f MiB, RssAnon %4.1f MiB\n", label, vm / 1024, anon / 1024 }' \
    "/proc/$gateway_pid/status"
  stop
}

echo "Idle serve (examples/gateway.yaml, a local qemu-ga connected, after the first /live):"
idle_rss "default binary" "$default_binary" ""
idle_rss "libvirt binary" "$libvirt_binary" "$preload"
