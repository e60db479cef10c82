#!/usr/bin/env bash
# The test command of the README: installs what the tests need (Debian's prometheus, docker.io,
# nginx, busybox-static; the .venv), starts a Docker engine and builds the demo images, then runs
# the whole suite. The fixtures start every other server the tests talk to (Prometheus, nginx, the
# demo app, a webhook receiver) on free loopback ports and stop them afterwards.
#   bash scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
bash scripts/setup.sh prometheus docker.io nginx busybox-static
bash scripts/docker-up.sh
start=$(date +%s)
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
echo "test suite took $(( $(date +%s) - start )) s"
[ "$rc" -eq 5 ] && { echo "no tests were collected"; exit 1; }
exit "$rc"
