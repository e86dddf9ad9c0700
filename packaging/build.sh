#!/usr/bin/env bash
# Builds the one-folder desktop bundle from a clean checkout, then checks it headless.
#   bash packaging/build.sh            -> dist/talking-avatar/ (run dist/talking-avatar/talking-avatar)
#                                         dist/talking-avatar-linux-x86_64.tar.gz
# Needs: python3 (3.10-3.12) with venv; Debian/Ubuntu: libportaudio2 (bundled from the build machine).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-build/pkg-venv}

# a runtime-only environment: the app's own dependencies, no torch, no training extras
rm -rf "$VENV" build/pyinstaller dist/talking-avatar
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip
"$VENV/bin/pip" install -q -c packaging/bundle-constraints.txt . "pyinstaller>=6.10"
# The bundle takes OpenCV's headless build of the same version in place of opencv-contrib-python (which
# mediapipe declares): exactly one cv2 either way, and no second Qt 5 copy or contrib modules in the bundle.
CV_VERSION=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('opencv-contrib-python'))")
"$VENV/bin/pip" uninstall -q -y opencv-contrib-python
# (both distributions write the same cv2/ folder: reinstall so the files are really there)
"$VENV/bin/pip" install -q --force-reinstall --no-deps "opencv-python-headless==$CV_VERSION"
"$VENV/bin/python" -c "import cv2" || { echo "no usable cv2 in the build environment" >&2; exit 1; }
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch leaked into the runtime environment" >&2; exit 1
fi

"$VENV/bin/pyinstaller" --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
  packaging/talking-avatar.spec
# placeholders for the HEVC/AV1 encoder libraries PyAV links but the app never opens (-28 MB)
"$VENV/bin/python" packaging/stub_unused_codecs.py dist/talking-avatar/_internal/av.libs
cp packaging/talking-avatar.desktop packaging/talking-avatar.png packaging/install-desktop-entry.sh dist/talking-avatar/

echo "bundle size: $(du -sm dist/talking-avatar | cut -f1) MB"
# the bundle must pass its own self-test headless (offscreen Qt, no sound server needed)
QT_QPA_PLATFORM=offscreen AVATAR_CACHE_DIR="$ROOT/build/selftest-cache" \
  dist/talking-avatar/talking-avatar --self-test
tar -C dist -czf dist/talking-avatar-linux-$(uname -m).tar.gz talking-avatar
echo "archive: $(du -sm dist/talking-avatar-linux-$(uname -m).tar.gz | cut -f1) MB"
