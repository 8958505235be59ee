#!/usr/bin/env bash
# Runs the gateway on the embedded default (examples/gateway.yaml) against a real local
# qemu-ga in unix-listen mode, in a temp dir. This machine plays the guest: the readiness
# check runs `cat /tmp/healthy.txt` here. Ctrl-C stops both.
#
#   scripts/demo.sh             this demo
#   scripts/demo.sh --libvirt   the libvirt backend's demo (scripts/demo-libvirt.sh)
#   DEMO_PORT=8080 (default)    the gateway's port on 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

libvirt_demo=false
case "${1:-}" in
  "") ;;
  --libvirt) libvirt_demo=true ;;
  *) echo "usage: scripts/demo.sh [--libvirt]" >&2; exit 2 ;;
esac

port="${DEMO_PORT:-8080}"
if $libvirt_demo; then
  # The plain demo neither installs nor builds any of libvirt: that is the other script's.
  exec scripts/demo-libvirt.sh
fi
ensure_qemu_ga
cargo build --release --locked
binary="$PWD/target/release/virt-probe-gateway"

dir="$(mktemp -d -t probe-gateway-demo.XXXXXX)"
agent_pid=""
gateway_pid=""
cleanup() {
  trap - EXIT INT TERM
  # The gateway first: it closes its agent connection gracefully.
  if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  if [ -n "$agent_pid" ]; then kill -TERM "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

"$(qemu_ga_path)" -m unix-listen -p "$dir/qga.sock" -t "$dir" -f "$dir/qga.pid" &
agent_pid=$!
for _ in $(seq 1 200); do
  [ -S "$dir/qga.sock" ] && break
  kill -0 "$agent_pid" 2>/dev/null || { echo "error: qemu-ga exited at start" >&2; exit 1; }
  sleep 0.05
done
[ -S "$dir/qga.sock" ] || { echo "error: qemu-ga did not create $dir/qga.sock" >&2; exit 1; }

"$binary" serve --config examples/gateway.yaml --agent "unix://$dir/qga.sock" --listen "127.0.0.1:$port" &
gateway_pid=$!
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  kill -0 "$gateway_pid" 2>/dev/null || { echo "error: the gateway exited at start (is port $port free? set DEMO_PORT)" >&2; exit 1; }
  sleep 0.05
done

cat <<EOT

virt-probe-gateway is serving on http://127.0.0.1:$port (agent: $dir/qga.sock)
Try:
  curl -i http://127.0.0.1:$port/live                      # guestAgentPing: 200 ok
  curl -i http://127.0.0.1:$port/ready                     # exec cat /tmp/healthy.txt: 503 until it exists
  touch /tmp/healthy.txt; curl -i http://127.0.0.1:$port/ready   # now 200
  curl http://127.0.0.1:$port/ready?verbose                # the text report
  curl -H 'Accept: application/json' http://127.0.0.1:$port/ready   # the JSON report
  rm /tmp/healthy.txt                                      # back to 503
Ctrl-C stops the gateway and the agent.
EOT
wait "$gateway_pid"
