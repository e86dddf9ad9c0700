"""Which way a found face is turned, from its FaceMesh points, and whether the rig can animate it.

The rig warps a face seen from the front. Turned a little, it animates as well; turned to three-quarter view, the far
half of the mouth and the far eye are foreshortened, so they still animate but stretch; in profile the far eye and
mouth corner are hidden and FaceMesh only guesses them, so blinks and the mouth would be drawn on the cheek.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.face.landmarks import NoFaceError, load_template

MESH_POINTS = 468  # the mesh proper (the 10 iris points follow the gaze, not the head)
# Thresholds from the template turned in 3D (load_template): past 25 degrees the nose tip passes the far eye's inner
# corner and the far half of the face narrows; past 50 degrees the far eye is under two thirds of the near eye's
# width and its inner corner is behind the nose bridge.
THREE_QUARTER_YAW = 25.0  # degrees: animated, with a warning that the far side may stretch
PROFILE_YAW = 50.0  # degrees: not animated


@dataclass(frozen=True)
class HeadPose:
    """Degrees. yaw > 0: the face turned towards the image's left (the subject's right); pitch > 0: chin up;
    roll > 0: the head tilted clockwise in the image."""
    yaw: float
    pitch: float
    roll: float


class FaceTurnedError(NoFaceError):
    """The face found is turned too far to the side to animate (no manual placement offered: ``image`` is None)."""


class FaceTurnedWarning(UserWarning):
    """The face is in three-quarter view: it animates, but the far side may stretch. str() is a sentence to show."""


def head_pose(points: np.ndarray, template: np.ndarray | None = None) -> HeadPose:
    """The rotation that best turns the frontal template into these (x, y, z) points (orthogonal Procrustes in 3D;
    FaceMesh's z is depth in the same scale as x)."""
    t = (load_template() if template is None else template)[:MESH_POINTS]
    p = np.asarray(points, np.float64)[:MESH_POINTS]
    a, b = t - t.mean(0), p - p.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))  # a rotation, not a mirror image
    r = (u @ np.diag([1.0, 1.0, d]) @ vt).T  # b ~ a @ r.T
    yaw = np.degrees(np.arcsin(np.clip(r[0, 2], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(r[1, 2], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return HeadPose(float(yaw), float(pitch), float(roll))


def turn_warning(points: np.ndarray, template: np.ndarray | None = None) -> str | None:
    """None for a face turned up to THREE_QUARTER_YAW; a sentence for a three-quarter view; raises FaceTurnedError
    for a profile (past PROFILE_YAW)."""
    yaw = abs(head_pose(points, template).yaw)
    if yaw > PROFILE_YAW:
        raise FaceTurnedError(
            f"The face is turned about {yaw:.0f}° to the side, so its far eye and mouth corner are hidden and it "
            "cannot be animated. Use a photo (or another face in it) where both eyes are visible.")
    if yaw > THREE_QUARTER_YAW:
        return (f"The face is turned about {yaw:.0f}° to the side: it talks and blinks, but the far side of the "
                "mouth may stretch. A photo facing the camera looks best.")
    return None
