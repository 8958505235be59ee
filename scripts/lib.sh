# Shared by scripts/demo.sh, scripts/test.sh and scripts/bench.sh. Sourced, not run.

# Installs Debian's qemu-guest-agent when qemu-ga is missing (root, or sudo without a
# password). The tests and the demo need a real agent; without one they fail loudly.
ensure_qemu_ga() {
  qemu_ga_path >/dev/null && return 0
  echo "qemu-ga not found: installing Debian's qemu-guest-agent" >&2
  apt_install qemu-guest-agent || {
    echo "error: qemu-guest-agent is not installed and this user cannot install it; run: apt-get install qemu-guest-agent" >&2
    return 1
  }
  qemu_ga_path >/dev/null || { echo "error: qemu-ga still missing after the install" >&2; return 1; }
}

# apt-get install --no-install-recommends, as root or with password-less sudo; refreshes
# the package lists when the first try fails (a fresh machine has none). Fails if this
# user cannot install.
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null || return 1
    sudo="sudo -n"
  fi
  # policy-rc.d or no init system: a package's service is not started, which is wanted.
  local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@")
  "${install[@]}" >&2 2>/dev/null || {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${install[@]}" >&2
  }
}

# Prints the path of qemu-ga (it lives in /usr/sbin, often not on a user's PATH).
qemu_ga_path() {
  local candidate
  for candidate in "$(command -v qemu-ga 2>/dev/null)" /usr/sbin/qemu-ga /usr/bin/qemu-ga; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# Installs QEMU for the VM tests (tests/vm) when missing. Where it cannot be installed
# (no root), the VM tests say so and skip, except in CI, where they fail.
ensure_qemu_system() {
  command -v qemu-system-x86_64 >/dev/null && return 0
  echo "qemu-system-x86_64 not found: installing Debian's qemu-system-x86" >&2
  apt_install qemu-system-x86 ||
    echo "warning: cannot install qemu-system-x86 as this user: the VM tests will skip" >&2
}

# Installs Debian's libvirt when any part is missing: the daemon and its QEMU driver (the
# libvirt tests and demo start a session daemon of their own), virsh, and libvirt-dev
# with pkg-config (the `virt` crate's build script finds libvirt and libvirt-qemu through
# pkg-config, so `--features libvirt` cannot build without them). libvirt-dev brings
# libvirt0, which the libvirt binary loads at run time.
ensure_libvirt() {
  command -v virsh >/dev/null &&
    { command -v libvirtd >/dev/null || [ -x /usr/sbin/libvirtd ]; } &&
    pkg-config --exists libvirt libvirt-qemu 2>/dev/null && return 0
  echo "libvirt not found: installing Debian's libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients and libvirt-dev" >&2
  apt_install libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config || {
    echo "error: libvirt is not installed and this user cannot install it; run: apt-get install libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config" >&2
    return 1
  }
}

# The cargo-deny that scripts/test.sh runs, pinned: a new release may add checks that fail
# a tree which passed. 0.20.2 builds with Rust 1.88 and later.
CARGO_DENY_VERSION=0.20.2

# Installs that cargo-deny from crates.io when it is missing or another version: a release
# build of about 200 crates, once per machine (5.5 min of CPU; 16 min here, where the two
# cores were shared with other builds). The check itself then takes about 2 s.
ensure_cargo_deny() {
  [ "$(cargo deny --version 2>/dev/null)" = "cargo-deny $CARGO_DENY_VERSION" ] && return 0
  echo "cargo-deny $CARGO_DENY_VERSION not found: installing it from crates.io" >&2
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
}

# openssl, for scripts/injector-certs.sh (the injector's certificate without cert-manager),
# which a test and the benchmark run. Debian has it on most machines; installed if not.
ensure_openssl() {
  command -v openssl >/dev/null && return 0
  echo "openssl not found: installing Debian's openssl" >&2
  apt_install openssl || {
    echo "error: openssl is not installed and this user cannot install it; run: apt-get install openssl" >&2
    return 1
  }
}
