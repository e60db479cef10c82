#!/usr/bin/env bash
# Start a Docker engine if none answers, and build the demo images locally (nothing is pulled).
# Idempotent; used by the demo, the tests and the benchmarks. Needs Debian's docker.io and
# busybox-static (scripts/setup.sh installs them). No systemd: dockerd runs in the background and
# logs to var/dockerd.log.
#   bash scripts/docker-up.sh
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
say() { printf 'docker-up: %s\n' "$*"; }

if docker info >/dev/null 2>&1; then
    say "a Docker engine is running"
else
    command -v dockerd >/dev/null || { say "dockerd is not installed (apt-get install docker.io)"; exit 1; }
    mkdir -p var
    say "starting dockerd (log: var/dockerd.log)"
    nohup dockerd >var/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { say "dockerd did not come up; see var/dockerd.log"; tail -20 var/dockerd.log; exit 1; }
    say "dockerd is up"
fi
.venv/bin/python -m demo.images
