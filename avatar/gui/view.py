"""The avatar view: shows the newest frame the render worker made; draws nothing itself."""
from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

BACKGROUND = QColor(24, 24, 24)  # around the square avatar where the view is not square


def to_qimage(frame: np.ndarray) -> QImage:
    """HxWx3 uint8 RGB → QImage (owns a copy, so the array may be reused)."""
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    return QImage(frame.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def fitted_size(image_w: int, image_h: int, view_w: int, view_h: int) -> tuple[int, int]:
    """The largest size with the image's aspect ratio inside the view, in whole pixels (at least 1×1)."""
    scale = min(view_w / image_w, view_h / image_h)
    return max(1, round(image_w * scale)), max(1, round(image_h * scale))


def screen_pixels(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWx3 RGB → the frame as painted: scaled to width×height (bilinear up, as Qt's smooth transform; area-averaged
    down) in the screen's own 32-bit layout, B G R 255 bytes = QImage.Format_RGB32 on little-endian machines, which
    Qt copies to the window without converting."""
    h, w = frame.shape[:2]
    pixels = cv2.cvtColor(frame, cv2.COLOR_RGB2BGRA)  # first: OpenCV scales 4 channels ~4× faster than 3
    if (w, h) != (width, height):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)
    return pixels


class AvatarView(QWidget):
    """Each frame is scaled to the view and put in the screen's pixel layout once, when it arrives (OpenCV, on the GUI
    thread), and painted as it is: 0.7 ms of CPU a frame, against 1.5 ms for a smooth-scaled drawImage of the RGB
    frame, which Qt converted and scaled on its image thread pool with the GUI thread waiting (README "Where the CPU
    goes")."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(256, 256)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self._image: QImage | None = None
        self._frame: np.ndarray | None = None  # the last frame as rendered: scaled again when the view is resized
        self._pixels: np.ndarray | None = None  # the buffer _image points into (kept alive with it)
        self.frames_shown = 0
        self.scaled_paints = 0  # paints that had to scale (a resize before the next frame): rare by design

    def show_frame(self, frame: np.ndarray) -> None:
        self._frame = frame
        self._set_image(frame)
        self.frames_shown += 1
        self.update()

    def _target(self) -> tuple[int, int]:
        """The frame's size on screen, in device pixels."""
        ratio = self.devicePixelRatioF()
        h, w = self._frame.shape[:2]
        return fitted_size(w, h, round(self.width() * ratio), round(self.height() * ratio))

    def _set_image(self, frame: np.ndarray) -> None:
        width, height = self._target()
        pixels = screen_pixels(frame, width, height)
        image = QImage(pixels.data, width, height, 4 * width, QImage.Format_RGB32)  # no copy: _pixels holds it
        image.setDevicePixelRatio(self.devicePixelRatioF())
        self._image, self._pixels = image, pixels

    def resizeEvent(self, event):
        if self._frame is not None:
            self._set_image(self._frame)
        super().resizeEvent(event)

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)
        if self._image is not None:
            ratio = self._image.devicePixelRatio()
            w, h = self._image.width() / ratio, self._image.height() / ratio
            corner = QPointF((self.width() - w) / 2, (self.height() - h) / 2)
            if (self._image.width(), self._image.height()) == self._target():
                painter.drawImage(corner, self._image)  # a plain copy to the screen
            else:  # defensive: sized for another view size; shown right until the next frame
                self.scaled_paints += 1
                w, h = self._target()
                target = QRectF((self.width() - w / ratio) / 2, (self.height() - h / ratio) / 2, w / ratio, h / ratio)
                painter.setRenderHint(QPainter.SmoothPixmapTransform)
                painter.drawImage(target, self._image)
        painter.end()
