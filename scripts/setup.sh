#!/usr/bin/env bash
# Set up everything napari-medvit needs in ./.venv (idempotent; fast when nothing changed).
#   scripts/setup.sh            runtime + test dependencies, PyQt6
#   MEDVIT_SYSTEM_PACKAGES=0    never call apt-get (default: install missing Xvfb/GL packages when root)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: need Python >= 3.10 as '$PY' (set PYTHON=...)" >&2
  exit 1
fi

# System libraries for Qt/OpenGL and a virtual display for the tests (Debian/Ubuntu names).
APT_PACKAGES="xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libdbus-1-3 libfontconfig1 \
libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
libxcb-xfixes0 libxcb-shape0 libxcb-cursor0"
if command -v dpkg-query >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    if [ "${MEDVIT_SYSTEM_PACKAGES:-1}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "setup: installing system packages:$missing"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      echo "setup: missing system packages:$missing" >&2
      echo "setup: install them with: sudo apt-get install -y$missing" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.medvit-setup-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import napari_medvit" 2>/dev/null; then
  echo "setup: installing napari-medvit and its dependencies into .venv (torch pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[pyqt6,test]"
  echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, napari; print(f"torch {torch.__version__}, napari {napari.__version__}")'))"
