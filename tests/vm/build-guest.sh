#!/usr/bin/env bash
# Builds the test guest (see tests/vm/README.md) from Debian packages only:
#   $VPG_VM_CACHE/vmlinux            uncompressed ELF kernel; QEMU boots it via PVH
#   $VPG_VM_CACHE/initramfs.cpio.gz  busybox + qemu-ga + virtio modules + tests/vm/init
# and prints those two paths on stdout (progress goes to stderr).
#
# Cached: the key is the resolved package versions plus the hashes of this script and
# of tests/vm/init; with an unchanged key a rerun only resolves versions (~0.1 s).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VPG_VM_CACHE:-$HOME/.cache/virt-probe-gateway/vm}
self=$here/build-guest.sh
init_script=$here/init

# The libraries qemu-ga links (ldd /usr/sbin/qemu-ga on bookworm; libgmodule and libm
# come from libglib2.0-0 and libc6). The build checks this list against the guest's qemu-ga.
LIBS=(libc6 libglib2.0-0 libnuma1 libudev1 liburing2 libpcre2-8-0)
# insmod order (each only depends on earlier ones); tests/vm/init loads the same list.
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console)

log() { echo "build-guest: $*" >&2; }

mkdir -p "$cache"
# Parallel test binaries may all call this at once: one builds, the others then hit the cache.
exec 9>"$cache/.lock"
flock 9

# Debian's docker images disable apt's binary package cache, which makes every
# apt-cache call re-parse the lists (~0.7 s each). A private one in our cache dir keeps
# the warm path fast; apt rebuilds it by itself whenever the lists change.
apt_cache() { apt-cache -o Dir::Cache::pkgcache="$cache/apt-pkgcache.bin" "$@"; }

