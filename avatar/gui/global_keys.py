"""Global hotkeys in the Qt event loop: avatar.hotkeys' X connection watched by a QSocketNotifier."""
from __future__ import annotations

from PySide6.QtCore import QObject, QSocketNotifier, Signal

from avatar.hotkeys import GlobalHotkeys, HotkeyError

__all__ = ["GlobalKeys", "HotkeyError"]


class GlobalKeys(QObject):
    """Emits `pressed(name)` for each grabbed key pressed, whichever window has the focus."""

    pressed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._keys: GlobalHotkeys | None = None
        self._notifier: QSocketNotifier | None = None

    @property
    def active(self) -> bool:
        return self._keys is not None

    def start(self, keys: dict[str, str]) -> None:
        """Grab `keys` ({name: "Ctrl+Alt+1"}); raises HotkeyError with the reason where the desktop refuses."""
        self.stop()
        self._keys = GlobalHotkeys(keys)
        self._notifier = QSocketNotifier(self._keys.fileno(), QSocketNotifier.Read, self)
        self._notifier.activated.connect(self._readable)
        self._readable()  # anything that came with the grabs' reply

    def _readable(self, *_):
        if self._keys is not None:
            for name in self._keys.take():
                self.pressed.emit(name)

    def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.setEnabled(False)
            self._notifier.deleteLater()
            self._notifier = None
        if self._keys is not None:
            self._keys.close()
            self._keys = None
