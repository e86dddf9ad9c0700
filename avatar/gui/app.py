"""Entry points: `run_app(argv)` (what `avatar` with no arguments runs) and `main_window()`."""
from __future__ import annotations

import logging
import sys
import traceback

from PySide6.QtWidgets import QApplication

from avatar.engine import create_engine, live_model_path
from avatar.face.assemble import open_renderer
from avatar.gui.settings import (APPLICATION, ORGANIZATION, invalid_message, load_preferences,
                                 save_preferences)
from avatar.gui.window import MainWindow
from avatar.paths import default_photo

log = logging.getLogger(__name__)


def real_engine_factory(backend: str):
    """The live view's engine: the zero-look-ahead model."""
    return create_engine(backend, live_model_path())


def real_offline_engine_factory(backend: str):
    """File → Export video's engine: the default (20 ms look-ahead) model; a file need not answer at once."""
    return create_engine(backend)


def real_renderer_factory(photo: str, prefs, landmarks=None):
    return open_renderer(photo, size=prefs.canvas, background=prefs.background_rgb, liveliness=prefs.liveliness,
                         landmarks=landmarks)


def main_window(prefs=None, engine_factory=None, renderer_factory=None, offline_engine_factory=None):
    """The main window with the real engines and renderer; needs a QApplication. Opens the last (or default) photo.
    A given `engine_factory` also serves exports unless `offline_engine_factory` is given too. An engine that
    cannot start leaves the window open with a closed mouth and the reason (avatar.controller.Controller)."""
    prefs = prefs or load_preferences()
    if engine_factory is None:
        engine_factory = real_engine_factory
        offline_engine_factory = offline_engine_factory or real_offline_engine_factory
    window = MainWindow(prefs, engine_factory, renderer_factory or real_renderer_factory,
                        offline_engine_factory or engine_factory)
    repaired = invalid_message(prefs)
    if repaired:  # said once: the defaults are stored in their place
        window.show_error(repaired, "Settings reset")
        save_preferences(prefs)
        prefs.invalid = []
    photo = prefs.photo or default_photo()
    if photo:
        window.open_photo(photo)
    return window


def _excepthook(window_getter):
    def hook(kind, value, tb):
        log.error("unexpected error:\n%s", "".join(traceback.format_exception(kind, value, tb)))
        window = window_getter()
        if window is not None:
            window.show_error(f"Something went wrong: {value}", "Unexpected error")
    return hook


def run_app(argv: list[str] | None = None, backend: str | None = None) -> int:
    """The desktop app; `backend` (from `avatar --backend X`) replaces the saved backend setting."""
    app = QApplication.instance() or QApplication([sys.argv[0], *(argv or [])])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    window = None
    sys.excepthook = _excepthook(lambda: window)  # errors become dialogs, never tracebacks on screen
    prefs = load_preferences()
    if backend is not None:
        prefs.backend = backend
    window = main_window(prefs)
    window.resize(720, 760)
    window.show()
    return app.exec()
