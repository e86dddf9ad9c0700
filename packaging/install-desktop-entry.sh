#!/usr/bin/env bash
# Adds the unpacked bundle to the desktop menu of the current user (no root needed).
#   bash install-desktop-entry.sh [BUNDLE_DIR]    (default: the folder this script is in)
set -euo pipefail
BUNDLE=$(cd "${1:-$(dirname "$0")}" && pwd)
APPS=${XDG_DATA_HOME:-$HOME/.local/share}/applications
ICONS=${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps
mkdir -p "$APPS" "$ICONS"
cp "$BUNDLE/talking-avatar.png" "$ICONS/talking-avatar.png"
sed "s|^Exec=.*|Exec=\"$BUNDLE/talking-avatar\" %f|" "$BUNDLE/talking-avatar.desktop" > "$APPS/talking-avatar.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$APPS" || true
echo "Talking Avatar added to the menu ($APPS/talking-avatar.desktop)"
