"""The Qt binding itself. PySide6 6.12.0's Signal.emit() released a reference to True that it did not own on every
call; on Python 3.11 (where True is not immortal) the live window, which emits a signal per frame, aborted with
"Fatal Python error: bool_dealloc" within seconds. pyproject.toml excludes that release; this test catches any other."""
import sys

import pytest

EMITS = 50


def test_signal_emit_keeps_reference_counts():
    PySide6 = pytest.importorskip("PySide6")
    from PySide6 import QtCore

    class Events(QtCore.QObject):
        frame = QtCore.Signal()
        message = QtCore.Signal(str)

    app = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])  # noqa: F841 (signals need an app)
    events, received = Events(), []
    events.frame.connect(lambda: received.append(None))
    events.message.connect(received.append)
    before = sys.getrefcount(True)
    for _ in range(EMITS):
        events.frame.emit()
        events.message.emit("x")
    lost = before - sys.getrefcount(True)
    assert len(received) == 2 * EMITS
    assert lost < EMITS, (f"{2 * EMITS} signal emits released {lost} references to True they did not own "
                          f"(PySide6 {PySide6.__version__}): the live window would abort within seconds")
