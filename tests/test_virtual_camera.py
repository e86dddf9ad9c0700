"""The virtual camera (avatar.live.virtual_camera) through pyvirtualcam itself: a backend registered with
pyvirtualcam.register_backend records what the app sends (frames, size, format, timing, pixels); a real
v4l2loopback device is written and read back where one exists. The kernel of the build machines cannot load
v4l2loopback, so that test skips there with the reason."""
import glob
import threading
import time

import numpy as np
import pytest

pyvirtualcam = pytest.importorskip("pyvirtualcam", reason="pyvirtualcam is not installed (the [vcam] extra)")
from pyvirtualcam import camera as pvc_camera  # noqa: E402

from avatar.controller import Controller  # noqa: E402
from avatar.face.assemble import open_renderer  # noqa: E402
from avatar.live.virtual_camera import QUEUE_FRAMES, VirtualCamera, VirtualCameraError, fit_frame  # noqa: E402
from avatar.paths import default_photo  # noqa: E402
from avatar.preferences import Preferences  # noqa: E402
from tests.conftest import tone_bursts, write_wav  # noqa: E402

SIZE = 192
FPS = 30


class RecordingBackend:
    """A pyvirtualcam backend (the interface of pyvirtualcam.Backend) that keeps what it is sent."""

    opened: list = []  # every instance, newest last
    send_gate: threading.Event | None = None  # when set to an Event, send waits for it (a stalled device)
    fail_after: int | None = None  # send raises after this many frames (a device that goes away)
    stalled = threading.Event()  # set once a send is waiting on send_gate

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc, self.requested_device = width, height, fps, fourcc, device
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = 0
        RecordingBackend.opened.append(self)

    def send(self, frame):
        gate = RecordingBackend.send_gate
        if gate is not None:
            RecordingBackend.stalled.set()
            gate.wait(30)
        if RecordingBackend.fail_after is not None and len(self.frames) >= RecordingBackend.fail_after:
            raise OSError("device unplugged")
        assert frame.ndim == 1 and frame.dtype == np.uint8 and frame.flags.c_contiguous  # pyvirtualcam's contract
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())
        self.times.append(time.monotonic())

    def close(self):
        self.closed += 1

    def device(self):
        return "recorder-cam"

    def native_fourcc(self):
        return None


@pytest.fixture
def recorder(monkeypatch):
    """Only the recording backend is registered (the native ones are put aside for the test)."""
    monkeypatch.setattr(pvc_camera, "BACKENDS", {})
    pyvirtualcam.register_backend("recorder", RecordingBackend)
    RecordingBackend.opened, RecordingBackend.send_gate, RecordingBackend.fail_after = [], None, None
    RecordingBackend.stalled = threading.Event()
    yield RecordingBackend
    if RecordingBackend.send_gate is not None:
        RecordingBackend.send_gate.set()


