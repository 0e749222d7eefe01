#!/usr/bin/env bash
# Build the default sandbox image offline-from-registries: a Debian root made by debootstrap
# from the distribution's own mirror, loaded with `docker import`. No container registry.
# Usage: build.sh TAG [MIRROR]   (run as root; needs debootstrap and a Docker engine)
set -euo pipefail
tag=$1
mirror=${2:-http://deb.debian.org/debian}
suite=bookworm
here=$(cd "$(dirname "$0")" && pwd)
packages=$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)
work=$(mktemp -d /var/tmp/potluck-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "image: debootstrap $suite (minbase + $packages)"
# Progress, not noise: warnings and errors in full, a line every 50 steps otherwise.
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" 2>&1 \
  | awk '/^(E|W):/ { print "image:   " $0; fflush(); next }
         { n++; if (n % 50 == 0) { print "image:   " n " steps: " $0; fflush() } }'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "image: debootstrap failed" >&2; exit 1; }

echo "image: adding the unprivileged sandbox user and the workspace"
echo 'sandbox:x:10001:10001:Potluck sandbox:/workspace:/bin/bash' >>"$root/etc/passwd"
echo 'sandbox:x:10001:' >>"$root/etc/group"
echo 'sandbox:!:19000:0:99999:7:::' >>"$root/etc/shadow"
mkdir -p "$root/workspace" && chown 10001:10001 "$root/workspace"
# setuid/setgid bits are useless under no-new-privileges; remove them anyway.
find "$root" -xdev -perm /6000 -type f -exec chmod ug-s {} +
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
  "$root"/usr/share/man "$root"/usr/share/locale/*

echo "image: importing as $tag"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME=/workspace' \
  --change 'WORKDIR /workspace' \
  --change 'USER 10001:10001' \
  --change 'CMD ["/usr/bin/tini", "--", "sleep", "infinity"]' \
  --message "potluck sandbox image" - "$tag" >/dev/null
echo "image: done"
