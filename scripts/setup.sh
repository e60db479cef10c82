#!/usr/bin/env bash
# Idempotent setup for a root shell on Debian 12 without systemd (CI, a fresh dev box):
#   scripts/setup.sh [DEBIAN_PACKAGE...]      (default: prometheus)
# - installs only the Debian packages that are missing (apt-get update runs only then);
# - creates .venv with `python3 -m venv` if it does not exist;
# - runs `pip install -e '.[test]'` only when pyproject.toml is newer than .venv/.setup-stamp.
# Running it again when nothing changed does nothing but print what it checked.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup: %s\n' "$*"; }

packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(prometheus)
[ -d .venv ] || packages+=(python3-venv)  # Debian's python3 needs it for `python3 -m venv`

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { say "need root to install: ${missing[*]}"; exit 1; }
    say "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "debian packages present: ${packages[*]}"
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi

stamp=.venv/.setup-stamp
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing the package: pip install -e '.[test]'"
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
else
    say ".venv is up to date with pyproject.toml"
fi
say "done"
