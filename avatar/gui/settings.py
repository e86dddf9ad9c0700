"""User preferences, kept with QSettings between runs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
import json
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

ORGANIZATION = "talking-avatar"
APPLICATION = "avatar"
MAX_RECENT_PHOTOS = 8
DISPLAY_RATES = (60, 30)
SIZES = (256, 384, 512, 768)
BACKGROUNDS = ("photo", "color", "green")
GREEN_SCREEN = "#00ff00"  # pure green keys cleanly in OBS's chroma key filter


def default_output_folder() -> str:
    videos = QStandardPaths.writableLocation(QStandardPaths.MoviesLocation)
    return videos or str(Path.home())


@dataclass
class Preferences:
    device: str = ""  # input device name; "" = the system default
    backend: str = "auto"
    fps: int = 60  # display rate
    record_fps: int = 30
    size: int = 512
    background: str = "photo"  # photo | color | green
    background_color: str = "#202020"
    liveliness: dict = field(default_factory=dict)  # switch name -> on/off (avatar.face.LivelinessConfig fields)
    output_folder: str = field(default_factory=default_output_folder)
    name_prefix: str = "avatar"
    gain_db: float = 0.0
    gate_db: float = -100.0  # -100 = gate off
    photo: str = ""
    recent_photos: list = field(default_factory=list)

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


def _settings() -> QSettings:
    return QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)


def load_preferences() -> Preferences:
    stored, prefs = _settings(), Preferences()
    for f in fields(Preferences):
        raw = stored.value(f.name)
        if raw is None:
            continue
        default = getattr(prefs, f.name)
        try:  # values come back as strings from the ini file: coerce to the field's type, ignore junk
            if isinstance(default, (dict, list)):
                value = json.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(value, type(default)):
                    continue
            else:
                value = type(default)(raw)
        except (TypeError, ValueError):
            continue
        setattr(prefs, f.name, value)
    if prefs.fps not in DISPLAY_RATES:
        prefs.fps = DISPLAY_RATES[0]
    if prefs.background not in BACKGROUNDS:
        prefs.background = "photo"
    return prefs


def save_preferences(prefs: Preferences) -> None:
    stored = _settings()
    for key, value in asdict(prefs).items():
        stored.setValue(key, json.dumps(value) if isinstance(value, (dict, list)) else value)
    stored.sync()
