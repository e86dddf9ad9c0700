"""The manual placement dialog (avatar.gui.placement) driven with QTest: where its handles start, zoom, pan,
dragging and nudging handles, and labels that never cover each other."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from avatar.bench import faces as bf
from avatar.face import HANDLE_NAMES
from avatar.face import landmarks as lm
from avatar.face.detect import FaceBox
from avatar.face.manual import OPEN_EYES_AT, start_handles


def eyes_mid(handles) -> np.ndarray:
    return np.mean([handles[n] for n in ("right_eye_outer", "right_eye_inner", "left_eye_inner",
                                         "left_eye_outer")], axis=0)


def test_without_a_box_the_handles_start_in_the_upper_middle():
    handles = start_handles((900, 600, 3))
    assert set(handles) == set(HANDLE_NAMES)
    mid = eyes_mid(handles)
    assert mid[0] == pytest.approx(300, abs=1) and mid[1] == pytest.approx(OPEN_EYES_AT[1] * 900, abs=5)
    assert handles["chin"][1] < 0.6 * 900  # the face in the upper part, not on the body
    assert all(0 <= x < 600 and 0 <= y < 900 for x, y in handles.values())


@pytest.fixture(scope="module")
def portrait():
    """A portrait's photo, FaceMesh's points on it, and the full-range detector's box."""
    image, points = bf.portrait_faces()[0]
    return image, points, lm.face_boxes(image)[0]


def test_with_a_detector_box_the_handles_start_on_the_face(portrait):
    image, points, box = portrait
    handles = start_handles(image.shape, box)
    iod = np.hypot(*np.subtract(*lm.eye_centers(points)))
    truth = {name: points[list(idx), :2].mean(0) for name, idx in lm.HANDLES.items()}
    errors = {n: np.hypot(*(np.array(handles[n]) - truth[n])) / iod for n in HANDLE_NAMES}
    assert max(errors.values()) < 0.35, errors  # each within a third of the eye distance of where it belongs


def make_dialog(qtbot, image, box=None):
    from avatar.gui.placement import PlacementDialog

    dialog = PlacementDialog(image, "No face was found.", face_box=box)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    return dialog


@pytest.fixture
def tiny_face(portrait):
    """A 1280x860 photo with one 40 px face (between the ears) and its detector box (as if FaceMesh had failed)."""
    image, placed = bf.compose_group([portrait[:2]], (40,), (1280, 860))
    p = placed[0]
    return image, FaceBox(p.cx - 20, p.cy - 20, p.cx + 20, p.cy + 20, 0.9)


def overlaps(rects) -> list:
    return [(a, b) for (a, ra), (b, rb) in itertools.combinations(rects.items(), 2) if ra.intersects(rb)]


def test_a_tiny_face_starts_zoomed_in_with_readable_labels_apart(qtbot, tiny_face):
    image, box = tiny_face
    dialog = make_dialog(qtbot, image, box)
    fit = dialog.view.min_zoom
    assert dialog.view.zoom > 4 * fit  # the 40 px face is shown large enough to place points on
    for point in map(dialog.handle_point, HANDLE_NAMES):  # all in sight
        assert dialog.view.viewport().rect().contains(point)
    labels = dialog.label_rects()
    assert overlaps(labels) == []
    heights = {round(r.height()) for r in labels.values()}
    dialog.view.set_zoom(fit)  # the whole photo: the handles crowd into a few pixels, the labels still apart
    assert overlaps(dialog.label_rects()) == []
    assert {round(r.height()) for r in dialog.label_rects().values()} == heights  # same screen size at any zoom
    assert min(heights) >= 10


