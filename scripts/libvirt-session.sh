# A libvirt session daemon of its own, run as an unprivileged user (as KubeVirt's
# non-root virt-launcher runs it), with the tests/vm guest defined and started under TCG
# with libvirt's standard org.qemu.guest_agent.0 channel. Sourced by scripts/demo-libvirt.sh
# and scripts/bench.sh (after scripts/lib.sh); needs root, to create the user and switch
# to it. `libvirt_session_start USER DOMAIN` sets:
#   dir      the session's directory (short: libvirt binds channel sockets under it, and a
#            socket path holds 107 bytes at most), owned by USER, 0700
#   uri      qemu+unix:///session?socket=$dir/run/libvirt/libvirt-sock
#   daemon_pid, domain, user
# and copies the libvirt gateway (target/libvirt/release) to $dir/virt-probe-gateway-libvirt.
# `as_user CMD...` runs CMD as USER with the session's environment;
# `libvirt_session_stop` ends QEMU, virtlogd and the daemon by their pids and removes $dir.

libvirt_session_start() {
  user="$1"
  domain="$2"
  ensure_qemu_system
  ensure_libvirt
  local kernel initrd
  read -r kernel initrd < <(bash tests/vm/build-guest.sh | paste -s -d' ')
  cargo build --release --locked --features libvirt --target-dir target/libvirt
  id "$user" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
  dir="$(mktemp -d /tmp/vpgd.XXXX)"
  cp "$kernel" "$dir/vmlinux"
  cp "$initrd" "$dir/initrd"
  cp target/libvirt/release/virt-probe-gateway "$dir/virt-probe-gateway-libvirt"
  mkdir -p "$dir/run" "$dir/config" "$dir/cache"
  chown -R "$user:" "$dir"
  chmod 0700 "$dir"
  local socket="$dir/run/libvirt/libvirt-sock"
  uri="qemu+unix:///session?socket=$socket"
  as_user libvirtd --timeout 0 >"$dir/libvirtd.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 100); do [ -S "$socket" ] && break; sleep 0.1; done
  [ -S "$socket" ] || { echo "error: libvirtd did not create $socket; its log:" >&2; cat "$dir/libvirtd.log" >&2; return 1; }
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
}

as_user() {
  setpriv --reuid "$user" --regid "$user" --clear-groups \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir" XDG_RUNTIME_DIR="$dir/run" \
    XDG_CONFIG_HOME="$dir/config" XDG_CACHE_HOME="$dir/cache" LIBVIRT_AUTOSTART=0 "$@"
}

libvirt_session_stop() {
  [ -n "${dir:-}" ] || return 0
  # QEMU and virtlogd outlive the daemon, and the daemon is a grandchild of $daemon_pid
  # (as_user's subshell): each is ended by its own pid file.
  local qemu_pid logd_pid libvirtd_pid
  qemu_pid="$(cat "$dir/run/libvirt/qemu/run/$domain.pid" 2>/dev/null || true)"
  logd_pid="$(cat "$dir/run/libvirt/virtlogd.pid" 2>/dev/null || true)"
  libvirtd_pid="$(cat "$dir/run/libvirt/libvirtd.pid" 2>/dev/null || true)"
  as_user virsh -q -c "$uri" destroy "$domain" >/dev/null 2>&1 || true
  for pid in $qemu_pid $logd_pid $libvirtd_pid; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ -n "${daemon_pid:-}" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
  dir=""
}
