"""Manual face placement, for photos where no face was found (drawings, masks, side views, tiny faces).

Shows the photo with one draggable handle per landmark group (avatar.face.HANDLE_NAMES), starting around the most
likely face (avatar.face.manual.start_handles); `handles()` returns where the person put them, in photo pixels.
The wheel or +/- zooms (0 shows the whole photo), the middle button or Space+drag pans, a click selects a handle
and the arrow keys nudge it (Shift: ten times further). Handles and labels keep their screen size at any zoom, and
the labels are laid out so that none covers another or a handle.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QGraphicsEllipseItem, QGraphicsItem, QGraphicsRectItem,
                               QGraphicsScene, QGraphicsSimpleTextItem, QGraphicsView, QLabel, QVBoxLayout)

from avatar.face.manual import start_handles
from avatar.gui.view import to_qimage

HANDLE_RADIUS = 6  # screen pixels, at any zoom
VIEW_SIDE = 640  # the whole photo is shown at most this large
ZOOM_STEP = 1.25  # per wheel notch or +/- press
MAX_ZOOM = 16.0  # screen pixels per photo pixel: a 40 px face can fill 640 px
FACE_VIEW_FACTOR = 2.5  # the first view shows the handles' span this many times over, when that is closer
NUDGE = 1  # screen pixels per arrow press...
NUDGE_FAST = 10  # ...with Shift
LABEL_GAP = 3  # screen pixels between a handle and its label
LABEL_RING = 10  # screen pixels: a label that fits nowhere next to its handle tries this much further out
LABEL_RINGS = 12  # enough for all nine labels around handles crowded into a few pixels
LABEL_POINT_SIZE = 9
HANDLE_COLOUR = QColor(255, 200, 0, 220)
SELECTED_COLOUR = QColor(0, 200, 255, 240)
LABEL_BACKDROP = QColor(0, 0, 0, 170)
LABELS = {  # short, the person's right/left (the right eye is on the photo's left for a face looking out)
    "right_eye_outer": "R eye outer", "right_eye_inner": "R eye inner",
    "left_eye_inner": "L eye inner", "left_eye_outer": "L eye outer",
    "mouth_right": "mouth R", "mouth_left": "mouth L",
    "upper_lip": "upper lip", "lower_lip": "lower lip", "chin": "chin",
}
# where each label would rather sit (screen direction from its handle): away from the face's middle
LABEL_DIRECTION = {
    "right_eye_outer": (-1, -0.4), "right_eye_inner": (-0.3, -1), "left_eye_inner": (0.3, -1),
    "left_eye_outer": (1, -0.4), "mouth_right": (-1, 0), "mouth_left": (1, 0), "upper_lip": (0, -1),
    "lower_lip": (0.6, 1), "chin": (0, 1),
}


class _Handle(QGraphicsEllipseItem):
    """A draggable point at a photo position, drawn at a fixed screen size, with its label (laid out by the
    dialog)."""

    def __init__(self, name: str, pos: tuple[float, float], moved):
        r = HANDLE_RADIUS
        super().__init__(-r, -r, 2 * r, 2 * r)
        self.name = name
        self._moved = moved
        self.setPos(QPointF(*pos))
        self.setPen(QPen(QColor(0, 0, 0), 1.0))
        self.setFlags(QGraphicsItem.ItemIsMovable | QGraphicsItem.ItemIsSelectable
                      | QGraphicsItem.ItemIgnoresTransformations | QGraphicsItem.ItemSendsGeometryChanges)
        self.setZValue(2)
        self.setToolTip(name.replace("_", " ") + " (the person's right/left)")
        self.setCursor(Qt.OpenHandCursor)
        self.label = QGraphicsRectItem(self)
        self.label.setBrush(QBrush(LABEL_BACKDROP))
        self.label.setPen(QPen(Qt.NoPen))
        text = QGraphicsSimpleTextItem(LABELS.get(name, name.replace("_", " ")), self.label)
        font = QFont()
        font.setPointSize(LABEL_POINT_SIZE)
        text.setFont(font)
        text.setBrush(QBrush(QColor(255, 255, 255)))
        text.setPos(2, 0)
        size = text.boundingRect().size()
        self.label.setRect(0, 0, size.width() + 4, size.height())
        self._colour()

    def _colour(self) -> None:
        self.setBrush(QBrush(SELECTED_COLOUR if self.isSelected() else HANDLE_COLOUR))

    def itemChange(self, change, value):
        if change == QGraphicsItem.ItemSelectedHasChanged:
            self._colour()
        elif change == QGraphicsItem.ItemPositionHasChanged:
            self._moved()
        return super().itemChange(change, value)


class _PlacementView(QGraphicsView):
    """The photo with zoom (wheel, +/-, 0 for the whole photo), pan (middle button, Space+drag) and arrow-key
    nudging of the selected handle."""

    def __init__(self, scene, min_zoom: float, on_zoom, nudge):
        super().__init__(scene)
        self.min_zoom = min_zoom
        self._on_zoom = on_zoom
        self._nudge = nudge
        self._pan_from = None
        self._space = False
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setRenderHint(QPainter.SmoothPixmapTransform)
        self.setFocusPolicy(Qt.StrongFocus)

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float, anchor=QGraphicsView.AnchorUnderMouse) -> None:
        zoom = float(np.clip(zoom, self.min_zoom, MAX_ZOOM))
        self.setTransformationAnchor(anchor)
        self.scale(zoom / self.zoom, zoom / self.zoom)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self._on_zoom()

    def wheelEvent(self, event):
        notches = event.angleDelta().y() / 120
        if notches:
            self.set_zoom(self.zoom * ZOOM_STEP ** notches)
        event.accept()

    def keyPressEvent(self, event):
        key, shift = event.key(), bool(event.modifiers() & Qt.ShiftModifier)
        steps = {Qt.Key_Left: (-1, 0), Qt.Key_Right: (1, 0), Qt.Key_Up: (0, -1), Qt.Key_Down: (0, 1)}
        if key == Qt.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.OpenHandCursor)
        elif key in (Qt.Key_Plus, Qt.Key_Equal):
            self.set_zoom(self.zoom * ZOOM_STEP, QGraphicsView.AnchorViewCenter)
        elif key == Qt.Key_Minus:
            self.set_zoom(self.zoom / ZOOM_STEP, QGraphicsView.AnchorViewCenter)
        elif key == Qt.Key_0:
            self.set_zoom(self.min_zoom, QGraphicsView.AnchorViewCenter)
        elif key in steps and self._nudge(*steps[key], NUDGE_FAST if shift else NUDGE):
            pass
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def keyReleaseEvent(self, event):
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().unsetCursor()
        super().keyReleaseEvent(event)

    def mousePressEvent(self, event):
        if event.button() == Qt.MiddleButton or (event.button() == Qt.LeftButton and self._space):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event):
        if self._pan_from is not None:
            d = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(d.y()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event):
        if self._pan_from is not None and event.button() in (Qt.MiddleButton, Qt.LeftButton):
            self._pan_from = None
            if self._space:
                self.viewport().setCursor(Qt.OpenHandCursor)
            else:
                self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)


class PlacementDialog(QDialog):
    def __init__(self, image: np.ndarray, message: str, parent=None, face_box=None):
        """face_box: an avatar.face.detect.FaceBox where the detector saw a face FaceMesh could not read (the
        handles start there), or None (they start in the upper middle of the photo)."""
        super().__init__(parent)
        self.setWindowTitle("Place the face by hand")
        h, w = image.shape[:2]
        fit = min(1.0, VIEW_SIDE / max(h, w))
        scene = QGraphicsScene(self)
        scene.addPixmap(QPixmap.fromImage(to_qimage(image)))
        scene.setSceneRect(0, 0, w, h)
        self._handles = [_Handle(name, pos, self._layout_labels)
                         for name, pos in start_handles(image.shape, face_box).items()]
        for handle in self._handles:
            scene.addItem(handle)
        self.view = _PlacementView(scene, fit, self._layout_labels, self._nudge)
        self.view.scale(fit, fit)
        self.view.setMinimumSize(int(w * fit) + 4, int(h * fit) + 4)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{message}\nDrag each yellow point onto the eye corners, mouth and chin, then OK. "
                                "Wheel or +/− zooms, 0 shows all; middle button or Space+drag moves the view;\n"
                                "arrow keys nudge the selected point (Shift: further). R/L: the person's right and "
                                "left."))
        layout.addWidget(self.view)
        layout.addWidget(buttons)
        self._laying_out = False
        self._zoom_to_handles(fit)

    # -- what the window and the tests use ------------------------------------------------------------

    def handles(self) -> dict[str, tuple[float, float]]:
        return {h.name: (h.pos().x(), h.pos().y()) for h in self._handles}

    def move_handle(self, name: str, x: float, y: float) -> None:
        self.handle(name).setPos(QPointF(x, y))

    def handle(self, name: str) -> _Handle:
        return next(h for h in self._handles if h.name == name)

    def handle_point(self, name: str):
        """Where a handle is on the view's viewport (for a click or a drag)."""
        return self.view.mapFromScene(self.handle(name).pos())

    def label_rects(self) -> dict[str, QRectF]:
        """Each label's rectangle on the view's viewport."""
        out = {}
        for h in self._handles:
            p = self.view.mapFromScene(h.pos())
            r = h.label.rect().translated(h.label.pos())
            out[h.name] = r.translated(p.x(), p.y())
        return out

    # -- view -----------------------------------------------------------------------------------------

    def _zoom_to_handles(self, fit: float) -> None:
        """Start close enough to the handles to tell them apart (a small face), centred on them."""
        pts = np.array(list(self.handles().values()))
        span = float(np.ptp(pts, axis=0).max()) * FACE_VIEW_FACTOR
        zoom = min(VIEW_SIDE / max(span, 1.0), MAX_ZOOM)
        if zoom > fit:
            self.view.set_zoom(zoom, QGraphicsView.AnchorViewCenter)
        self.view.centerOn(QPointF(*pts.mean(0)))
        self._layout_labels()

    def _nudge(self, dx: int, dy: int, pixels: int) -> bool:
        """Move the selected handles `pixels` screen pixels; False when none is selected."""
        chosen = [h for h in self._handles if h.isSelected()]
        step = pixels / self.view.zoom
        for h in chosen:
            h.setPos(h.pos() + QPointF(dx * step, dy * step))
        return bool(chosen)

    def _layout_labels(self) -> None:
        """Each label next to its handle, on the side it prefers when free, else the nearest free side, further
        out if need be: no label over another or over a handle, inside the view where it can be (greedy, in
        screen pixels)."""
        if getattr(self, "_laying_out", True):
            return
        self._laying_out = True
        try:
            screen = {h.name: self.view.mapFromScene(h.pos()) for h in self._handles}
            r = HANDLE_RADIUS + 1
            taken = [QRectF(p.x() - r, p.y() - r, 2 * r, 2 * r) for p in screen.values()]
            port = QRectF(self.view.viewport().rect())
            for h in self._handles:
                p = screen[h.name]
                size = h.label.rect().size()
                best = None
                for on_screen, ring in itertools.product((True, False), range(LABEL_RINGS)):
                    for dx, dy in _directions(LABEL_DIRECTION.get(h.name, (1, 0))):
                        rect = _label_rect(p.x(), p.y(), dx, dy, size.width(), size.height(),
                                           HANDLE_RADIUS + LABEL_GAP + ring * LABEL_RING)
                        if (not on_screen or port.contains(rect)) and not any(rect.intersects(t) for t in taken):
                            best = rect
                            break
                    if best is not None:
                        break
                if best is None:  # nowhere free: its own side
                    dx, dy = LABEL_DIRECTION.get(h.name, (1, 0))
                    best = _label_rect(p.x(), p.y(), dx, dy, size.width(), size.height(), HANDLE_RADIUS + LABEL_GAP)
                taken.append(best)
                h.label.setPos(best.x() - p.x(), best.y() - p.y())  # the handle's own (screen-sized) coordinates
        finally:
            self._laying_out = False


def _directions(preferred: tuple[float, float]) -> list[tuple[float, float]]:
    """The preferred direction, then the 8 compass directions, nearest in angle to it first."""
    a0 = math.atan2(preferred[1], preferred[0])
    compass = [(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)]
    compass.sort(key=lambda d: abs(math.remainder(math.atan2(d[1], d[0]) - a0, 2 * math.pi)))
    return [preferred] + compass


def _label_rect(x: float, y: float, dx: float, dy: float, w: float, h: float, gap: float) -> QRectF:
    """A w x h rectangle beside point (x, y) in direction (dx, dy), its near edge `gap` away."""
    n = math.hypot(dx, dy) or 1.0
    dx, dy = dx / n, dy / n
    # the centre moves out until the rectangle's near edge (or corner) clears the gap
    reach = gap + min(w / 2 / abs(dx) if dx else math.inf, h / 2 / abs(dy) if dy else math.inf)
    cx, cy = x + dx * reach, y + dy * reach
    return QRectF(cx - w / 2, cy - h / 2, w, h)
