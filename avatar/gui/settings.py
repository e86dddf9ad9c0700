"""User preferences (avatar.preferences), kept with QSettings between runs."""
from __future__ import annotations

from dataclasses import asdict, fields
import json
import logging

from PySide6.QtCore import QSettings

from avatar.preferences import (BACKGROUNDS, DISPLAY_RATES, GAIN_RANGE_DB, GATE_RANGE_DB, GREEN_SCREEN,
                                MAX_RECENT_PHOTOS, RECORD_FPS_RANGE, SIZE_RANGE, SIZES, VALID, Preferences,
                                default_output_folder, invalid_message)

__all__ = ["APPLICATION", "BACKGROUNDS", "DISPLAY_RATES", "GAIN_RANGE_DB", "GATE_RANGE_DB", "GREEN_SCREEN",
           "MAX_RECENT_PHOTOS", "ORGANIZATION", "RECORD_FPS_RANGE", "SIZES", "SIZE_RANGE", "Preferences",
           "default_output_folder", "invalid_message", "load_preferences", "save_preferences"]

log = logging.getLogger(__name__)

ORGANIZATION = "talking-avatar"
APPLICATION = "avatar"


def _settings() -> QSettings:
    return QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)


def load_preferences() -> Preferences:
    """The stored preferences; each value that is unreadable or out of range is replaced by its default and its
    name listed in the returned object's `invalid` (see invalid_message)."""
    stored, prefs = _settings(), Preferences()
    prefs.invalid = []
    for f in fields(Preferences):
        raw = stored.value(f.name)
        if raw is None:
            continue
        default = getattr(prefs, f.name)
        try:  # values come back as strings from the ini file: coerce to the field's type
            if isinstance(default, (dict, list)):
                value = json.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(value, type(default)):
                    raise TypeError(f"not a {type(default).__name__}")
            elif isinstance(default, bool):  # the ini file gives "true"/"false" back, and bool("false") is True
                value = _parse_bool(raw)
            else:
                value = type(default)(raw)
            if f.name in VALID and not VALID[f.name](value):
                raise ValueError("out of range")
        except (TypeError, ValueError) as e:
            log.warning("setting %s=%r ignored (%s); using %r", f.name, raw, e, default)
            prefs.invalid.append(f.name)
            continue
        setattr(prefs, f.name, value)
    return prefs


def _parse_bool(raw) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError("not true or false")
    return text in ("true", "1")


def save_preferences(prefs: Preferences) -> None:
    stored = _settings()
    for key, value in asdict(prefs).items():
        stored.setValue(key, json.dumps(value) if isinstance(value, (dict, list)) else value)
    stored.sync()
