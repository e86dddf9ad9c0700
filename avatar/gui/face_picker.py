"""The face picker: a photo with several faces, each in a numbered box, and a strip of their thumbnails; clicking
a box or a thumbnail (or pressing its number) picks that face. Widgets and signals only: the faces come in as
landmark arrays (avatar.face.detect_faces, largest first), the choice goes out as `picked(index)`."""
from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QPen, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QGraphicsItem, QGraphicsRectItem, QGraphicsScene,
                               QGraphicsSimpleTextItem, QGraphicsView, QHBoxLayout, QLabel, QToolButton,
                               QVBoxLayout)

from avatar.gui.view import to_qimage

VIEW_SIDE = 720  # the photo is shown at most this large (screen pixels)
BOX_MARGIN = 0.15  # a face's box reaches this share of the face's size beyond its landmarks
THUMB_SIDE = 88  # thumbnails, screen pixels
THUMB_FACTOR = 1.6  # a thumbnail shows this many face sides (hair and chin included)
MAX_THUMBS = 9  # faces with a thumbnail and a number key (1-9); every face has its box
BOX_COLOUR = QColor(255, 200, 0)
HOVER_COLOUR = QColor(0, 200, 255)
LABEL_POINT_SIZE = 14  # the boxes' numbers, readable whatever the photo's scale


def face_box(points: np.ndarray, margin: float = BOX_MARGIN) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around a face's landmarks, `margin` of its size added on every side (photo pixels)."""
    (x0, y0), (x1, y1) = points[:, :2].min(0), points[:, :2].max(0)
    pad = margin * max(x1 - x0, y1 - y0)
    return float(x0 - pad), float(y0 - pad), float(x1 + pad), float(y1 + pad)


def thumbnail(image: np.ndarray, points: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """A square (side x side) RGB crop around a face, THUMB_FACTOR face sides wide; outside the photo is grey."""
    x0, y0, x1, y1 = face_box(points, 0.0)
    span = THUMB_FACTOR * max(x1 - x0, y1 - y0, 1.0)
    s = side / span
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m = np.array([[s, 0, (side - 1) / 2 - s * cx], [0, s, (side - 1) / 2 - s * cy]])
    flags = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (side, side), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(128, 128, 128))


class _FaceBox(QGraphicsRectItem):
    """A clickable numbered box around one face."""

    def __init__(self, index: int, rect: QRectF, scale: float, on_click):
        super().__init__(rect)
        self.index = index
        self._on_click = on_click
        self._scale = scale
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip(f"Face {index + 1}: click to animate it")
        self._paint(BOX_COLOUR)
        label = QGraphicsSimpleTextItem(str(index + 1), self)
        font = QFont()
        font.setPointSize(LABEL_POINT_SIZE)
        font.setBold(True)
        label.setFont(font)
        label.setBrush(QBrush(BOX_COLOUR))
        label.setPen(QPen(QColor(0, 0, 0), 0.8))
        label.setFlag(QGraphicsItem.ItemIgnoresTransformations)  # the same size on screen at any zoom
        label.setPos(rect.topLeft())

    def _paint(self, colour: QColor) -> None:
        self.setPen(QPen(colour, 3.0 / self._scale))
        fill = QColor(colour)
        fill.setAlpha(40)
        self.setBrush(QBrush(fill))

    def hoverEnterEvent(self, event):
        self._paint(HOVER_COLOUR)

    def hoverLeaveEvent(self, event):
        self._paint(BOX_COLOUR)

    def mousePressEvent(self, event):
        if event.button() == Qt.LeftButton:
            self._on_click(self.index)
            event.accept()


class FacePickerDialog(QDialog):
    """Pick one of the faces found in a photo. `picked(index)` is emitted, and the dialog accepted, on a click on a
    box or thumbnail or on a number key; `chosen` is the index afterwards (None if cancelled)."""

    picked = Signal(int)

    def __init__(self, image: np.ndarray, faces: list[np.ndarray], current: int | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Which face?")
        self.chosen: int | None = None
        self._count = len(faces)
        h, w = image.shape[:2]
        scale = min(1.0, VIEW_SIDE / max(h, w))
        scene = QGraphicsScene(self)
        scene.addPixmap(QPixmap.fromImage(to_qimage(image)))
        self.boxes = []
        for i, points in enumerate(faces):
            x0, y0, x1, y1 = face_box(points)
            box = _FaceBox(i, QRectF(x0, y0, x1 - x0, y1 - y0), scale, self.pick)
            scene.addItem(box)
            self.boxes.append(box)
        self.view = QGraphicsView(scene)
        self.view.scale(scale, scale)
        self.view.setMinimumSize(int(w * scale) + 4, int(h * scale) + 4)
        self.view.setSceneRect(0, 0, w, h)

        strip = QHBoxLayout()
        self.thumbs = []
        for i, points in enumerate(faces[:MAX_THUMBS]):
            button = QToolButton()
            button.setIcon(QIcon(QPixmap.fromImage(to_qimage(thumbnail(image, points)))))
            button.setIconSize(QSize(THUMB_SIDE, THUMB_SIDE))
            button.setText(f"{i + 1}{' (now)' if i == current else ''}")
            button.setToolButtonStyle(Qt.ToolButtonTextUnderIcon)
            button.setToolTip(f"Face {i + 1}")
            button.clicked.connect(lambda _=False, k=i: self.pick(k))
            strip.addWidget(button)
            self.thumbs.append(button)
        strip.addStretch(1)

        buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"This photo has {len(faces)} faces. Click the one to animate "
                                f"(or press its number)."))
        layout.addWidget(self.view)
        layout.addLayout(strip)
        layout.addWidget(buttons)

    def pick(self, index: int) -> None:
        if not 0 <= index < self._count:
            return
        self.chosen = index
        self.picked.emit(index)
        self.accept()

    def box_center(self, index: int):
        """Where face `index`'s box is on the view's viewport (for a click)."""
        return self.view.mapFromScene(self.boxes[index].rect().center())

    def keyPressEvent(self, event):
        key = event.key()
        if Qt.Key_1 <= key <= Qt.Key_9:
            self.pick(key - Qt.Key_1)
            return
        super().keyPressEvent(event)
