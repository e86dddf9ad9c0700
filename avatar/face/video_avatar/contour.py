"""The target lip contour for mouth parameters: the photo renderer's own mapping, applied to the avatar's rest lips.

The network's parameters become rig motion weights through avatar.face.shapes (rig_weights, the fitted ShapeMap),
and each motion's unit-strength forward field (avatar.face.rig: jaw, lip_raise, lip_drop, lip_spread, lip_round,
lip_press, and the expressions' mouth_smile and mouth_frown) moves the lip points exactly as it moves the photo's
pixels. The fields are evaluated once, at the rest face's lip points, so the target contour is the rest contour plus
a weighted sum of fixed displacements.
"""
from __future__ import annotations

import numpy as np

from avatar.face import rig
from avatar.face.landmarks import (LIP_INNER, LIP_INNER_LOWER, LIP_INNER_UPPER, LIP_OUTER, LIP_OUTER_LOWER,
                                   LIP_OUTER_UPPER, MOUTH_CORNERS, MOUTH_INNER_CORNERS)
from avatar.face.render_base import field_weights
from avatar.face.rig import LOCAL_FIELDS, FaceGeometry
from avatar.face.shapes import DEFAULT_SHAPES, ShapeMap

MOUTH_FIELDS = ("jaw", "lip_raise", "lip_drop", "lip_spread", "lip_round", "lip_press",
                "mouth_smile", "mouth_frown")  # the last two: the expressions' (View → Expression) mouth corners
FIELD_INDEX = np.array([LOCAL_FIELDS.index(n) for n in MOUTH_FIELDS])
GEOMETRY_PX = 200.0  # the rest face is measured at this many pixels per eye distance (the rig works in pixels)
LIP_POINTS = LIP_INNER + LIP_OUTER  # the contour: 20 inner, then 20 outer points
CORNERS = set(MOUTH_CORNERS + MOUTH_INNER_CORNERS)  # on the lips' line: both branches' mean
LOWER = np.array([i in LIP_INNER_LOWER + LIP_OUTER_LOWER and i not in CORNERS for i in LIP_POINTS])
UPPER = np.array([i in LIP_INNER_UPPER + LIP_OUTER_UPPER and i not in CORNERS for i in LIP_POINTS])


def lip_basis(rest_points: np.ndarray) -> np.ndarray:
    """(len(MOUTH_FIELDS), 40, 2): each mouth motion's displacement of the rest lip points at full strength,
    canonical units (eye distances)."""
    pts = np.asarray(rest_points, np.float64)[:, :2] * GEOMETRY_PX
    g = FaceGeometry(pts)
    lips = pts[list(LIP_POINTS)]
    x, y = lips[:, 0], lips[:, 1]
    lower, upper = LOWER, UPPER  # by the lip a point belongs to: a closed mouth's inner lips lie on one line
    basis = []
    for name in MOUTH_FIELDS:
        field = getattr(rig, name)
        up = np.stack(field(g, x, y, False), axis=-1)
        lo = np.stack(field(g, x, y, True), axis=-1)
        d = np.where(lower[:, None], lo, np.where(upper[:, None], up, (up + lo) / 2))
        basis.append(d / GEOMETRY_PX)
    return np.array(basis)


def motion_weights(params: np.ndarray, extras: dict | None = None, shapes: ShapeMap = DEFAULT_SHAPES) -> np.ndarray:
    """The mouth motions' weights (MOUTH_FIELDS order) for mouth parameters, as the photo renderer computes them."""
    local = field_weights(params, extras, shapes)[0]
    return local[FIELD_INDEX].astype(np.float64)


def target_lips(rest_lips: np.ndarray, basis: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(40, 2) target contour: the rest lips moved by the weighted motions."""
    return rest_lips + np.tensordot(weights, basis, axes=1)
