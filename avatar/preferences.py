"""The user's preferences and the range each must lie in (Qt-free; avatar.gui.settings stores them with QSettings)."""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import re

from avatar.engine import normalize_backend
from avatar.serve.guard import DEFAULT_PORT

MAX_RECENT_PHOTOS = 8
DISPLAY_RATES = (60, 30)
SIZES = (256, 384, 512, 768)
FRAMES = ("square", "16:9")  # the render's shape: size x size, or 16:9 video framing size pixels high
WIDE_SIZES = (720, 1080)  # the heights the menu offers in 16:9: 1280x720, 1920x1080
BACKGROUNDS = ("photo", "color", "green")
GREEN_SCREEN = "#00ff00"  # pure green keys cleanly in OBS's chroma key filter
SIZE_RANGE = (64, 2048)  # as `avatar render --size` (the menu offers SIZES)
RECORD_FPS_RANGE = (1, 120)  # as `avatar render --fps`
GAIN_RANGE_DB = (-20.0, 30.0)  # the gain slider's range
GATE_RANGE_DB = (-100.0, -20.0)  # -100 = off; the slider's range above that
COLOUR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{0,64}")  # avatar.serve.guard.new_token's characters ("" = none yet)


def default_output_folder() -> str:
    """The user's videos folder as Qt names it, else the home folder."""
    try:  # optional here: the controller, and its tests, run without Qt
        from PySide6.QtCore import QStandardPaths
    except ImportError:
        return str(Path.home())
    videos = QStandardPaths.writableLocation(QStandardPaths.MoviesLocation)
    return videos or str(Path.home())


@dataclass
class Preferences:
    device: str = ""  # input device name; "" = the system default
    backend: str = "auto"
    fps: int = 60  # display rate
    record_fps: int = 30
    size: int = 512
    frame: str = "square"  # FRAMES: "16:9" renders a (16/9 size) x size frame (avatar.face.photo.wide_crop_box)
    background: str = "photo"  # photo | color | green
    background_color: str = "#202020"
    liveliness: dict = field(default_factory=dict)  # switch name -> on/off (avatar.face.LivelinessConfig fields)
    output_folder: str = field(default_factory=default_output_folder)
    name_prefix: str = "avatar"
    gain_db: float = 0.0
    gate_db: float = -100.0  # -100 = gate off
    photo: str = ""
    recent_photos: list = field(default_factory=list)
    always_on_top: bool = False  # the window over a game or a call (View → Always on top)
    global_hotkeys: bool = False  # expressions on Ctrl+Alt+1 … 5 from any window, where the desktop allows it
    face_choices: dict = field(default_factory=dict)  # photo path -> the face picked in it (0 = the largest)
    serve_port: int = DEFAULT_PORT  # the local server's port (avatar.serve: browser source, input endpoint)
    view_token: str = ""  # their tokens, made the first time each is turned on and kept (OBS's URL stays valid)
    input_token: str = ""

    @property
    def canvas(self) -> int | tuple[int, int]:
        """What the face is rendered on (avatar.face.build_rig's canvas): size for a square, (width, height) for
        16:9, its width rounded to an even number (H.264's yuv420p needs one)."""
        return (2 * round(self.size * 8 / 9), self.size) if self.frame == "16:9" else self.size

    def add_recent(self, path: str) -> None:
        self.recent_photos = [path] + [p for p in self.recent_photos if p != path]
        del self.recent_photos[MAX_RECENT_PHOTOS:]

    @property
    def background_rgb(self) -> tuple[int, int, int] | None:
        """None = keep the photo's own background."""
        if self.background == "photo":
            return None
        colour = GREEN_SCREEN if self.background == "green" else self.background_color
        colour = colour.lstrip("#")
        return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))


def _in(lo, hi):
    return lambda v: lo <= v <= hi and math.isfinite(v)


def _backend_ok(name: str) -> bool:
    try:
        normalize_backend(name)
    except ValueError:
        return False
    return True


def _prefix_ok(text: str) -> bool:  # what avatar.controller.clean_name_prefix keeps: no path separators
    return bool(text.strip()) and all(c.isalnum() or c in " -_" for c in text)


# each stored value must pass its check or the default takes its place: a hand-edited or damaged avatar.ini must
# not stop the app starting (size=99999, gain_db=nan) or break it later (record_fps=0)
VALID = {
    "backend": _backend_ok,
    "fps": lambda v: v in DISPLAY_RATES,
    "record_fps": _in(*RECORD_FPS_RANGE),
    "size": _in(*SIZE_RANGE),
    "frame": lambda v: v in FRAMES,
    "background": lambda v: v in BACKGROUNDS,
    "background_color": lambda v: COLOUR_PATTERN.fullmatch(v) is not None,
    "liveliness": lambda v: all(isinstance(k, str) and isinstance(on, bool) for k, on in v.items()),
    "name_prefix": _prefix_ok,
    "gain_db": _in(*GAIN_RANGE_DB),
    "gate_db": _in(*GATE_RANGE_DB),
    "recent_photos": lambda v: all(isinstance(p, str) for p in v),
    "serve_port": _in(1024, 65535),
    "view_token": lambda v: TOKEN_PATTERN.fullmatch(v) is not None,
    "input_token": lambda v: TOKEN_PATTERN.fullmatch(v) is not None,
    "face_choices": lambda v: all(isinstance(p, str) and type(i) is int and i >= 0 for p, i in v.items()),
}


def invalid_message(prefs: Preferences) -> str | None:
    """One sentence naming the settings that were replaced by defaults on load, or None."""
    names = getattr(prefs, "invalid", [])
    if not names:
        return None
    return f"Some saved settings were damaged or out of range and were reset to their defaults: {', '.join(names)}."
