#!/usr/bin/env bash
# README command 1: set up, then open napari with the sample endoscopy frame and TransFuse run on it.
# Extra arguments go to the demo, e.g. --screenshot docs/screenshot.png (needs a display; under
# a headless session prefix with xvfb-run -a).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_API=pyqt6
exec .venv/bin/python -m napari_medvit.widgets.demo "$@"