def test_wheel_and_keys_zoom_within_limits(qtbot, portrait):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    from avatar.gui.placement import MAX_ZOOM, ZOOM_STEP

    dialog = make_dialog(qtbot, portrait[0])
    view = dialog.view
    start = view.zoom

    def wheel(notches):
        centre = QPointF(view.viewport().rect().center())
        event = QWheelEvent(centre, QPointF(view.viewport().mapToGlobal(centre.toPoint())), QPoint(0, 0),
                            QPoint(0, 120 * notches), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
        QApplication.sendEvent(view.viewport(), event)

    wheel(1)
    assert view.zoom == pytest.approx(start * ZOOM_STEP)
    qtbot.keyClick(view, Qt.Key_Plus)
    assert view.zoom == pytest.approx(start * ZOOM_STEP ** 2)
    qtbot.keyClick(view, Qt.Key_Minus)
    assert view.zoom == pytest.approx(start * ZOOM_STEP)
    wheel(40)
    assert view.zoom == pytest.approx(MAX_ZOOM)
    qtbot.keyClick(view, Qt.Key_0)
    assert view.zoom == pytest.approx(view.min_zoom)
    wheel(-3)
    assert view.zoom == pytest.approx(view.min_zoom)  # never smaller than the whole photo


@pytest.mark.parametrize("how", ["middle button", "space and drag"])
def test_pan_moves_the_view_not_the_handles(qtbot, portrait, how):
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    dialog = make_dialog(qtbot, portrait[0])
    view = dialog.view
    view.set_zoom(4 * view.min_zoom)
    before = dialog.handles()
    bars = view.horizontalScrollBar().value(), view.verticalScrollBar().value()
    port = view.viewport()
    start = port.rect().center()
    button = Qt.MiddleButton if how == "middle button" else Qt.LeftButton
    if how == "space and drag":
        QTest.keyPress(view, Qt.Key_Space)
    # press on a spot without a handle, drag 60 px left and up
    start = next(p for p in (start, QPoint(20, 20), QPoint(port.width() - 20, 20)) if
                 all((dialog.handle_point(n) - p).manhattanLength() > 30 for n in HANDLE_NAMES))
    QTest.mousePress(port, button, Qt.NoModifier, start)
    for k in range(1, 7):
        QTest.mouseMove(port, start - QPoint(10 * k, 10 * k))
    QTest.mouseRelease(port, button, Qt.NoModifier, start - QPoint(60, 60))
    if how == "space and drag":
        QTest.keyRelease(view, Qt.Key_Space)
    after = view.horizontalScrollBar().value(), view.verticalScrollBar().value()
    assert after[0] - bars[0] == pytest.approx(60, abs=2) and after[1] - bars[1] == pytest.approx(60, abs=2)
    assert dialog.handles() == before


def test_drag_a_handle_then_nudge_it_with_the_arrow_keys(qtbot, portrait):
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    from avatar.gui.placement import NUDGE_FAST

    dialog = make_dialog(qtbot, portrait[0])
    view, port = dialog.view, dialog.view.viewport()
    x0, y0 = dialog.handles()["chin"]
    start = dialog.handle_point("chin")
    QTest.mousePress(port, Qt.LeftButton, Qt.NoModifier, start)
    for k in range(1, 5):
        QTest.mouseMove(port, start + QPoint(5 * k, 3 * k))
    QTest.mouseRelease(port, Qt.LeftButton, Qt.NoModifier, start + QPoint(20, 12))
    x1, y1 = dialog.handles()["chin"]
    assert (x1 - x0) * view.zoom == pytest.approx(20, abs=1.5) and (y1 - y0) * view.zoom == pytest.approx(12, abs=1.5)
    assert dialog.handle("chin").isSelected()
    others = {n: p for n, p in dialog.handles().items() if n != "chin"}

    view.setFocus()
    qtbot.keyClick(view, Qt.Key_Right)
    qtbot.keyClick(view, Qt.Key_Down, Qt.ShiftModifier)
    x2, y2 = dialog.handles()["chin"]
    assert (x2 - x1) * view.zoom == pytest.approx(1) and (y2 - y1) * view.zoom == pytest.approx(NUDGE_FAST)
    assert {n: p for n, p in dialog.handles().items() if n != "chin"} == others  # only the selected one moves
    assert overlaps(dialog.label_rects()) == []  # laid out again after the move


def test_the_window_starts_the_handles_at_the_detector_box(qtbot, qsettings, tmp_path, monkeypatch, portrait):
    """A photo FaceMesh cannot read but the detector can (here: a factory that says no face was found in a photo
    with a face): the placement dialog opens with its handles on that face, not on the photo's middle."""
    from avatar.engine import create_engine
    from avatar.face import NoFaceError
    from avatar.gui.placement import PlacementDialog
    from avatar.gui.settings import load_preferences
    from avatar.gui.window import MainWindow
    from tests.conftest import loudness_model

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    image, placed = bf.compose_group([portrait[:2]], (120,), (900, 700))
    offset = np.array([500.0, 300.0])
    canvas = np.full_like(image, bf.BACKDROP)
    side = int(round(120 * bf.PATCH_FACTOR))
    x, y = int(placed[0].cx - side / 2), int(placed[0].cy - side / 2)
    canvas[y + 300:y + 300 + side, x + 500:x + 500 + side] = image[y:y + side, x:x + side]  # the face lower right
    face_at = np.array([placed[0].cx, placed[0].cy]) + offset
    cv2.imwrite(str(tmp_path / "drawing.png"), canvas[..., ::-1])

    def factory(photo, prefs, landmarks=None):
        if landmarks is None:
            raise NoFaceError("No face was found in this photo.", canvas)
        raise AssertionError("not placed yet")

    prefs = load_preferences()
    w = MainWindow(prefs, lambda backend: create_engine("onnxruntime", model=loudness_model()), factory)
    qtbot.addWidget(w)
    w.show()
    w.controller.faces_in = lambda photo: (canvas, [])  # FaceMesh "finds" nothing here
    w.open_photo(str(tmp_path / "drawing.png"))
    qtbot.waitUntil(lambda: w.findChild(PlacementDialog) is not None, timeout=30000)
    handles = w.findChild(PlacementDialog).handles()
    assert np.hypot(*(eyes_mid(handles) - face_at)) < 0.5 * 120
    w.close()
