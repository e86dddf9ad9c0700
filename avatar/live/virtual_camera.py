"""The virtual-camera sink: the live frames into a system camera that Zoom, Meet, Discord and OBS can pick.

    render thread ── on_frame ──▶ VirtualCamera.offer(image): a copy into a small queue (drop-oldest, counted)
                                        │ sender thread ("vcam-sender")
                                        ▼ fit_frame (the camera's size is fixed while it runs) → pyvirtualcam send

pyvirtualcam (the optional `[vcam]` extra, GPL-2.0) finds the device: v4l2loopback on Linux (`/dev/video*`), OBS
Virtual Camera on Windows and macOS, Unity Capture on Windows. Frames go as RGB with the view's background (the
photo, a colour, green screen): pyvirtualcam's v4l2loopback and OBS backends take no alpha, so a transparent
face in a call or in OBS is keyed from the green screen. Nothing here knows about Qt.
"""
from __future__ import annotations

from collections import deque
import platform
import threading
from typing import Callable

import cv2
import numpy as np

QUEUE_FRAMES = 2  # frames waiting for the sender at most: the newest win, older ones are dropped (and counted)
SENDER_POLL_SECONDS = 0.5  # how long the sender waits for a frame before looking at its stop flag again
CLOSE_WAIT_SECONDS = 2.0
LINUX_SETUP = ('sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback devices=1 exclusive_caps=1 '
               'card_label="talking-avatar"')
OBS_SETUP = "install OBS Studio (26 or newer) from obsproject.com and start its Virtual Camera once"
PACKAGE_HINT = "pip install 'talking-avatar[vcam]'"


class VirtualCameraError(RuntimeError):
    """The virtual camera cannot start (pyvirtualcam missing, no device) or stopped sending; the message says why
    and what to install."""


def setup_hint(system: str | None = None) -> str:
    """What to install for a virtual camera device on this system (Linux, Windows, Darwin)."""
    system = system or platform.system()
    if system == "Linux":
        return f"Make a v4l2loopback device: {LINUX_SETUP}"
    if system in ("Windows", "Darwin"):
        return f"To get the OBS Virtual Camera, {OBS_SETUP}."
    return f"pyvirtualcam has no virtual camera backend for {system}."


def fit_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` (HxWx3 uint8) as a width x height frame: scaled to fit, centred, the rest filled with the colour of
    its top-left pixel (the background). Returned as is when it already has that size."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.empty((height, width, 3), np.uint8)
    out[:] = image[0, 0]
    x, y = (width - new_w) // 2, (height - new_h) // 2
    out[y:y + new_h, x:x + new_w] = scaled
    return out


def _open_camera(width: int, height: int, fps: float, backend: str | None, device: str | None):
    try:
        import pyvirtualcam  # optional ([vcam] extra): only when a virtual camera is started
    except ImportError as e:
        raise VirtualCameraError(f"The virtual camera needs pyvirtualcam, which is not installed ({e}). Install "
                                 f"it with: {PACKAGE_HINT}") from e
    try:
        return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=backend,
                                   device=device)
    except Exception as e:  # pyvirtualcam raises RuntimeError naming each backend's failure
        detail = " ".join(str(e).split())
        raise VirtualCameraError(f"No virtual camera could be opened ({detail}). {setup_hint()}") from e


class VirtualCamera:
    """A started virtual camera of `width` x `height` at `fps`; `offer(image)` from the render thread never waits.

    Frames of another size (the render size changed while it runs) are fitted to the camera's (fit_frame): a
    call's camera cannot change its size midway. A failure to send stops it: `error` says why, and
    `on_event(message)` is told on the sender thread."""

    def __init__(self, width: int, height: int, fps: float, backend: str | None = None, device: str | None = None,
                 on_event: Callable[[str], None] | None = None):
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self._camera = _open_camera(self.width, self.height, self.fps, backend, device)
        self.device: str = self._camera.device
        self.backend: str = self._camera.backend
        self.on_event = on_event or (lambda message: None)
        self.offered = 0  # frames offered by the render thread
        self.sent = 0  # frames handed to the device
        self.dropped = 0  # frames replaced in the queue by newer ones before they could be sent
        self.repeated = 0  # sends of the last frame again, when no new one came in time (a still face)
        self.error: str | None = None
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send_loop, name="vcam-sender", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def offer(self, image: np.ndarray) -> None:
        """Queue a frame to send (copied: the renderer may reuse its buffer); the oldest waiting one is dropped
        when QUEUE_FRAMES are waiting already."""
        if self._stop.is_set() or self.error is not None:
            return
        frame = np.array(image, np.uint8, copy=True)
        with self._lock:
            self.offered += 1
            if len(self._queue) >= QUEUE_FRAMES:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(frame)
        self._wake.set()

    def _next(self) -> np.ndarray | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _send_loop(self) -> None:
        last = None
        while not self._stop.is_set():
            # a new frame, or the time for the next one: the live view draws a still face only when it changes,
            # and a call's camera wants a steady rate, so the last frame is sent again
            self._wake.wait(min(SENDER_POLL_SECONDS, 1.0 / self.fps))
            self._wake.clear()
            frame, again = self._next(), False
            if frame is None and last is not None:
                frame, again = last, True
            while frame is not None and not self._stop.is_set():
                try:
                    self._camera.send(fit_frame(frame, self.width, self.height))
                except Exception as e:  # the device went away (module unloaded, OBS closed)
                    self.error = (f"The virtual camera {self.device} stopped: {e}. Start it again from View → "
                                  "Start virtual camera.")
                    self.on_event(self.error)
                    return
                self.sent += 1
                self.repeated += again
                last, frame, again = frame, self._next(), False

    def close(self) -> None:
        """Stop sending and release the device (a call that shows it sees the camera end)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=CLOSE_WAIT_SECONDS)
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    def describe(self) -> str:
        """The status line's words: which device, size and rate, frames sent and dropped."""
        return (f"virtual camera {self.device} ({self.backend}), {self.width} × {self.height} at {self.fps:g} fps: "
                f"{self.sent} sent, {self.dropped} dropped")


def frame_sink(camera: VirtualCamera) -> Callable:
    """The LivePipeline on_frame observer that feeds `camera` (Frame → its image)."""
    return lambda frame: camera.offer(frame.image)

