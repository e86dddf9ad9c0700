import numpy as np
import pytest

from avatar.visemes import PARAM_NAMES
from tests.conftest import SimpleFrames, loudness_model, tone_bursts, write_wav


@pytest.fixture
def window(qtbot, qsettings, tmp_path, monkeypatch):
    from avatar.engine import create_engine
    from avatar.gui.settings import load_preferences
    from avatar.gui.window import MainWindow

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    prefs = load_preferences()
    prefs.output_folder = str(tmp_path)
    w = MainWindow(prefs, lambda backend: create_engine("onnxruntime", model=loudness_model()),
                   lambda photo, prefs, landmarks=None: SimpleFrames(prefs.size // 4))
    qtbot.addWidget(w)
    w.show()
    w.open_photo(str(tmp_path / "face.png"))
    qtbot.waitUntil(lambda: w.pipeline.renderer is w.renderer and w.renderer is not None, timeout=5000)
    qtbot.waitUntil(lambda: w.pipeline.latest is not None, timeout=5000)
    yield w
    w.close()


def test_window_shows_frames_made_off_the_gui_thread(window, qtbot):
    qtbot.waitUntil(lambda: window.view.frames_shown > 20, timeout=5000)
    qtbot.wait(600)
    fps, _ = window.view_stats()
    assert fps > 20
    assert "ONNX Runtime" in window.backend_label.text()
    assert window.fps_label.text().endswith("fps")


def test_preferences_are_remembered(window):
    from avatar.gui.settings import load_preferences

    window.set_display_rate(30)
    assert window.pipeline.fps == 30
    prefs = load_preferences()
    assert prefs.fps == 30
    assert prefs.recent_photos and prefs.recent_photos[0].endswith("face.png")


def test_record_button_and_shortcut_write_an_mp4(window, qtbot, tmp_path):
    from PySide6.QtCore import Qt

    from avatar.gui.settings import load_preferences
    from tests.conftest import decode_mp4

    from PySide6.QtWidgets import QMessageBox

    assert not window.set_name_prefix("../")
    assert "at least one letter" in window.last_error
    for box in window.findChildren(QMessageBox):
        box.close()
    assert window.set_name_prefix("my talk/1")
    assert load_preferences().name_prefix == "my talk1"

    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)  # shortcuts go to the active window
    qtbot.keyClick(window, Qt.Key_R, Qt.ControlModifier)
    assert window.pipeline.recording is not None and window.record_button.isChecked()
    qtbot.wait(1500)
    window._update_status()
    assert window.elapsed.text().strip() == "00:01"
    qtbot.mouseClick(window.record_button, Qt.LeftButton)
    assert window.pipeline.recording is None and not window.record_button.isChecked()
    qtbot.waitUntil(lambda: hasattr(window, "last_recording"), timeout=10000)  # finished off the GUI thread
    assert window.last_recording.parent == tmp_path and window.last_recording.name.startswith("my talk1-")
    info = decode_mp4(window.last_recording)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert len(info["frames"]) > 30


def test_missing_output_folder_is_a_message_and_the_app_keeps_running(window, qtbot, tmp_path):
    window.prefs.output_folder = str(tmp_path / "gone")
    assert not window.start_recording()
    assert "does not exist" in window.last_error
    assert not window.record_button.isChecked()
    seq = window.pipeline.latest.seq
    qtbot.wait(200)
    assert window.pipeline.latest.seq > seq


def test_closing_while_recording_finalizes_the_file(qtbot, window):
    from tests.conftest import decode_mp4

    window.start_recording()
    path = window.pipeline.recording.path
    qtbot.wait(1200)
    window.close()
    info = decode_mp4(path)
    assert len(info["frames"]) > 20 and len(info["audio"]) > 16000
    with open(path, "rb") as f:
        assert b"moof" not in f.read()  # rewritten as a regular MP4 on the way out


def test_export_video_from_audio_file_with_progress(window, qtbot, tmp_path):
    from tests.conftest import decode_mp4

    write_wav(tmp_path / "speech.wav", tone_bursts([0.3, 1.0], 1.5), 16000)
    worker = window.export_video(str(tmp_path / "speech.wav"), str(tmp_path / "export.mp4"))
    qtbot.waitUntil(lambda: worker.isFinished(), timeout=20000)
    qtbot.wait(50)
    assert window.last_export == tmp_path / "export.mp4"
    info = decode_mp4(window.last_export)
    assert len(info["frames"]) == 45


def test_export_can_be_cancelled(window, qtbot, tmp_path):
    write_wav(tmp_path / "long.wav", tone_bursts([0.3], 120.0), 16000)
    worker = window.export_video(str(tmp_path / "long.wav"), str(tmp_path / "cancelled.mp4"))
    qtbot.waitUntil(lambda: window.export_dialog.value() > 0, timeout=20000)
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QPushButton

    qtbot.mouseClick(window.export_dialog.findChild(QPushButton), Qt.LeftButton)  # the dialog's Cancel
    qtbot.waitUntil(lambda: worker.isFinished(), timeout=20000)
    assert not (tmp_path / "cancelled.mp4").exists()
    assert not hasattr(window, "last_export")


def test_unreadable_audio_file_is_a_message(window, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    assert not window.play_audio_file(str(bad))
    assert "bad.wav" in window.last_error


def test_playing_an_audio_file_moves_the_mouth(window, qtbot, tmp_path):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.2], 0.8, length=0.5), 16000)
    assert window.play_audio_file(str(tmp_path / "speech.wav"))
    qtbot.waitUntil(lambda: window.pipeline.latest.params[PARAM_NAMES.index("jaw_open")] > 0.9, timeout=3000)
    qtbot.waitUntil(lambda: window.pipeline.latest.params[PARAM_NAMES.index("jaw_open")] < 0.1, timeout=3000)


