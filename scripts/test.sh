#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (Qt tests on a virtual display via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_API=pyqt6
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_CACHE_HOME="$tmp/cache" XDG_DATA_HOME="$tmp/data" HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
