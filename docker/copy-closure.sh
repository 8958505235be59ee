#!/bin/sh
# docker/copy-closure.sh BINARY ROOT: copies the shared libraries BINARY loads (its `ldd`
# closure) into the directory ROOT, minus those of the runtime base image's own packages,
# so that `COPY --from=build ROOT /` gives the distroless runtime what the libvirt binary
# needs without a package manager in the image (docker/README.md says why).
#
# Run in the build stage (Debian 12, like the runtime base), where libvirt-dev installed
# libvirt0 and its dependencies. For each library it copies:
# - the file, dereferenced, under its soname in its canonical directory
#   (/usr/lib/<triplet>/, which the loader searches; the build stage is usr-merged, and
#   writing through /lib could replace the base image's /lib symlink);
# - its Debian package's status stanza as var/lib/dpkg/status.d/PACKAGE, where distroless
#   records its own packages, so that image scanners see the versions;
# - the package's copyright file (the licence texts travel with the binaries).
# The base image's packages (BASE_PACKAGES) are skipped: a second libc6 or libssl3 of
# another point release would overwrite theirs, and glibc's own libraries must match
# the libc.so.6 they were built with.
set -eu

binary=$1
root=$2
# gcr.io/distroless/cc-debian12: base-debian12 (libc6, libssl3) plus libgcc-s1, libgomp1,
# libstdc++6 and gcc-12-base.
BASE_PACKAGES="libc6 libssl3 libgcc-s1 libgomp1 libstdc++6 gcc-12-base"

# The package that holds a library: dpkg knows each file under the path its package ships,
# /lib/... or /usr/lib/..., while ldd reports the path it found.
owner() {
  for path in "$1" "${1#/usr}" "/usr$1"; do
    found=$(dpkg-query -S "$path" 2>/dev/null | grep -v '^diversion' | head -n 1) || true
    if [ -n "$found" ]; then
      echo "${found%%:*}"
      return 0
    fi
  done
  echo "error: no Debian package holds $1" >&2
  return 1
}

mkdir -p "$root"
ldd "$binary" >/dev/null
for library in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'); do
  package=$(owner "$library")
  case " $BASE_PACKAGES " in *" $package "*) continue ;; esac
  directory=$(readlink -f "$(dirname "$library")")
  mkdir -p "$root$directory" "$root/var/lib/dpkg/status.d" "$root/usr/share/doc/$package"
  cp -L "$library" "$root$directory/$(basename "$library")"
  dpkg-query -s "$package" >"$root/var/lib/dpkg/status.d/$package"
  cp -L "/usr/share/doc/$package/copyright" "$root/usr/share/doc/$package/copyright"
  echo "$package $directory/$(basename "$library")"
done
