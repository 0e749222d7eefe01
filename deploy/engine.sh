#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io when missing and start dockerd
# when no daemon runs (these machines have no systemd). Idempotent; logs to /var/log/potluck-dockerd.log.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "engine: installing docker.io"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io iptables >/dev/null
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  as_root systemctl start docker
else
  echo "engine: starting dockerd (log: /var/log/potluck-dockerd.log)"
  as_root sh -c 'nohup dockerd >>/var/log/potluck-dockerd.log 2>&1 &'
fi
for _ in $(seq 1 60); do
  if as_root docker info >/dev/null 2>&1; then echo "engine: ready"; exit 0; fi
  sleep 0.5
done
echo "engine: dockerd did not answer within 30 s; see /var/log/potluck-dockerd.log" >&2
exit 1
