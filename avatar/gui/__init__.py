"""PySide6 desktop app. No model or rendering logic here: see avatar.pipeline."""
from avatar.gui.app import main_window, run_app

__all__ = ["main_window", "run_app"]
