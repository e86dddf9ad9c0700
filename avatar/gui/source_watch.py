"""Hot-plugged microphones: avatar.devices.SourceEvents (`pactl subscribe`) watched in the Qt event loop."""
from __future__ import annotations

from PySide6.QtCore import QObject, QSocketNotifier, QTimer, Signal

from avatar.devices import SourceEvents

SETTLE_MS = 300  # a device arriving brings several events (card, sink, source): one refresh after they settle
RESTART_MS = 5000  # pactl ended (the sound server stopped or restarted): try watching again this often


class SourceWatch(QObject):
    """Emits `changed` once the sound server's sources have changed (and settled)."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._events: SourceEvents | None = None
        self._notifier: QSocketNotifier | None = None
        self._settle = QTimer(self, singleShot=True, interval=SETTLE_MS)
        self._settle.timeout.connect(self.changed.emit)
        self._restart = QTimer(self, singleShot=True, interval=RESTART_MS)
        self._restart.timeout.connect(self._start_again)

    @property
    def watching(self) -> bool:
        return self._events is not None

    def start(self) -> bool:
        """Watch where a sound server answers; False elsewhere (the list is refreshed by hand there)."""
        self.stop()
        self._events = SourceEvents.start()
        if self._events is None:
            return False
        self._notifier = QSocketNotifier(self._events.fileno(), QSocketNotifier.Read, self)
        self._notifier.activated.connect(self._readable)
        return True

    def _readable(self, *_):
        events = self._events
        if events is None:
            return
        if events.take():
            self._settle.start()
        if events.ended:  # the server went away: its sources with it; watch again once one answers
            self.stop()
            self._settle.start()
            self._restart.start()

    def _start_again(self):
        if not self.start():
            self._restart.start()
        else:
            self._settle.start()  # what changed while nobody watched

    def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.setEnabled(False)
            self._notifier.deleteLater()
            self._notifier = None
        if self._events is not None:
            self._events.close()
            self._events = None

    def close(self) -> None:
        self._restart.stop()
        self._settle.stop()
        self.stop()
