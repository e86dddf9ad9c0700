"""The app's operations without Qt: avatar.controller.Controller on a real live pipeline (its threads, the silence
source, real audio files, the virtual microphone where there is one), the loudness network as its engine."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avatar.controller import (SOURCE_FILE, SOURCE_MICROPHONE, SOURCE_SILENCE, BlankRenderer, Controller)
from avatar.face import NoFaceError, PhotoError
from avatar.devices import SoundInput
from avatar.mic import InputConditioner
from avatar.preferences import Preferences
from tests.conftest import SimpleFrames, decode_mp4, tone_bursts, write_wav

REPO = Path(__file__).resolve().parent.parent
FRAME_SIDE = 128  # SimpleFrames' side here; the blank square before a photo is prefs.size
WAIT_SECONDS = 5.0


def wait_until(condition, timeout: float = WAIT_SECONDS) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class Driven:
    """A started controller and what it handed out: stored preferences, messages said (title, message)."""

    def __init__(self, engine_factory, tmp_path, **prefs):
        self.saved: list[dict] = []
        self.told: list[tuple[str, str]] = []
        self.controller = Controller(Preferences(output_folder=str(tmp_path), **prefs), engine_factory,
                                     lambda photo, prefs, landmarks=None: SimpleFrames(FRAME_SIDE),
                                     save_prefs=lambda p: self.saved.append(dict(vars(p))),
                                     on_error=lambda message, title: self.told.append((title, message)))
        self.controller.start()


@pytest.fixture
def driven(loudness_engine, tmp_path):
    d = Driven(lambda backend: loudness_engine, tmp_path)
    yield d
    d.controller.close()


@pytest.fixture
def controller(driven):
    return driven.controller


def test_the_controller_and_preferences_load_without_qt():
    code = ("import sys, avatar.controller, avatar.preferences; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'PySide6'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_starts_on_silence_with_a_blank_square_then_shows_the_photo(driven, controller, tmp_path):
    assert (controller.source_kind, controller.source_name) == (SOURCE_SILENCE, "silence")
    wait_until(lambda: controller.latest_frame is not None)
    assert controller.latest_frame.image.shape == (512, 512, 3)  # BlankRenderer at prefs.size until a photo
    photo = tmp_path / "face.png"
    controller.use_renderer(photo, controller.build_renderer(photo))
    wait_until(lambda: controller.latest_frame.image.shape == (FRAME_SIDE, FRAME_SIDE, 3))
    assert controller.prefs.photo == str(photo) and controller.prefs.recent_photos == [str(photo)]
    assert driven.saved[-1]["photo"] == str(photo)


def test_playing_a_file_feeds_the_mouth_until_it_ends(controller, tmp_path):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.1], 0.5, length=0.8), 16000)
    assert controller.play_file(tmp_path / "speech.wav")
    assert (controller.source_kind, controller.source_name) == (SOURCE_FILE, "speech.wav")
    wait_until(lambda: controller.level_db > -30)  # the tone is being heard
    wait_until(lambda: controller.source_kind == SOURCE_SILENCE)  # played out: back to silence
    assert controller.last_error is None


def test_unreadable_audio_file_is_a_message_and_silence_runs_on(driven, controller, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    assert not controller.play_file(bad)
    assert "Cannot play bad.wav" in controller.last_error
    assert driven.told == [("Talking Avatar", controller.last_error)]
    assert controller.source_kind == SOURCE_SILENCE


def test_unavailable_microphone_is_a_message_and_silence_runs_on(driven, controller):
    driven.saved.clear()
    assert not controller.use_microphone("No Such Microphone 3000")
    assert "not available" in controller.last_error
    assert controller.source_kind == SOURCE_SILENCE
    assert controller.prefs.device == "" and driven.saved == []  # not remembered


def test_the_microphone_gets_the_gain_and_gate_and_is_let_go_for_a_rescan(virtual_mic, driven, controller):
    controller.set_gain(6)
    controller.set_gate(-50)
    devices = controller.microphones()
    name = controller.preferred_microphone(devices)
    assert name is not None
    assert controller.use_microphone(name)
    assert (controller.source_kind, controller.microphone) == (SOURCE_MICROPHONE, name)
    conditioner = controller.pipeline.source.conditioner
    assert (conditioner.gain_db, conditioner.gate_db) == (6.0, -50.0)
    controller.set_gain(-3)
    controller.set_gate(-80)  # the slider's leftmost: off
    assert (conditioner.gain_db, conditioner.gate_db) == (-3.0, None)
    assert controller.prefs.gate_db == -100.0
    assert driven.saved[-1]["device"] == name
    controller.microphones()  # PortAudio cannot rescan with a stream open
    assert controller.source_kind == SOURCE_SILENCE


def test_preferred_microphone_is_the_one_used_last(controller):
    devices = [SoundInput(name, f"{name} (ALSA)", name) for name in ["A", "B", "C"]]
    controller.prefs.device = "B"
    assert controller.preferred_microphone(devices) == "B"
    controller.prefs.device = "gone"
    assert controller.preferred_microphone(devices) in {"A", "B", "C"}
    assert controller.preferred_microphone([]) is None


class HeldSource:
    """A source with a microphone's conditioner whose read() waits, mid-step, until released."""

    name = "held"
    alive = True
    finished = False
    level_db = -100.0
    is_microphone = True

    def __init__(self):
        self.conditioner = InputConditioner(16000, gain_db=0.0, gate_db=None)
        self.reading = threading.Event()
        self.release = threading.Event()
        self.steps: list[tuple] = []  # (gain, gate) at the start and at the end of each read

    def now(self):
        return time.monotonic()

    def read(self):
        before = (self.conditioner.gain_db, self.conditioner.gate_db)
        self.reading.set()
        self.release.wait(WAIT_SECONDS)
        self.steps.append((before, (self.conditioner.gain_db, self.conditioner.gate_db)))
        return np.zeros(0, np.float32)

    def capture_time(self, index):
        return None

    def wait(self, timeout, samples=1, sound=False):
        time.sleep(min(timeout, 0.005))

    def take_messages(self):
        return []

    def set_conditioning(self, gain_db, gate_db):
        self.conditioner.gain_db, self.conditioner.gate_db = gain_db, gate_db

    def close(self):
        self.release.set()


