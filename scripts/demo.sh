#!/usr/bin/env bash
# The README's first command: installs what the demo needs (Debian's prometheus, docker.io, nginx,
# busybox-static; the virtual environment), starts dockerd if none answers, builds the demo images
# locally, then guards three real container rollouts end to end (the third is rolled back in its bake).
#   bash scripts/demo.sh [--workdir DIR] [--rps N] [--json]
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
bash scripts/setup.sh prometheus docker.io nginx busybox-static
bash scripts/docker-up.sh
exec .venv/bin/python -m demo.run "$@"