def test_dropping_files_opens_photos_and_plays_audio(window, qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    from avatar.live.sources import FileSource

    def drop(path):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        window.dropEvent(QDropEvent(QPointF(20, 20), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))

    (tmp_path / "other.jpg").write_bytes(b"")  # the test renderer factory does not read it
    drop(tmp_path / "other.jpg")
    qtbot.waitUntil(lambda: window.prefs.photo.endswith("other.jpg"), timeout=5000)
    write_wav(tmp_path / "talk.wav", tone_bursts([0.1], 1.0), 16000)
    drop(tmp_path / "talk.wav")
    assert isinstance(window.pipeline.source, FileSource)
    assert window.device_box.currentIndex() == 0


def test_lost_device_message_resets_the_picker(window, qtbot):
    window.device_box.blockSignals(True)
    window.device_box.addItem("Some mic", "Some mic")
    window.device_box.setCurrentIndex(window.device_box.count() - 1)
    window.device_box.blockSignals(False)
    window.pipeline.use_silence()
    window.pipeline.on_event("The microphone 'Some mic' stopped delivering sound")  # as the audio worker does
    qtbot.waitUntil(lambda: window.device_box.currentIndex() == 0, timeout=2000)
    assert "stopped delivering sound" in window.last_error


def test_full_disk_stops_the_recording_with_a_message(window, qtbot, tiny_disk):
    from tests.conftest import decode_mp4

    class Noise:  # incompressible frames fill the small disk within a couple of seconds
        def render(self, params, t):
            return np.random.default_rng(int(t * 1000)).integers(0, 255, (128, 128, 3), np.uint8)

    window.pipeline.renderer = Noise()
    window.prefs.output_folder = str(tiny_disk)
    qtbot.wait(100)
    assert window.start_recording()
    path = window.pipeline.recording.path
    qtbot.waitUntil(lambda: "disk is full" in getattr(window, "last_error", ""), timeout=20000)
    assert window.pipeline.recording is None and not window.record_button.isChecked()
    assert len(decode_mp4(path)["frames"]) >= 15  # what was written before the disk filled is kept
    seq = window.pipeline.latest.seq
    qtbot.wait(200)
    assert window.pipeline.latest.seq > seq  # the app runs on


def test_unavailable_microphone_is_a_message_and_the_view_runs_on_silence(window, qtbot):
    from avatar.live.sources import SilenceSource

    assert not window.open_microphone("No Such Microphone 3000")
    assert "not available" in window.last_error and "Pick another" in window.last_error
    assert isinstance(window.pipeline.source, SilenceSource)
    seq = window.pipeline.latest.seq
    qtbot.wait(200)
    assert window.pipeline.latest.seq > seq


def test_unexpected_errors_become_dialogs_not_tracebacks(window, capsys):
    from avatar.gui.app import _excepthook

    try:
        raise RuntimeError("the frobnicator broke")
    except RuntimeError as e:
        _excepthook(lambda: window)(RuntimeError, e, e.__traceback__)
    assert window.last_error == "Something went wrong: the frobnicator broke"
    assert "Traceback" not in capsys.readouterr().out
