"""The avatar view: shows the newest frame the render worker made; draws nothing itself."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget


def to_qimage(frame: np.ndarray) -> QImage:
    """HxWx3 uint8 RGB → QImage (owns a copy, so the array may be reused)."""
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    return QImage(frame.data, w, h, 3 * w, QImage.Format_RGB888).copy()


class AvatarView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(256, 256)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self._image: QImage | None = None
        self.frames_shown = 0

    def show_frame(self, frame: np.ndarray) -> None:
        self._image = to_qimage(frame)
        self.frames_shown += 1
        self.update()

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 24))
        if self._image is not None:
            iw, ih = self._image.width(), self._image.height()
            scale = min(self.width() / iw, self.height() / ih)
            w, h = iw * scale, ih * scale
            target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
            painter.setRenderHint(QPainter.SmoothPixmapTransform)
            painter.drawImage(target, self._image)
        painter.end()
