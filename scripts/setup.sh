#!/usr/bin/env bash
# Set up everything the project needs on a Debian/Ubuntu machine: the system libraries Qt needs,
# then a .venv with the project and ONNX Runtime (the faster CPU backend; the app runs without it).
# With --test, also the test and packaging tools (pytest, pytest-qt, PyInstaller, and the C compiler
# the CPU-only installer build needs). Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
TESTING=""; [ "${1:-}" = "--test" ] && TESTING=1
EXTRAS="[onnx]"
[ -n "$TESTING" ] && EXTRAS="[test,packaging,onnx]"

QT_PACKAGES=(libegl1 libgl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
  libxcb-render-util0 libxcb-image0 libxcb-xkb1)

[ -n "$TESTING" ] && QT_PACKAGES+=(gcc binutils)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${QT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3.11-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".$EXTRAS"
echo "setup: done (.venv ready)"