def wait_until(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def face_controller(loudness_engine, tmp_path):
    """A started controller on the shipped face (liveliness off: only the mouth moves) and the loudness network."""
    prefs = Preferences(output_folder=str(tmp_path), size=SIZE, fps=FPS, liveliness={"enabled": False})
    told = []

    def renderer_factory(photo, prefs, landmarks=None):
        return open_renderer(photo, size=prefs.canvas, background=prefs.background_rgb, liveliness=prefs.liveliness,
                             landmarks=landmarks)

    c = Controller(prefs, lambda backend: loudness_engine, renderer_factory,
                   on_error=lambda message, title: told.append(message))
    c.told = told
    c.start()
    photo = default_photo()
    c.use_renderer(photo, c.build_renderer(photo))
    wait_until(lambda: c.latest_frame is not None and c.latest_frame.image.shape[0] == SIZE)
    wait_settled(c)  # the face on show is this renderer's (a frame of the one before has the same size)
    yield c
    c.close()


def wait_settled(c, quiet=0.3, timeout=10.0):
    """Until no new frame has been drawn for `quiet` s: silence, liveliness off, the spring at rest (StillFrames)."""
    end, seq = time.monotonic() + timeout, c.pipeline.latest.seq
    while time.monotonic() < end:
        time.sleep(quiet)
        if c.pipeline.latest.seq == seq:
            return
        seq = c.pipeline.latest.seq
    raise AssertionError("the face never settled")


def test_the_camera_gets_the_views_frames_at_its_size_and_rate_and_the_mouth_moves(recorder, face_controller,
                                                                                     tmp_path):
    c = face_controller
    shown = {}  # the frames the view got, by their bytes: the camera must get these very pictures

    def keep(frame):
        shown[frame.image.tobytes()] = frame.params.copy()

    c.add_frame_sink(keep)  # it gets the face on show at once, as the camera does
    assert c.start_virtual_camera(), c.last_error
    backend = recorder.opened[-1]
    assert (backend.width, backend.height, backend.fps) == (SIZE, SIZE, FPS)
    assert backend.fourcc == pvc_camera.encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    time.sleep(1.0)  # silence first: the closed mouth
    write_wav(tmp_path / "speech.wav", tone_bursts([0.3, 1.3], 2.3, length=0.6), 16000)
    assert c.play_file(tmp_path / "speech.wav")
    wait_until(lambda: not c.playing, timeout=15)
    time.sleep(0.3)
    camera = c.virtual_camera
    c.stop_virtual_camera()
    c.remove_frame_sink(keep)
    assert backend.closed == 1

    frames, times = backend.frames, np.array(backend.times)
    seconds = times[-1] - times[0]
    assert seconds > 3.0
    # every frame rendered while it ran was sent or counted as dropped (the queue drained when it stopped); a
    # still face is drawn once and sent again at the camera's rate
    assert camera.sent == len(frames) and camera.sent == camera.offered - camera.dropped + camera.repeated
    assert len(frames) / seconds > 0.8 * FPS and np.median(np.diff(times)) < 1.5 / FPS
    assert all(f.shape == (SIZE, SIZE, 3) for f in frames)
    assert all(f.tobytes() in shown for f in frames)  # the view's very pixels, background included

    jaw = np.array([shown[f.tobytes()][0] for f in frames])  # jaw_open of the frame each picture was rendered for
    assert jaw.max() > 0.9 and jaw.min() < 0.1
    closed = frames[int(np.argmin(jaw))].astype(int)
    opened = frames[int(np.argmax(jaw))].astype(int)
    mx0, my0, mx1, my1 = (int(v) for v in c.renderer.rig.mouth_box)
    diff = np.abs(opened - closed).sum(axis=2)
    mouth = diff[max(0, my0 - 5):my1 + 10, max(0, mx0 - 5):mx1 + 5]
    upper_face = diff[:max(1, 2 * my0 - my1)]
    assert (mouth > 60).mean() > 0.10  # the camera's picture of the mouth opened
    assert (upper_face > 60).mean() < 0.005  # and nothing else in the face moved
    # it opened while the bursts played and shut between them: open frames come in two runs
    runs = np.flatnonzero(np.diff((jaw > 0.5).astype(int)) == 1)
    assert len(runs) == 2


def test_offer_never_waits_for_a_stalled_device_and_drops_the_oldest(recorder):
    recorder.send_gate = threading.Event()  # the device takes no frame until it is set
    camera = VirtualCamera(64, 48, 30)
    try:
        images = [np.full((48, 64, 3), i, np.uint8) for i in range(20)]
        camera.offer(images[0])
        assert recorder.stalled.wait(10)  # the sender holds frame 0 in a send that does not return
        offering = threading.Thread(target=lambda: [camera.offer(im) for im in images[1:]])
        offering.start()
        offering.join(10)
        assert not offering.is_alive()  # 20 offers done while the device has not taken a single frame
        assert camera.offered == 20
        # one frame is held by the stalled send; of the rest only the newest QUEUE_FRAMES wait
        assert camera.dropped == 20 - 1 - QUEUE_FRAMES
        recorder.send_gate.set()
        wait_until(lambda: camera.sent >= 1 + QUEUE_FRAMES)
        sent = [int(f[0, 0, 0]) for f in recorder.opened[-1].frames]
        assert sent[1:1 + QUEUE_FRAMES] == list(range(20 - QUEUE_FRAMES, 20))  # the newest won
        assert set(sent[1 + QUEUE_FRAMES:]) <= {19}  # then the last one again, at the camera's rate
    finally:
        recorder.send_gate.set()
        camera.close()


def test_frames_of_another_size_are_fitted_to_the_cameras(recorder):
    camera = VirtualCamera(160, 90, 30)  # 16:9 camera, a square view (the render size changed while it ran)
    try:
        square = np.zeros((64, 64, 3), np.uint8)
        square[:] = (0, 200, 0)  # background
        square[20:44, 20:44] = (255, 0, 0)
        camera.offer(square)
        wait_until(lambda: camera.sent == 1)
        frame = recorder.opened[-1].frames[0]
        assert frame.shape == (90, 160, 3)
        assert tuple(frame[45, 80]) == (255, 0, 0)  # the picture, centred
        assert tuple(frame[45, 5]) == (0, 200, 0)  # the sides: its background colour
    finally:
        camera.close()


def test_fit_frame_keeps_a_frame_of_the_right_size_as_it_is():
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    assert fit_frame(image, 40, 30) is image
    wide = fit_frame(image, 80, 30)
    assert wide.shape == (30, 80, 3) and np.array_equal(wide[:, 20:60], image)


def test_a_device_that_goes_away_stops_the_camera_with_a_message(recorder):
    recorder.fail_after = 3
    told = []
    camera = VirtualCamera(32, 32, 30, on_event=told.append)
    try:
        for i in range(10):
            camera.offer(np.zeros((32, 32, 3), np.uint8))
            time.sleep(0.01)
        wait_until(lambda: camera.error is not None)
        assert not camera.running and "device unplugged" in camera.error and told == [camera.error]
        offered = camera.offered
        camera.offer(np.zeros((32, 32, 3), np.uint8))  # ignored once stopped
        assert camera.offered == offered
    finally:
        camera.close()


def _loopback_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"))


def test_without_a_device_the_message_says_what_to_install(loudness_engine, tmp_path):
    """pyvirtualcam's own backends on this machine: no /dev/video* loopback (or no OBS) → what to install."""
    import platform

    try:
        pyvirtualcam.Camera(64, 64, 30).close()
    except RuntimeError:
        pass
    else:
        pytest.skip("this machine has a virtual camera device: the no-device message cannot be seen here")
    told = []
    c = Controller(Preferences(output_folder=str(tmp_path), size=64), lambda backend: loudness_engine,
                   lambda photo, prefs, landmarks=None: None, on_error=lambda message, title: told.append(message))
    c.start()
    try:
        wait_until(lambda: c.latest_frame is not None)
        assert not c.start_virtual_camera()
        assert c.virtual_camera is None and told
        if platform.system() == "Linux":
            assert 'modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="talking-avatar"' in told[-1]
        else:
            assert "OBS" in told[-1]
    finally:
        c.close()


def test_without_pyvirtualcam_the_message_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import fails as if not installed
    with pytest.raises(VirtualCameraError, match=r"pip install 'talking-avatar\[vcam\]'"):
        VirtualCamera(64, 64, 30)


def test_a_real_v4l2loopback_device_shows_the_frames():
    """Writes frames to a real loopback device and reads them back as a call would (OpenCV's V4L2 capture)."""
    import cv2

    if not _loopback_devices():
        pytest.skip("no /dev/video* device: load v4l2loopback (sudo modprobe v4l2loopback devices=1 "
                    "exclusive_caps=1 card_label=\"talking-avatar\"); this kernel may have no module support")
    try:
        camera = VirtualCamera(320, 240, 30, backend="v4l2loopback")
    except VirtualCameraError as e:
        pytest.skip(f"the /dev/video* devices here are not v4l2loopback outputs: {e}")
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :160] = (220, 30, 30)
    image[:, 160:] = (30, 30, 220)
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            camera.offer(image)
            time.sleep(1 / 30)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        capture = cv2.VideoCapture(camera.device, cv2.CAP_V4L2)
        assert capture.isOpened(), f"cannot open {camera.device} for reading"
        got = None
        for _ in range(60):
            ok, bgr = capture.read()
            if ok:
                got = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                break
        capture.release()
    finally:
        stop.set()
        feeder.join(5)
        camera.close()
    assert got is not None and got.shape[:2] == (240, 320)
    assert np.abs(got[120, 80].astype(int) - (220, 30, 30)).max() < 40  # left red, right blue (YUV round trip)
    assert np.abs(got[120, 240].astype(int) - (30, 30, 220)).max() < 40


