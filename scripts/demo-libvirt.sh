#!/usr/bin/env bash
# The libvirt backend, end to end on this machine: starts a libvirt session daemon as an
# unprivileged user (as KubeVirt's non-root virt-launcher runs it), defines and starts the
# tests/vm guest under TCG with libvirt's standard org.qemu.guest_agent.0 channel, and
# serves /ready and /live through libvirt with virt-probe-gateway-libvirt, as that same
# user. Needs root (to create the user and switch to it). Ctrl-C stops and removes all.
#
#   DEMO_PORT=8080 (default)   the gateway's port on 127.0.0.1
#   DEMO_USER=vpg-demo         the unprivileged user (created if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

port="${DEMO_PORT:-8080}"
[ "$(id -u)" = 0 ] || { echo "error: run as root: it creates the demo's user and runs the daemon as it" >&2; exit 1; }
source scripts/libvirt-session.sh

gateway_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  libvirt_session_stop
}
trap cleanup EXIT
trap 'exit 0' INT TERM
libvirt_session_start "${DEMO_USER:-vpg-demo}" demo_vm
socket="$dir/run/libvirt/libvirt-sock"

cat >"$dir/gateway.yaml" <<YAML
listen: "127.0.0.1:$port"
agent: "libvirt:$domain"
libvirtUri: "$uri"
readinessProbe:
  exec:
    command: ["sh", "-c", "test -e /run/healthy"]
  timeoutSeconds: 2
livenessProbe:
  guestAgentPing: {}
  timeoutSeconds: 2
YAML
chown "$user:" "$dir/gateway.yaml"
as_user "$dir/virt-probe-gateway-libvirt" serve --config "$dir/gateway.yaml" &
gateway_pid=$!
for _ in $(seq 1 600); do
  # Passing, and not only under the liveness grace: the guest's agent has answered.
  curl -fsS -H 'Accept: application/json' "http://127.0.0.1:$port/live" 2>/dev/null | grep -qv grace && break
  kill -0 "$gateway_pid" 2>/dev/null || { echo "error: the gateway exited at start (is port $port free? set DEMO_PORT)" >&2; exit 1; }
  sleep 0.1
done

virsh="setpriv --reuid $user --regid $user --clear-groups env XDG_RUNTIME_DIR=$dir/run HOME=$dir virsh -c '$uri'"
cat <<EOT

virt-probe-gateway-libvirt is serving on http://127.0.0.1:$port
  domain $domain (the tests/vm guest, TCG), libvirt session daemon of $user at $socket
Try:
  curl -i http://127.0.0.1:$port/live        # guestAgentPing through libvirt: 200
  curl -i http://127.0.0.1:$port/ready       # exec test -e /run/healthy in the guest: 503
  $virsh qemu-agent-command $domain '{"execute":"guest-exec","arguments":{"path":"touch","arg":["/run/healthy"]}}'
  curl -i http://127.0.0.1:$port/ready       # now 200
  $virsh suspend $domain
  curl -H 'Accept: application/json' http://127.0.0.1:$port/live    # 200: "domain paused (user)"
  curl -i http://127.0.0.1:$port/ready       # 503: domain paused (user)
  $virsh resume $domain
  curl -s http://127.0.0.1:$port/metrics | grep domain_state
Ctrl-C stops the gateway, the VM and the daemon.
EOT
wait "$gateway_pid"
