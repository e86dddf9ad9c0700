"""PySide6 desktop app: widgets and signals only. What the app does is avatar.controller (Qt-free)."""
from avatar.gui.app import main_window, run_app

__all__ = ["main_window", "run_app"]