def test_gain_and_gate_reach_the_microphone_between_audio_steps_never_within_one(controller):
    source = HeldSource()
    controller.pipeline.set_source(source)
    assert source.reading.wait(WAIT_SECONDS)  # the audio worker is inside a step now
    setter = threading.Thread(target=lambda: (controller.set_gain(12), controller.set_gate(-50)))
    setter.start()
    time.sleep(0.3)
    assert (source.conditioner.gain_db, source.conditioner.gate_db) == (0.0, None)  # not during the step
    assert setter.is_alive()
    source.release.set()
    setter.join(WAIT_SECONDS)
    assert not setter.is_alive()
    assert (source.conditioner.gain_db, source.conditioner.gate_db) == (12.0, -50.0)
    assert all(before == after for before, after in source.steps)  # no step saw a change halfway


def test_liveliness_switches_are_the_configs_on_offs_with_the_choices_applied(driven, controller):
    switches = controller.liveliness_switches()
    assert switches["blinks"] is True and switches["sway"] is True  # LivelinessConfig's defaults
    assert "blink_duration" not in switches and "seed" not in switches  # not on/off options
    controller.set_liveliness("blinks", False)
    controller.set_liveliness("wings", True)  # no such option: kept in the settings, offered nowhere
    assert controller.liveliness_switches()["blinks"] is False and "wings" not in controller.liveliness_switches()
    assert driven.saved[-1]["liveliness"] == {"blinks": False, "wings": True}


def test_recording_writes_an_mp4_to_the_output_folder(controller, tmp_path):
    assert controller.set_name_prefix("my talk/1")
    wait_until(lambda: controller.latest_frame is not None)
    assert controller.start_recording()
    path = controller.recording.path
    assert path.parent == tmp_path and path.name.startswith("my talk1-")
    time.sleep(1.2)
    recording = controller.detach_recording()
    assert controller.recording is None
    assert controller.finish_recording(recording) == path == controller.last_recording
    info = decode_mp4(path)
    assert len(info["frames"]) > 20 and len(info["audio"]) > 16000


