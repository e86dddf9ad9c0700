"""Manual face placement, for photos where no face was found (drawings, masks, side views).

Shows the photo with one draggable handle per landmark group (avatar.face.HANDLE_NAMES) at the generic
template's position; `handles()` returns where the person put them, in photo pixels.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QBrush, QColor, QPen, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QGraphicsEllipseItem, QGraphicsItem, QGraphicsScene,
                               QGraphicsSimpleTextItem, QGraphicsView, QLabel, QVBoxLayout)

from avatar.face import default_handles
from avatar.gui.view import to_qimage

HANDLE_RADIUS = 6  # screen pixels
VIEW_SIDE = 640  # the photo is shown at most this large


class _Handle(QGraphicsEllipseItem):
    def __init__(self, name: str, pos: tuple[float, float], scale: float):
        r = HANDLE_RADIUS / scale
        super().__init__(-r, -r, 2 * r, 2 * r)
        self.name = name
        self.setPos(QPointF(*pos))
        self.setBrush(QBrush(QColor(255, 200, 0, 200)))
        self.setPen(QPen(QColor(0, 0, 0), 1.0 / scale))
        self.setFlag(QGraphicsItem.ItemIsMovable)
        self.setToolTip(name.replace("_", " "))
        self.setCursor(Qt.OpenHandCursor)
        label = QGraphicsSimpleTextItem(name.replace("_", " "), self)
        label.setScale(1.0 / scale)
        label.setPos(r, r)
        label.setBrush(QBrush(QColor(255, 255, 255)))


class PlacementDialog(QDialog):
    def __init__(self, image: np.ndarray, message: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Place the face by hand")
        h, w = image.shape[:2]
        scale = min(1.0, VIEW_SIDE / max(h, w))
        scene = QGraphicsScene(self)
        scene.addPixmap(QPixmap.fromImage(to_qimage(image)))
        self._handles = [_Handle(name, pos, scale) for name, pos in default_handles(image.shape).items()]
        for handle in self._handles:
            scene.addItem(handle)
        view = QGraphicsView(scene)
        view.scale(scale, scale)
        view.setMinimumSize(int(w * scale) + 4, int(h * scale) + 4)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{message}\nDrag each yellow point onto the eye corners, mouth and chin, then OK."))
        layout.addWidget(view)
        layout.addWidget(buttons)

    def handles(self) -> dict[str, tuple[float, float]]:
        return {h.name: (h.pos().x(), h.pos().y()) for h in self._handles}

    def move_handle(self, name: str, x: float, y: float) -> None:
        next(h for h in self._handles if h.name == name).setPos(QPointF(x, y))