@pytest.fixture
def vcam_window(qtbot, qsettings, tmp_path, monkeypatch):
    """The app's window (main_window) on the shipped face with the loudness network, as tests/test_app_window.py."""
    from avatar.engine import create_engine
    from avatar.gui import main_window
    from avatar.gui.settings import load_preferences
    from tests.conftest import loudness_model

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    prefs = load_preferences()
    prefs.size, prefs.fps, prefs.output_folder, prefs.liveliness = SIZE, FPS, str(tmp_path), {"enabled": False}
    w = main_window(prefs, engine_factory=lambda backend: create_engine("onnxruntime", model=loudness_model()))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.renderer is not None and w.controller.latest_frame is not None
                    and w.controller.latest_frame.image.shape[0] == SIZE, timeout=20000)
    yield w
    w.close()


def _view_menu_action(window, text_start):
    view = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    return next(a for a in view.actions() if a.text().replace("&", "").startswith(text_start))


def test_view_menu_starts_and_stops_the_virtual_camera(recorder, vcam_window, qtbot):
    w = vcam_window
    action = _view_menu_action(w, "Start virtual camera")
    action.trigger()  # what a click on the menu item does
    assert action.isChecked() and action.text().replace("&", "") == "Stop virtual camera"
    backend = recorder.opened[-1]
    assert (backend.width, backend.height, backend.fps) == (SIZE, SIZE, FPS)
    qtbot.waitUntil(lambda: len(backend.frames) >= FPS, timeout=10000)
    assert "recorder-cam" in w.statusBar().currentMessage()
    latest = w.controller.latest_frame.image
    assert np.corrcoef(backend.frames[-1].reshape(-1).astype(float), latest.reshape(-1).astype(float))[0, 1] > 0.9
    action.trigger()
    assert not action.isChecked() and backend.closed == 1 and w.controller.virtual_camera is None
    sent = len(backend.frames)
    qtbot.wait(300)
    assert len(backend.frames) == sent  # nothing sent after Stop


