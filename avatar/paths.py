"""Where the app finds its shipped assets and keeps its caches."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from platformdirs import user_cache_dir


def assets_dir() -> Path:
    """The shipped `assets/` folder: beside the package in a checkout, or inside a PyInstaller bundle."""
    env = os.environ.get("AVATAR_ASSETS")
    if env:
        return Path(env)
    bundle = getattr(sys, "_MEIPASS", None)
    candidates = [Path(bundle) / "assets"] if bundle else []
    candidates += [Path(__file__).resolve().parent.parent / "assets",
                   Path(sys.prefix) / "share" / "talking-avatar" / "assets"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def default_photo() -> str:
    """The shipped default face ('' when this install has none)."""
    for name in ("default_face.jpg", "default_face.png"):
        path = assets_dir() / name
        if path.is_file():
            return str(path)
    return ""


def cache_dir() -> Path:
    """The user's cache folder for built engines (created on demand)."""
    env = os.environ.get("AVATAR_CACHE_DIR")
    if env:
        path = Path(env)
    else:
        path = Path(user_cache_dir("talking-avatar"))
    path.mkdir(parents=True, exist_ok=True)
    return path
