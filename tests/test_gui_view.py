"""The avatar view: each frame scaled once when it arrives, painted without scaling, looking as before."""
import numpy as np
import pytest


def _frame(size=512) -> np.ndarray:
    """A smooth colour gradient with a sharp-edged square: scaling differences show at the edges."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([255 * x, 255 * y, 255 * (1 - x) * y], -1)
    rgb[size // 3: size // 2, size // 3: size // 2] = (250, 250, 30)
    return rgb.astype(np.uint8)


def _grab_rgb(widget) -> np.ndarray:
    from PySide6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format_RGB888)
    w, h = image.width(), image.height()
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(h, image.bytesPerLine())
    return rows[:, :3 * w].reshape(h, w, 3).copy()  # a copy: the QImage goes when this returns


def _old_paint(frame: np.ndarray, view_w: int, view_h: int) -> np.ndarray:
    """What the view showed before: the RGB frame drawn smooth-scaled into the view by Qt on every paint."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QImage, QPainter

    from avatar.gui.view import to_qimage

    canvas = QImage(view_w, view_h, QImage.Format_RGB888)
    painter = QPainter(canvas)
    painter.fillRect(0, 0, view_w, view_h, QColor(24, 24, 24))
    image = to_qimage(frame)
    scale = min(view_w / image.width(), view_h / image.height())
    w, h = image.width() * scale, image.height() * scale
    painter.setRenderHint(QPainter.SmoothPixmapTransform)
    painter.drawImage(QRectF((view_w - w) / 2, (view_h - h) / 2, w, h), image)
    painter.end()
    return np.frombuffer(canvas.constBits(), np.uint8).reshape(view_h, canvas.bytesPerLine())[:, :3 * view_w] \
        .reshape(view_h, view_w, 3).copy()


@pytest.fixture
def view(qtbot):
    from avatar.gui.view import AvatarView

    v = AvatarView()
    qtbot.addWidget(v)
    v.resize(640, 560)
    v.show()
    qtbot.waitExposed(v)
    return v


def test_frames_are_scaled_once_on_arrival_and_painted_unscaled(view, qtbot):
    frame = _frame()
    view.show_frame(frame)
    qtbot.wait(50)
    shown = _grab_rgb(view)
    ratio = view.devicePixelRatioF()
    assert (view._image.width(), view._image.height()) == (round(560 * ratio), round(560 * ratio))
    assert view.scaled_paints == 0  # no paint scaled the image: it was made at the size it is shown
    before = _old_paint(frame, 640, 560)
    assert shown.shape == before.shape
    # the same picture as the per-paint smooth scaling gave: grey bars either side, the scaled frame between
    assert np.abs(shown.astype(int) - before.astype(int)).mean() < 1.5
    assert (shown[:, :35] == 24).all() and (shown[:, -35:] == 24).all()


def test_a_resize_between_frames_rescales_the_frame_it_shows(view, qtbot):
    view.show_frame(_frame())
    qtbot.wait(20)
    view.resize(400, 700)
    qtbot.waitUntil(lambda: view.width() == 400, timeout=2000)
    qtbot.wait(50)
    shown = _grab_rgb(view)
    assert view.scaled_paints == 0
    assert (view._image.width(), view._image.height()) == (round(400 * view.devicePixelRatioF()),) * 2
    before = _old_paint(_frame(), 400, 700)
    assert np.abs(shown.astype(int) - before.astype(int)).mean() < 1.5


def test_fitted_size_keeps_the_aspect_ratio_inside_the_view():
    from avatar.gui.view import fitted_size

    assert fitted_size(512, 512, 640, 560) == (560, 560)
    assert fitted_size(512, 256, 300, 1000) == (300, 150)
    assert fitted_size(512, 512, 0, 10) == (1, 1)
