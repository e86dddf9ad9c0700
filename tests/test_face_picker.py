"""The face picker (avatar.gui.face_picker) through the window: a photo with several faces asks which one, the rig
is built on the face clicked, and the choice is remembered with the photo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar.bench import faces as bf
from tests.conftest import loudness_model

SIZE = 256
WIDTHS = (200, 120)  # two faces, the larger first; composed from the shipped and test portraits (public domain)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """A two-face photo on disk, where each face was put (in the order of WIDTHS), and the faces FaceMesh finds."""
    from avatar.face import detect_faces

    image, placed = bf.compose_group(bf.portrait_faces(), WIDTHS, (600, 380))
    path = tmp_path_factory.mktemp("group") / "two.png"
    cv2.imwrite(str(path), image[..., ::-1])
    return path, placed, image, detect_faces(image)


def centre(points: np.ndarray) -> np.ndarray:
    return (points[bf.EAR_LEFT, :2] + points[bf.EAR_RIGHT, :2]) / 2


def is_at(points, place) -> bool:
    return bool(np.hypot(*(centre(points) - (place.cx, place.cy))) < 0.25 * place.width)


@pytest.fixture
def window(qtbot, qsettings, tmp_path, monkeypatch):
    """The main window with the real face renderer (recording the landmarks each rig was built on)."""
    from avatar.engine import create_engine
    from avatar.gui.app import real_renderer_factory
    from avatar.gui.settings import load_preferences
    from avatar.gui.window import MainWindow

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    prefs = load_preferences()
    prefs.size, prefs.output_folder, prefs.liveliness = SIZE, str(tmp_path), {"enabled": False}
    built = []

    def factory(photo, prefs, landmarks=None):
        built.append(landmarks)
        return real_renderer_factory(photo, prefs, landmarks=landmarks)

    w = MainWindow(prefs, lambda backend: create_engine("onnxruntime", model=loudness_model()), factory)
    w.built = built
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def open_picker(window, qtbot, path):
    from avatar.gui.face_picker import FacePickerDialog

    window.open_photo(str(path))
    qtbot.waitUntil(lambda: window.findChild(FacePickerDialog) is not None
                    and window.findChild(FacePickerDialog).isVisible(), timeout=30000)
    return window.findChild(FacePickerDialog)


def test_picking_the_second_face_builds_the_rig_on_it_and_is_remembered(window, qtbot, group):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from avatar.face import Renderer
    from avatar.gui.settings import load_preferences

    path, placed, _, _ = group
    dialog = open_picker(window, qtbot, path)
    assert window.built == []  # nothing is rigged until a face is picked
    assert len(dialog.boxes) == 2 and len(dialog.thumbs) == 2
    c = window.controller
    QTest.mouseClick(dialog.view.viewport(), Qt.LeftButton, Qt.NoModifier, dialog.box_center(1))
    qtbot.waitUntil(lambda: c.renderer is not None and c.pipeline.renderer is c.renderer, timeout=30000)
    assert isinstance(c.renderer, Renderer)
    assert len(window.built) == 1 and is_at(window.built[0], placed[1]) and not is_at(window.built[0], placed[0])
    qtbot.waitUntil(lambda: c.chosen_face(str(path)) == 1, timeout=5000)
    assert load_preferences().face_choices == {str(path): 1}

    # opened again (File → Recent photos): the same face, without asking
    first = c.renderer
    window.open_photo(str(path))
    qtbot.waitUntil(lambda: c.renderer is not first, timeout=30000)
    from avatar.gui.face_picker import FacePickerDialog

    assert not any(d.isVisible() for d in window.findChildren(FacePickerDialog))
    assert len(window.built) == 2 and is_at(window.built[1], placed[1])


def test_choose_face_again_offers_the_picker_for_the_current_photo(window, qtbot, group):
    from avatar.gui.face_picker import FacePickerDialog

    path, placed, _, _ = group
    dialog = open_picker(window, qtbot, path)
    dialog.pick(0)
    c = window.controller
    qtbot.waitUntil(lambda: c.chosen_face(str(path)) == 0, timeout=30000)
    window.choose_face_again()
    qtbot.waitUntil(lambda: any(d.isVisible() and d is not dialog for d in window.findChildren(FacePickerDialog)),
                    timeout=30000)
    again = next(d for d in window.findChildren(FacePickerDialog) if d.isVisible())
    assert again.thumbs[0].text() == "1 (now)"  # the face shown now is marked
    again.thumbs[1].click()
    qtbot.waitUntil(lambda: c.chosen_face(str(path)) == 1, timeout=30000)
    assert is_at(window.built[-1], placed[1])


def test_number_keys_pick_and_cancel_picks_nothing(qtbot, group):
    from PySide6.QtCore import Qt

    from avatar.gui.face_picker import FacePickerDialog

    _, _, image, faces = group
    dialog = FacePickerDialog(image, faces)
    qtbot.addWidget(dialog)
    picked = []
    dialog.picked.connect(picked.append)
    dialog.show()
    qtbot.keyClick(dialog, Qt.Key_3)  # there is no third face
    assert picked == [] and dialog.isVisible()
    qtbot.keyClick(dialog, Qt.Key_2)
    assert picked == [1] and dialog.chosen == 1 and not dialog.isVisible()

    other = FacePickerDialog(image, faces)
    qtbot.addWidget(other)
    other.show()
    other.reject()
    assert other.chosen is None


def test_a_damaged_stored_choice_is_reset(qsettings):
    from avatar.gui.settings import _settings, load_preferences

    _settings().setValue("face_choices", '{"/photos/a.jpg": "second"}')
    prefs = load_preferences()
    assert prefs.face_choices == {} and "face_choices" in prefs.invalid
