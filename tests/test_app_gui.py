import numpy as np
import pytest

from tests.conftest import SimpleFrames, loudness_model, tone_bursts, write_wav


@pytest.fixture
def window(qtbot, qsettings, tmp_path):
    from avatar.engine import create_engine
    from avatar.gui.settings import load_preferences
    from avatar.gui.window import MainWindow

    prefs = load_preferences()
    prefs.output_folder = str(tmp_path)
    w = MainWindow(prefs, lambda backend: create_engine("torch", model=loudness_model()),
                   lambda photo, prefs: SimpleFrames(prefs.size // 4))
    qtbot.addWidget(w)
    w.show()
    w.open_photo(str(tmp_path / "face.png"))
    qtbot.waitUntil(lambda: w.pipeline.renderer is w.renderer and w.renderer is not None, timeout=5000)
    yield w
    w.close()


def test_window_shows_frames_made_off_the_gui_thread(window, qtbot):
    qtbot.waitUntil(lambda: window.view.frames_shown > 20, timeout=5000)
    qtbot.wait(600)
    fps, _ = window.view_stats()
    assert fps > 20
    assert "PyTorch" in window.backend_label.text()
    assert window.fps_label.text().endswith("fps")
