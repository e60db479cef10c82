#!/usr/bin/env bash
# The test command of the README: installs what the tests need (Debian's prometheus, the .venv),
# then runs the whole suite. The fixtures start every server the tests talk to (Prometheus, the
# demo app, a webhook receiver) on free loopback ports and stop them afterwards.
#   bash scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
bash scripts/setup.sh prometheus
start=$(date +%s)
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
echo "test suite took $(( $(date +%s) - start )) s"
[ "$rc" -eq 5 ] && { echo "no tests were collected"; exit 1; }
exit "$rc"