def test_view_menu_without_a_device_says_what_to_install(recorder, vcam_window, qtbot):
    import platform

    pvc_camera.BACKENDS.clear()
    pvc_camera.register_backend("v4l2loopback" if platform.system() == "Linux" else "obs", _NoDevice)
    w = vcam_window
    action = _view_menu_action(w, "Start virtual camera")
    action.trigger()
    assert not action.isChecked() and w.controller.virtual_camera is None
    message = w.controller.last_error
    assert "No virtual camera" in message and "there is no device" in message
    assert ("modprobe v4l2loopback" in message) if platform.system() == "Linux" else ("OBS" in message)
    qtbot.wait(200)
    assert w.controller.latest_frame is not None  # the app runs on


class _NoDevice:
    """A backend that finds no device, as pyvirtualcam's native ones do on a machine without one."""

    def __init__(self, **kw):
        raise RuntimeError("there is no device")


def test_the_status_bar_counts_the_cameras_dropped_frames(recorder, vcam_window, qtbot):
    w = vcam_window
    assert w.set_virtual_camera(True)
    w.controller.virtual_camera.dropped = 7  # as if the device had fallen behind
    qtbot.waitUntil(lambda: w.dropped_label.text().endswith("camera 7"), timeout=3000)
    w.set_virtual_camera(False)
    qtbot.waitUntil(lambda: "camera" not in w.dropped_label.text(), timeout=3000)


def test_a_still_face_in_a_hidden_window_still_reaches_the_camera_at_its_rate(recorder, face_controller):
    """The view draws a still face only when it changes and nothing while the window is hidden; the camera (a call
    that shows it) still gets frames at its own rate: the last one is sent again."""
    c = face_controller
    assert c.start_virtual_camera(), c.last_error
    assert c.pipeline.frames_wanted == 1  # the window hidden: the camera keeps the render going
    c.set_view_visible(False)
    backend = recorder.opened[-1]
    start = len(backend.frames)
    time.sleep(2.0)  # silence, liveliness off: a still face
    sent = len(backend.frames) - start
    assert sent >= 0.8 * 2.0 * FPS, sent
    assert c.virtual_camera.repeated > 0
    c.stop_virtual_camera()
    assert c.pipeline.frames_wanted == 0


def test_a_camera_started_on_a_face_already_still_sends_it_at_once(recorder, face_controller):
    """A still face makes no new frame; the camera repeats its last one. Started on a face that has settled, it must
    start from the face on show, not wait for the face to move (with idle motion off: never)."""
    c = face_controller
    wait_settled(c)
    assert c.start_virtual_camera(), c.last_error
    backend = recorder.opened[-1]
    wait_until(lambda: len(backend.frames) >= FPS // 2, timeout=3.0)
    assert np.array_equal(backend.frames[0], c.pipeline.latest.image)
    c.stop_virtual_camera()
