#!/usr/bin/env bash
# Build the Linux installers of the ConvNeXt Brain MRI Viewer with PyInstaller (one-folder app):
#
#   packaging/build_linux.sh [--cpu] [--deb] [--format gz|xz|none] [--self-test] [--dist DIR] [--work DIR]
#
#   (default)    the "full" variant: torch as installed (PyPI's CUDA build with its nvidia-* libraries, GPU ready)
#                -> dist/convnest-viewer/ and dist/convnest-viewer-<version>-linux-x86_64.tar.gz
#   --cpu        the "cpu" variant: NVIDIA's CUDA libraries left out (packaging/cuda_stubs.py explains how)
#                -> dist/convnest-viewer/ and dist/convnest-viewer-<version>-linux-x86_64-cpu.tar.gz
#   --deb        also a Debian package (installs to /opt/convnest-viewer, `convnest-viewer` on the PATH)
#   --format     archive compression: gz (default), xz (smaller, much slower), none
#   --self-test  run the frozen app's --self-test (offscreen, on the CPU) after building
#   --model DIR  with --self-test: the model folder to test with (default: the bundled default model)
#   --dist DIR   output folder (default: dist); --work DIR: PyInstaller's work folder (default: build)
#
# The bundled resources are resources/ (or $CONVNEST_BUNDLE_RESOURCES): whatever models are there at build time.
# Needs the project's virtual environment with the packaging extra: pip install -e ".[packaging]"
# ($PYTHON selects the interpreter, default .venv/bin/python). The cpu variant needs a C compiler (gcc).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"

PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
VARIANT=full
DIST=dist
WORK=build
FORMAT=gz
DEB=0
SELF_TEST=0
MODEL=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) VARIANT=cpu ;;
    --full) VARIANT=full ;;
    --deb) DEB=1 ;;
    --format) FORMAT="$2"; shift ;;
    --format=*) FORMAT="${1#*=}" ;;
    --no-archive) FORMAT=none ;;
    --self-test) SELF_TEST=1 ;;
    --model) MODEL="$2"; shift ;;
    --model=*) MODEL="${1#*=}" ;;
    --dist) DIST="$2"; shift ;;
    --dist=*) DIST="${1#*=}" ;;
    --work) WORK="$2"; shift ;;
    --work=*) WORK="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build_linux.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$FORMAT" in gz|xz|none) ;; *) echo "build_linux.sh: --format must be gz, xz or none" >&2; exit 2 ;; esac
mkdir -p "$DIST" "$WORK"
DIST="$(cd "$DIST" && pwd)"
WORK="$(cd "$WORK" && pwd)"

"$PYTHON" -c 'import PyInstaller' 2>/dev/null || {
  echo "build_linux.sh: PyInstaller is missing: $PYTHON -m pip install -e '.[packaging]'" >&2; exit 1; }
VERSION="$("$PYTHON" -c 'import convnest_viewer; print(convnest_viewer.__version__)')"
ARCH="$(uname -m)"
SUFFIX=""
[ "$VARIANT" = cpu ] && SUFFIX="-cpu"
BASENAME="convnest-viewer-$VERSION-linux-$ARCH$SUFFIX"
APP="$DIST/convnest-viewer"

echo "build_linux.sh: building the $VARIANT variant of convnest-viewer $VERSION into $APP"
started=$(date +%s)
CONVNEST_BUNDLE_VARIANT="$VARIANT" "$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$DIST" --workpath "$WORK/pyinstaller-$VARIANT" packaging/convnest_viewer.spec
built=$(date +%s)
GLIBC="$(ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+$' || echo unknown)"
{
  cat packaging/linux/README-bundle.txt
  echo
  echo "Build: convnest-viewer $VERSION, $VARIANT variant, $(date -u +%Y-%m-%d), $ARCH, glibc $GLIBC or newer needed,"
  echo "       $("$PYTHON" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")' 2>/dev/null)"
} > "$APP/README.txt"
echo "build_linux.sh: PyInstaller took $((built - started)) s; $(du -sh "$APP" | cut -f1) in $APP"

if [ "$FORMAT" != none ]; then
  rm -f "$DIST/$BASENAME".tar.*
  if [ "$FORMAT" = xz ]; then
    ARCHIVE="$DIST/$BASENAME.tar.xz"
    tar -C "$DIST" -cf - convnest-viewer | xz -T0 -6 > "$ARCHIVE.part"
  else
    ARCHIVE="$DIST/$BASENAME.tar.gz"
    if command -v pigz >/dev/null 2>&1; then GZIP_CMD=(pigz -6); else GZIP_CMD=(gzip -6); fi
    tar -C "$DIST" -cf - convnest-viewer | "${GZIP_CMD[@]}" > "$ARCHIVE.part"
  fi
  mv "$ARCHIVE.part" "$ARCHIVE"
  echo "build_linux.sh: archive $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)) after $(( $(date +%s) - built )) s"
fi

if [ "$DEB" = 1 ]; then
  command -v dpkg-deb >/dev/null 2>&1 || { echo "build_linux.sh: --deb needs dpkg-deb" >&2; exit 1; }
  deb_started=$(date +%s)
  STAGE="$WORK/deb-$VARIANT"
  rm -rf "$STAGE"
  mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/icons/hicolor/256x256/apps"
  cp -a "$APP" "$STAGE/opt/convnest-viewer"
  ln -s /opt/convnest-viewer/convnest-viewer "$STAGE/usr/bin/convnest-viewer"
  cp packaging/linux/convnest-viewer.desktop "$STAGE/usr/share/applications/"
  cp resources/icons/convnest.png "$STAGE/usr/share/icons/hicolor/256x256/apps/convnest-viewer.png"
  DEB_ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
  INSTALLED_KB="$(du -sk "$STAGE" | cut -f1)"
  DEB_NAME="convnest-viewer"
  [ "$VARIANT" = cpu ] && DEB_NAME="convnest-viewer-cpu"
  sed -e "s/@NAME@/$DEB_NAME/" -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$DEB_ARCH/" -e "s/@SIZE@/$INSTALLED_KB/" \
    -e "s/@GLIBC@/$GLIBC/" \
    packaging/linux/control.in > "$STAGE/DEBIAN/control"
  DEB_FILE="$DIST/${DEB_NAME}_${VERSION}_${DEB_ARCH}.deb"
  # gzip: xz makes it ~25% smaller but takes ~15x longer (measured: 13 min vs 1 min for the cpu variant)
  dpkg-deb --root-owner-group -Zgzip -z6 --build "$STAGE" "$DEB_FILE" >/dev/null
  rm -rf "$STAGE"
  echo "build_linux.sh: Debian package $DEB_FILE ($(du -h "$DEB_FILE" | cut -f1)) after $(( $(date +%s) - deb_started )) s"
fi

if [ "$SELF_TEST" = 1 ]; then
  echo "build_linux.sh: running the frozen self-test"
  MODEL_ARGS=()
  [ -n "$MODEL" ] && MODEL_ARGS=(--model "$MODEL")
  QT_QPA_PLATFORM=offscreen CONVNEST_SETTINGS_FILE="$WORK/self-test-settings.ini" \
    "$APP/convnest-viewer" --self-test --device cpu "${MODEL_ARGS[@]}"
fi
