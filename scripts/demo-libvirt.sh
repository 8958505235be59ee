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
user="${DEMO_USER:-vpg-demo}"
[ "$(id -u)" = 0 ] || { echo "error: run as root: it creates $user and runs the daemon as it" >&2; exit 1; }
ensure_qemu_system
ensure_libvirt
read -r kernel initrd < <(bash tests/vm/build-guest.sh | paste -s -d' ')
cargo build --release --locked --features libvirt --target-dir target/libvirt
binary="$PWD/target/libvirt/release/virt-probe-gateway"
id "$user" >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"

# Short: libvirt puts the channel sockets under it, and a socket path has 107 bytes at most.
dir="$(mktemp -d /tmp/vpgd.XXXX)"
cp "$kernel" "$dir/vmlinux"
cp "$initrd" "$dir/initrd"
cp "$binary" "$dir/virt-probe-gateway-libvirt"
mkdir -p "$dir/run" "$dir/config" "$dir/cache"
chown -R "$user:" "$dir"
chmod 0700 "$dir"
as_user() {
  setpriv --reuid "$user" --regid "$user" --clear-groups \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir" XDG_RUNTIME_DIR="$dir/run" \
    XDG_CONFIG_HOME="$dir/config" XDG_CACHE_HOME="$dir/cache" LIBVIRT_AUTOSTART=0 "$@"
}
socket="$dir/run/libvirt/libvirt-sock"
uri="qemu+unix:///session?socket=$socket"
domain=demo_vm

daemon_pid=""
gateway_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  # QEMU and virtlogd outlive the daemon: each is ended by its pid file.
  local qemu_pid logd_pid
  qemu_pid="$(cat "$dir/run/libvirt/qemu/run/$domain.pid" 2>/dev/null || true)"
  logd_pid="$(cat "$dir/run/libvirt/virtlogd.pid" 2>/dev/null || true)"
  as_user virsh -q -c "$uri" destroy "$domain" >/dev/null 2>&1 || true
  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  for pid in $qemu_pid $logd_pid; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

as_user libvirtd --timeout 0 >"$dir/libvirtd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "error: libvirtd did not create $socket; its log:" >&2; cat "$dir/libvirtd.log" >&2; exit 1; }

cat >"$dir/domain.xml" <<XML
<domain type='qemu'>
  <name>$domain</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$dir/vmlinux</kernel>
    <initrd>$dir/initrd</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='file'><source path='$dir/console.log'/><target port='0'/></serial>
  </devices>
</domain>
XML
chown "$user:" "$dir/domain.xml"
as_user virsh -q -c "$uri" define "$dir/domain.xml" >/dev/null
as_user virsh -q -c "$uri" start "$domain" >/dev/null

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