def test_recording_into_a_missing_folder_is_a_message(driven, controller, tmp_path):
    controller.prefs.output_folder = str(tmp_path / "gone" / "videos")  # a drive unplugged since it was chosen
    wait_until(lambda: controller.latest_frame is not None)
    assert not controller.start_recording()
    assert driven.told[-1][0] == "Cannot record" and "does not exist" in driven.told[-1][1]
    assert controller.recording is None and controller.last_recording is None


def test_a_name_prefix_without_letters_is_refused(driven, controller):
    assert not controller.set_name_prefix("../")
    assert "at least one letter" in controller.last_error
    assert controller.prefs.name_prefix == "avatar"


def test_export_renders_the_file_with_progress(controller, tmp_path):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.3, 1.0], 1.5), 16000)
    progress = []
    out = controller.export(tmp_path / "speech.wav", tmp_path / "export.mp4", progress=progress.append)
    assert out == tmp_path / "export.mp4" == controller.last_export
    assert len(decode_mp4(out)["frames"]) == 45  # 1.5 s at prefs.record_fps
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)


def test_a_cancelled_export_leaves_no_file(controller, tmp_path):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.3], 3.0), 16000)
    asked = []
    out = controller.export(tmp_path / "speech.wav", tmp_path / "cancelled.mp4",
                            cancelled=lambda: asked.append(1) or len(asked) > 5)
    assert out is None and controller.last_export is None
    assert not (tmp_path / "cancelled.mp4").exists()


def test_a_backend_that_cannot_run_is_a_message_and_the_old_one_runs_on(loudness_engine, tmp_path):
    def factory(backend):
        if backend == "torch":
            raise RuntimeError("PyTorch is not installed")
        return loudness_engine

    d = Driven(factory, tmp_path)
    try:
        c = d.controller
        assert not c.set_backend("torch")
        assert d.told == [("Talking Avatar", "The torch backend cannot run here: PyTorch is not installed")]
        assert c.prefs.backend == "auto" and c.pipeline.lipsync.engine is loudness_engine
        assert c.backend_text == "ONNX Runtime, CPU"
        assert c.set_backend("onnxruntime") and c.prefs.backend == "onnxruntime"
    finally:
        d.controller.close()


def test_an_engine_that_cannot_start_leaves_a_closed_mouth_and_the_reason(tmp_path):
    def factory(backend):
        raise RuntimeError("no model file")

    d = Driven(factory, tmp_path)
    try:
        assert d.told == [("Talking Avatar", "The lip-sync model could not be started (auto): no model file")]
        assert d.controller.backend_text == "no model (mouth stays closed)"
        wait_until(lambda: d.controller.latest_frame is not None)  # the face still runs
    finally:
        d.controller.close()


def test_only_a_photo_without_a_found_face_goes_to_manual_placement():
    image = np.zeros((40, 30, 3), np.uint8)
    assert Controller.needs_placement(NoFaceError("No face was found.", image))
    assert not Controller.needs_placement(NoFaceError("No face was found."))  # nothing to place points on
    assert not Controller.needs_placement(PhotoError("Not an image."))

    class Impostor(Exception):
        def __init__(self):
            self.image = image

    Impostor.__name__ = "NoFaceError"  # the same name, another class: matched by class, never by name
    assert not Controller.needs_placement(Impostor())


def test_display_rate_reaches_the_render_thread_and_is_remembered(driven, controller):
    controller.set_display_rate(30)
    assert controller.pipeline.fps == 30 and driven.saved[-1]["fps"] == 30


def test_blank_renderer_is_a_dark_square_of_the_size_asked():
    frame = BlankRenderer(64).render(None, 0.0)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and 0 < frame.max() < 64


# -- issue 18: first-run bugs ---------------------------------------------------------------------------