# Sets PKGS to "name=version" for everything to download; fails if any has no candidate.
resolve() {
    local meta kpkg name ver
    meta=$(apt_cache policy linux-image-amd64 | awk '/Candidate:/ {print $2}')
    [ -n "$meta" ] && [ "$meta" != "(none)" ] || return 1
    # The ABI-versioned package (linux-image-6.1.0-NN-amd64) the metapackage points to;
    # showpkg is ~10x faster than `apt-cache depends` here.
    kpkg=$(apt_cache showpkg linux-image-amd64 | awk -v v="$meta" '
        /^Dependencies:/ {d = 1; next}
        /^[A-Z][a-z ]*:/ {d = 0}
        d && $1 == v && $2 == "-" {
            for (i = 3; i <= NF; i++) if ($i ~ /^linux-image-/) {print $i; exit}
        }')
    [ -n "$kpkg" ] || return 1
    PKGS=()
    while read -r name ver; do
        [ "$ver" != "(none)" ] || return 1
        PKGS+=("$name=$ver")
    done < <(apt_cache policy "$kpkg" qemu-guest-agent busybox-static "${LIBS[@]}" |
        awk '/^[^ ]/ {sub(":$", "", $1); p = $1} /Candidate:/ {print p, $2}')
    [ "${#PKGS[@]}" -eq $((3 + ${#LIBS[@]})) ] || return 1
    KERNEL_PKG=$kpkg
}

cache_key() {
    { printf '%s\n' "${PKGS[@]}"; sha256sum "$self" "$init_script" | cut -d' ' -f1; } |
        sha256sum | cut -d' ' -f1
}

# No lists at all (fresh container) looks like "no candidate": update once then.
if ! resolve; then
    log "package versions unknown, running apt-get update"
    apt-get update -qq >&2
    resolve || { log "cannot resolve the guest's packages"; exit 1; }
fi

out_kernel=$cache/vmlinux
out_initrd=$cache/initramfs.cpio.gz
if [ -f "$out_kernel" ] && [ -f "$out_initrd" ] && [ -f "$cache/key" ] &&
    [ "$(cat "$cache/key")" = "$(cache_key)" ]; then
    printf '%s\n' "$out_kernel" "$out_initrd"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs" "$tmp/root" "$tmp/kernel"
log "downloading: ${PKGS[*]}"
download() {
    # A root apt-get sandboxes downloads as _apt, which cannot write into our 0700
    # temp dir; there is nothing to protect here, so skip the sandbox.
    (cd "$tmp/debs" && apt-get download -q -o APT::Sandbox::User=root "${PKGS[@]}" >&2)
}
if ! download; then
    # Usually stale lists: the pinned version left the mirror. Refresh and re-resolve
    # (the cache key is computed again below from what we really got).
    log "download failed, running apt-get update and retrying"
    apt-get update -qq >&2
    resolve
    rm -f "$tmp/debs"/*
    download
fi

root=$tmp/root
for deb in "$tmp"/debs/*.deb; do
    case ${deb##*/} in linux-image-*) continue ;; esac
    dpkg -x "$deb" "$root"
done
# Nothing in the guest reads docs, locales or iconv modules (8 MB of gconv alone), and
# qemu-ga links neither gio/gobject nor libmvec (the check below would catch it if it did).
rm -rf "$root/usr/share" "$root"/usr/lib/x86_64-linux-gnu/gconv "$root/lib/systemd" "$root/lib/udev" \
    "$root"/usr/lib/x86_64-linux-gnu/lib{gio,gobject}-2.0.so* "$root"/lib/x86_64-linux-gnu/libmvec.so*

# Every library the guest's qemu-ga needs must resolve inside the rootfs: ld.so also
# searches the host's dirs, so anything that resolves outside "$root" is missing.
libpath=$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu
deps=$("$root"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path "$libpath" \
    --list "$root/usr/sbin/qemu-ga")
if echo "$deps" | grep '=>' | grep -v "=> $root/"; then
    log "qemu-ga needs libraries missing from LIBS (above)"
    exit 1
fi

# Only the kernel image and the virtio modules: unpacking the whole package is 400 MB.
kdeb=$(echo "$tmp"/debs/"$KERNEL_PKG"_*.deb)
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp/kernel" --wildcards \
    './boot/vmlinuz-*' '*/modules/*/virtio*.ko*'
mkdir -p "$root/lib/modules"
for m in "${MODULES[@]}"; do
    f=$(find "$tmp/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" \) -print -quit)
    [ -n "$f" ] || { log "module $m not found in $KERNEL_PKG"; exit 1; }
    case $f in
        *.xz) python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' \
            "$f" >"$root/lib/modules/$m.ko" ;;
        *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
done

# QEMU boots an ELF vmlinux through its PVH note in ~3 s under TCG, vs 7-9 s for the
# bzImage (which decompresses itself, slowly, under emulation). The bzImage carries an
# XZ stream: decompress the first candidate that turns out to be an ELF.
python3 - "$tmp"/kernel/boot/vmlinuz-* "$tmp/vmlinux" <<'EOF'
import lzma, sys
data = open(sys.argv[1], "rb").read()
magic = b"\xfd7zXZ\x00"
pos = data.find(magic)
while pos >= 0:
    try:
        elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data[pos:])
        if elf[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(elf)
            sys.exit(0)
    except lzma.LZMAError:
        pass
    pos = data.find(magic, pos + 1)
sys.exit("no XZ-compressed ELF kernel found in " + sys.argv[1])
EOF

busybox=$root/bin/busybox
for applet in $("$busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# Debian's busybox has no pgrep; tests want "is it still running?" from guest-exec.
# Minimal shim: pgrep [-f] PATTERN (comm, or full command line with -f).
cat >"$root/bin/pgrep" <<'EOF'
#!/bin/sh
field=comm; [ "$1" = "-f" ] && { field=cmdline; shift; }
[ -n "$1" ] || { echo "usage: pgrep [-f] PATTERN" >&2; exit 2; }
found=1
for d in /proc/[0-9]*; do
    pid=${d#/proc/}; [ "$pid" = "$$" ] && continue
    s=$(tr '\0' ' ' <"$d/$field" 2>/dev/null) || continue
    case $s in *"$1"*) echo "$pid"; found=0 ;; esac
done
exit $found
EOF
chmod 755 "$root/bin/pgrep"
mkdir -p "$root"/{dev,proc,sys,run,tmp,root,var}
ln -sfn /run "$root/var/run"
install -m 755 "$init_script" "$root/init"

# The host has no cpio: busybox's (a static binary) runs on the host too. -R 0:0 so
# a non-root build still yields root-owned files.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0) |
    gzip -9 >"$tmp/initramfs.cpio.gz"

# Key last, so an interrupted build never looks cached.
rm -f "$cache/key"
mv "$tmp/vmlinux" "$out_kernel"
mv "$tmp/initramfs.cpio.gz" "$out_initrd"
cache_key >"$cache/key"
log "built for ${PKGS[*]}"
log "sizes: vmlinux $(du -h "$out_kernel" | cut -f1), initramfs $(du -h "$out_initrd" | cut -f1)"
printf '%s\n' "$out_kernel" "$out_initrd"
