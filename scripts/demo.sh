#!/usr/bin/env bash
# The README's first command: installs what the demo needs, then guards two real rollouts end to end.
#   bash scripts/demo.sh [--workdir DIR]
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
bash scripts/setup.sh prometheus
exec .venv/bin/python -m guardian.demo.run "$@"
