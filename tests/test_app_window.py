"""The app with its real parts: the face renderer, the virtual microphone, the X display (screenshots)."""
import shutil
import subprocess
import time

import numpy as np
import pytest

from avatar.visemes import PARAM_NAMES
from tests.conftest import loudness_model, tone_bursts, write_wav

SIZE = 256


@pytest.fixture
def app_window(qtbot, qsettings, tmp_path, monkeypatch):
    """main_window() as `avatar` opens it, on the shipped default face, with the loudness network as its engine
    (a trained model is not shipped yet) and liveliness off so that only the mouth moves."""
    from avatar.engine import create_engine
    from avatar.gui import main_window
    from avatar.gui.settings import load_preferences

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    prefs = load_preferences()
    prefs.size, prefs.output_folder, prefs.liveliness = SIZE, str(tmp_path), {"enabled": False}
    w = main_window(prefs, engine_factory=lambda backend: create_engine("onnxruntime", model=loudness_model()))
    qtbot.addWidget(w)
    w.resize(600, 640)
    w.show()
    qtbot.waitUntil(lambda: w.controller.renderer is not None and w.controller.pipeline.latest is not None
                    and w.controller.pipeline.latest.image.shape[0] == SIZE, timeout=20000)
    yield w
    w.close()


def test_first_start_opens_the_default_face(app_window):
    from avatar.face import Renderer

    assert app_window.controller.prefs.photo.endswith("default_face.jpg")
    assert isinstance(app_window.controller.renderer, Renderer)
    assert app_window.controller.prefs.recent_photos == [app_window.controller.prefs.photo]


def _screenshot_of(widget, path) -> np.ndarray:
    """The widget's area of an external X screenshot (ImageMagick `import`), as RGB."""
    import cv2
    from PySide6.QtCore import QPoint

    subprocess.run(["import", "-window", "root", str(path)], check=True, timeout=20)
    shot = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    top_left = widget.mapToGlobal(QPoint(0, 0))
    ratio = widget.devicePixelRatioF()
    x, y = int(top_left.x() * ratio), int(top_left.y() * ratio)
    return shot[y:y + int(widget.height() * ratio), x:x + int(widget.width() * ratio)]


def _view_rect_of_frame(view, frame_shape):
    """Where the view draws the frame (it scales to fit, centred)."""
    h, w = frame_shape[:2]
    scale = min(view.width() / w, view.height() / h)
    x0, y0 = (view.width() - w * scale) / 2, (view.height() - h * scale) / 2
    return x0, y0, scale


def test_screenshot_shows_the_face_and_the_mouth_moves_with_speech(x_platform, app_window, virtual_mic, qtbot,
                                                                   tmp_path):
    import cv2

    if shutil.which("import") is None:
        pytest.skip("ImageMagick `import` (screenshots) is not installed; see .ci/av-env.sh")
    w = app_window
    w.refresh_devices()  # the virtual microphone is the default input
    assert w.device_box.currentIndex() > 0
    qtbot.waitUntil(lambda: w.controller.source_name != "silence", timeout=5000)
    qtbot.wait(300)
    closed = _screenshot_of(w.view, tmp_path / "closed.png")
    frame = w.controller.pipeline.latest.image
    x0, y0, scale = _view_rect_of_frame(w.view, frame.shape)
    drawn = closed[int(y0):int(y0 + SIZE * scale), int(x0):int(x0 + SIZE * scale)]
    expected = cv2.resize(frame, (drawn.shape[1], drawn.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(drawn.reshape(-1).astype(float), expected.reshape(-1).astype(float))[0, 1] > 0.95

    write_wav(tmp_path / "speech.wav", tone_bursts([0.2], 3.0, length=2.5), 16000)
    player = virtual_mic(tmp_path / "speech.wav", wait=False)
    try:
        qtbot.waitUntil(lambda: w.controller.pipeline.latest.params[PARAM_NAMES.index("jaw_open")] > 0.95, timeout=5000)
        qtbot.wait(100)
        opened = _screenshot_of(w.view, tmp_path / "open.png")
    finally:
        player.wait(timeout=10)
    diff = np.abs(opened.astype(int) - closed.astype(int)).sum(axis=2)
    mx0, my0, mx1, my1 = w.controller.renderer.rig.mouth_box
    pad = 10
    box = (slice(int(y0 + (my0 - pad) * scale), int(y0 + (my1 + 2 * pad) * scale)),
           slice(int(x0 + (mx0 - pad) * scale), int(x0 + (mx1 + pad) * scale)))
    upper_face = diff[:int(y0 + (2 * my0 - my1) * scale)]  # above the mouth by one mouth height: eyes, brows
    assert (diff[box] > 60).mean() > 0.10  # a good part of the mouth area changed (the jaw and chin go with it)
    assert (upper_face > 60).mean() < 0.005  # the upper face did not


def test_photo_without_a_face_goes_to_manual_placement(app_window, qtbot, tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    blank = (rng.uniform(100, 140, (400, 360, 3))).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "noface.png"), blank)
    app_window.open_photo(str(tmp_path / "noface.png"))
    from avatar.gui.placement import PlacementDialog

    qtbot.waitUntil(lambda: app_window.findChild(PlacementDialog) is not None, timeout=20000)
    dialog = app_window.findChild(PlacementDialog)
    assert dialog.isVisible()
    handles = dialog.handles()
    assert "chin" in handles and all(0 <= x <= 360 and 0 <= y <= 400 for x, y in handles.values())
    dialog.move_handle("chin", handles["chin"][0], handles["chin"][1] + 10)
    dialog.accept()
    qtbot.waitUntil(lambda: app_window.controller.prefs.photo.endswith("noface.png"), timeout=20000)
    assert app_window.controller.pipeline.renderer is app_window.controller.renderer


def test_unreadable_photo_is_a_message(app_window, qtbot, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    previous = app_window.controller.renderer
    app_window.open_photo(str(bad))
    from PySide6.QtWidgets import QMessageBox

    qtbot.waitUntil(lambda: any(box.isVisible() and "broken.jpg" in box.text()
                                for box in app_window.findChildren(QMessageBox)), timeout=10000)
    assert app_window.controller.renderer is previous


def test_green_screen_background(app_window, qtbot):
    app_window.set_background("green")
    qtbot.waitUntil(lambda: tuple(app_window.controller.pipeline.latest.image[2, 2]) == (0, 255, 0), timeout=20000)


def test_liveliness_switches_reach_the_renderer_and_are_remembered(app_window, qtbot):
    from avatar.gui.settings import load_preferences

    app_window.set_liveliness("enabled", True)
    app_window.set_liveliness("blinks", False)
    qtbot.waitUntil(lambda: app_window.controller.renderer.liveliness.config.enabled
                    and not app_window.controller.renderer.liveliness.config.blinks, timeout=20000)
    assert load_preferences().liveliness == {"enabled": True, "blinks": False}
    names = [a.text() for a in app_window.liveliness_menu.actions()]
    assert "blinks" in names and "sway" in names
