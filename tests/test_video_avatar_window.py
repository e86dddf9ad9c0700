"""File → New avatar from video… in the real window: a worker thread through the controller, progress, Cancel,
and the avatar opens in the view (the real renderer factory: open_renderer picks the video avatar by suffix)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import loudness_model
from tests.test_app_gui import told
from tests.test_video_avatar import GRID_CLIP, _noise_frames, needs_clips, write_video


@pytest.fixture
def window(qtbot, qsettings, tmp_path, monkeypatch):
    from avatar.engine import create_engine
    from avatar.gui.app import real_renderer_factory
    from avatar.gui.settings import load_preferences
    from avatar.gui.window import MainWindow

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    prefs = load_preferences()
    prefs.output_folder = str(tmp_path)
    w = MainWindow(prefs, lambda backend: create_engine("onnxruntime", model=loudness_model()), real_renderer_factory)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


@needs_clips
def test_new_avatar_from_video_opens_it_in_the_view(window, qtbot, tmp_path):
    from avatar.face.video_avatar.renderer import VideoAvatarRenderer
    from avatar.gui.window import PHOTO_FILTER

    assert "*.avatar" in PHOTO_FILTER  # File → Open photo takes avatar files too
    out = tmp_path / "me.avatar"
    window.make_avatar(str(GRID_CLIP), str(out))
    c = window.controller
    qtbot.waitUntil(lambda: isinstance(c.renderer, VideoAvatarRenderer), timeout=120000)
    assert out.is_file() and c.prefs.photo == str(out)
    assert "me.avatar" in window.windowTitle()
    qtbot.waitUntil(lambda: c.latest_frame is not None and c.latest_frame.image.shape[2] == 3, timeout=10000)
    # the status line says the mouth's width was fitted to the speaker's own speech in the video
    qtbot.waitUntil(lambda: window.statusBar().currentMessage().startswith("Made me.avatar: mouth width fitted"),
                    timeout=5000)


@needs_clips
def test_new_avatar_can_be_cancelled(window, qtbot, tmp_path):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QProgressDialog, QPushButton

    out = tmp_path / "never.avatar"
    worker = window.make_avatar(str(GRID_CLIP), str(out))
    qtbot.waitUntil(lambda: window.findChild(QProgressDialog) is not None
                    and window.findChild(QProgressDialog).value() > 0, timeout=60000)
    qtbot.mouseClick(window.findChild(QProgressDialog).findChild(QPushButton), Qt.LeftButton)  # Cancel
    qtbot.waitUntil(lambda: worker.isFinished(), timeout=60000)
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "New avatar cancelled", timeout=5000)
    assert not out.exists()


def test_a_faceless_video_is_a_message_and_the_window_keeps_going(window, qtbot, tmp_path):
    video = write_video(tmp_path / "noise.mp4", _noise_frames(100))
    worker = window.make_avatar(str(video), str(tmp_path / "x.avatar"))
    qtbot.waitUntil(lambda: worker.isFinished(), timeout=60000)
    qtbot.waitUntil(lambda: told(window, "no face"), timeout=5000)
    assert not (tmp_path / "x.avatar").exists() and window.isVisible()