def test_first_recording_makes_the_missing_videos_folder(driven, controller, tmp_path):
    videos = tmp_path / "home" / "Videos"
    videos.parent.mkdir()
    controller.prefs.output_folder = str(videos)  # a fresh account: ~/Videos not made yet
    assert controller.folder_dialog_start() == str(videos.parent)  # the dialog opens where there is something
    wait_until(lambda: controller.latest_frame is not None)
    assert controller.start_recording(), driven.told
    recording = controller.detach_recording()
    assert recording.path.parent == videos and videos.is_dir()
    controller.finish_recording(recording)
    assert recording.path.is_file()


def test_a_folder_that_cannot_be_made_is_a_message(driven, controller, tmp_path):
    controller.prefs.output_folder = str(tmp_path / "unplugged-drive" / "Videos")  # its parent is gone too
    assert not controller.start_recording()
    assert "does not exist" in controller.last_error and "Recording folder" in controller.last_error
    assert not (tmp_path / "unplugged-drive").exists()  # nothing made on the wrong disk


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write to: a read-only bind mount as root (root ignores mode bits), mode 555 otherwise."""
    import os
    import shutil

    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not shutil.which("mount"):
        pytest.skip("mount not available to make a read-only folder as root")
    if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount a read-only folder here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_folder_is_refused_when_picked_with_the_reason(driven, controller, tmp_path, read_only_folder):
    driven.saved.clear()
    assert not controller.set_output_folder(str(read_only_folder))
    assert "cannot be written" in controller.last_error and "Read-only" in controller.last_error
    assert controller.prefs.output_folder == str(tmp_path) and driven.saved == []  # the old folder stays
    assert not controller.set_output_folder(str(tmp_path / "missing"))
    assert "does not exist" in controller.last_error
    assert controller.set_output_folder(str(tmp_path))


def test_a_saved_microphone_absent_at_start_is_said_and_kept(virtual_mic, driven, controller):
    controller.prefs.device = "USB Headset (unplugged)"
    driven.saved.clear()
    devices = controller.microphones()
    opened = controller.open_preferred_microphone(devices)
    assert opened is not None and opened != "USB Headset (unplugged)"
    assert controller.source_kind == SOURCE_MICROPHONE
    assert "USB Headset (unplugged)" in controller.last_error and "for now" in controller.last_error
    assert controller.prefs.device == "USB Headset (unplugged)"  # still the choice for next time
    assert all(saved["device"] == "USB Headset (unplugged)" for saved in driven.saved)
    # picking a microphone by hand is remembered as before
    assert controller.use_microphone(opened)
    assert controller.prefs.device == opened


def test_the_microphone_comes_back_after_a_played_file(virtual_mic, controller, tmp_path):
    name = controller.open_preferred_microphone(controller.microphones())
    assert name is not None
    write_wav(tmp_path / "short.wav", tone_bursts([0.1], 0.4, length=0.3), 16000)
    assert controller.play_file(tmp_path / "short.wav")
    assert controller.playing and controller.source_kind == SOURCE_FILE
    wait_until(lambda: controller.poll() or controller.source_kind == SOURCE_MICROPHONE)
    assert (controller.source_kind, controller.microphone) == (SOURCE_MICROPHONE, name)
    assert not controller.playing


def test_playback_can_be_stopped_and_the_microphone_returns(virtual_mic, controller, tmp_path):
    name = controller.open_preferred_microphone(controller.microphones())
    write_wav(tmp_path / "long.wav", tone_bursts([0.1], 30.0), 16000)
    assert controller.play_file(tmp_path / "long.wav")
    controller.stop_playback()
    assert (controller.source_kind, controller.microphone) == (SOURCE_MICROPHONE, name)
    controller.use_silence()  # silence chosen by hand: a later file does not bring the microphone back
    assert controller.play_file(tmp_path / "long.wav")
    controller.stop_playback()
    assert controller.source_kind == SOURCE_SILENCE


def test_dropped_frames_count_from_the_last_setting_change(controller, tmp_path):
    controller.pipeline.dropped_frames += 300  # as while a rig was being built
    assert controller.stats().dropped_frames >= 300
    photo = tmp_path / "face.png"
    controller.use_renderer(photo, controller.build_renderer(photo))
    assert controller.stats().dropped_frames < 300
    controller.pipeline.dropped_frames += 300
    controller.set_display_rate(30)
    assert controller.stats().dropped_frames < 300


def test_no_latency_without_a_microphone(controller, tmp_path):
    assert controller.source_kind == SOURCE_SILENCE and not controller.shows_latency
    write_wav(tmp_path / "a.wav", tone_bursts([0.1], 1.0), 16000)
    controller.play_file(tmp_path / "a.wav")
    assert not controller.shows_latency


def test_a_saved_backend_that_cannot_run_hands_over_to_auto_for_this_run(loudness_engine, tmp_path):
    def factory(backend):
        if backend == "tensorrt":
            raise RuntimeError("no CUDA driver")
        return loudness_engine

    driven = Driven(factory, tmp_path, backend="tensorrt")
    try:
        c = driven.controller
        assert c.engine is loudness_engine and c.backend_choice == "auto"
        assert "tensorrt backend cannot run here (no CUDA driver)" in c.last_error and "for now" in c.last_error
        assert c.prefs.backend == "tensorrt"  # kept: the GPU may be back next time
        assert not c.set_backend("tensorrt")
        assert c.backend_choice == "auto" and c.engine is loudness_engine
        assert c.set_backend("onnxruntime")
        assert (c.backend_choice, c.prefs.backend) == ("onnxruntime", "onnxruntime")
    finally:
        driven.controller.close()


VIDEO = REPO.parent / "shared" / "data" / "video"


@pytest.mark.skipif(not (VIDEO / "lp_s32.mp4").is_file(), reason="the dev clips (../shared/data/video) are absent")
def test_a_real_three_quarter_face_is_rigged_with_its_sentence(loudness_engine, tmp_path):
    """The controller finds the faces itself and hands the rig their landmarks: the three-quarter sentence the rig
    would have said is still said (photo_warning), on a real turned face (lp_s32's first frame)."""
    import av
    import cv2

    from avatar.face.assemble import open_renderer

    with av.open(str(VIDEO / "lp_s32.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    photo = tmp_path / "turned.png"
    cv2.imwrite(str(photo), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    controller = Controller(Preferences(output_folder=str(tmp_path)), lambda backend: loudness_engine,
                            lambda photo, prefs, landmarks=None: open_renderer(photo, size=256, landmarks=landmarks),
                            save_prefs=lambda p: None, on_error=lambda message, title: None)
    try:
        renderer = controller.build_renderer(photo)
        controller.use_renderer(photo, renderer)
        assert controller.photo_warning and "turned about" in controller.photo_warning
    finally:
        controller.close()


def test_a_face_placed_by_hand_is_kept_for_rebuilds_and_export(loudness_engine, tmp_path):
    """A photo whose face was placed by hand (no face found in it) keeps its points: a new render size rebuilds the
    face on them and File → Export video renders it, instead of failing with "no face" again."""
    from avatar.face import default_handles, load_photo
    from avatar.face.assemble import open_renderer

    photo = REPO / "tests" / "data" / "face" / "cat.jpg"  # FaceMesh finds no face in it
    controller = Controller(Preferences(output_folder=str(tmp_path), size=128), lambda backend: loudness_engine,
                            lambda photo, prefs, landmarks=None: open_renderer(photo, size=prefs.canvas,
                                                                               landmarks=landmarks),
                            save_prefs=lambda p: None, on_error=lambda message, title: None)
    try:
        with pytest.raises(NoFaceError):
            controller.build_renderer(photo)
        points = controller.landmarks_from_handles(default_handles(load_photo(photo).shape))
        controller.use_renderer(photo, controller.build_renderer(photo, points))
        controller.prefs.size = 160
        assert controller.build_renderer(photo).rig.size == (160, 160)  # rebuilt on the placed points
        write_wav(tmp_path / "speech.wav", tone_bursts([0.2], 0.6), 16000)
        out = controller.export(tmp_path / "speech.wav", tmp_path / "placed.mp4")
        assert out is not None and len(decode_mp4(out)["frames"]) > 10
    finally:
        controller.close()
