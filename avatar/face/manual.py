"""Where manual placement's handles start (avatar.gui.placement): around the most likely face.

A face box from the full-range detector (FaceMesh could not read the face: a drawing, a mask, a blurred or turned
face) places the generic template's handles in it; without one they start in the upper middle of the photo, where
a portrait or a standing person's head usually is.
"""
from __future__ import annotations

import numpy as np

from avatar.face.detect import FaceBox
from avatar.face.landmarks import template_handles

# the detector's box around a face, measured on the shipped and test portraits (FaceMesh points against
# MediaPipe's full-range box): eye distance 0.416 and 0.412 box widths; the eyes' midpoint at 0.495 across and
# 0.311 / 0.337 down
BOX_EYE_DISTANCE = 0.414  # of the box's width
BOX_EYES_AT = (0.5, 0.32)  # the eyes' midpoint, as shares of the box's width and height
# no box: the eyes a third of the way down, centred, a face of a portrait's size
OPEN_EYES_AT = (0.5, 0.3)  # shares of the photo's width and height
OPEN_EYE_DISTANCE = 0.15  # of the photo's shorter side


def start_handles(image_shape: tuple[int, ...], box: FaceBox | None = None) -> dict[str, tuple[float, float]]:
    """Starting handle positions (photo pixels) for manual placement: the template fitted to the detector's `box`,
    else in the upper middle of the photo; always inside the photo."""
    h, w = image_shape[:2]
    if box is not None:
        iod = BOX_EYE_DISTANCE * (box.x1 - box.x0)
        eyes = (box.x0 + BOX_EYES_AT[0] * (box.x1 - box.x0), box.y0 + BOX_EYES_AT[1] * (box.y1 - box.y0))
    else:
        iod = OPEN_EYE_DISTANCE * min(w, h)
        eyes = (OPEN_EYES_AT[0] * w, OPEN_EYES_AT[1] * h)
    # template units: eye centres at (-0.5, 0) and (0.5, 0), so one unit is the eye distance
    return {name: (float(np.clip(eyes[0] + iod * x, 0, w - 1)), float(np.clip(eyes[1] + iod * y, 0, h - 1)))
            for name, (x, y) in template_handles().items()}
