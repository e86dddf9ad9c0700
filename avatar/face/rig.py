"""The animation rig: per-parameter displacement fields built once per photo.

Every field is designed as a forward displacement (where a point of the face moves at full strength) and stored
inverted, as a backward field on a coarse grid (where each output pixel samples the photo): the renderer blends
the fields linearly by the parameters, upsamples once and warps the photo once.

Two warps run one after the other:
- the local pass (mouth, eyes, brows) on the face box: its fields have an upper and a lower branch, one for
  pixels above the lips' meeting line and one for pixels below, so the lips can part (a tear along the line,
  filled with the synthesized mouth interior);
- the head pass (yaw, pitch, roll, breathing rise) on a larger box: a smooth warp that fades to a still background.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np

from avatar.face import landmarks as lm
from avatar.face.eyes import build_eyes
from avatar.face.mouth import measure_appearance
from avatar.face.pose import FaceTurnedWarning, turn_warning
from avatar.face.rest import close_mouth, lips_apart
from avatar.face.shapes import DEFAULT_SHAPES
from avatar.face.photo import PhotoSource, apply_affine, crop_affine, load_photo, portrait_crop_box, warp_to_canvas

# the local motions; blinks are drawn apart (avatar.face.eyes). The last five are the expressions' motions
# (avatar.face.expressions): they move the face smoothly, never parting the lips.
LOCAL_FIELDS = ("jaw", "lip_raise", "lip_drop", "lip_spread", "lip_round", "lip_press", "brow_raise",
                "mouth_smile", "mouth_frown", "brow_knit", "brow_inner_up", "eye_widen")
# Fields with one branch for both sides of the lips' line (stored twice): they never open the mouth
SMOOTH_FIELDS = ("brow_raise", "mouth_smile", "mouth_frown", "brow_knit", "brow_inner_up", "eye_widen")
# Fields that move the mouth sideways; the renderer applies them after the others (composed, not added), so a
# rounded mouth also narrows the opening the jaw makes.
SIDEWAYS_FIELDS = ("lip_spread", "lip_round")
HEAD_FIELDS = ("head_yaw", "head_pitch", "head_roll", "head_rise")
GRID_CELLS = 128  # the coarse grid has about this many cells across the canvas's longer side
MIN_STEP = 2  # pixels per grid cell, at least
SUPPORT_EPS = 0.02  # pixels: a field smaller than this is treated as zero (bounds the warped boxes)
NEWTON_ITERS = 10

# Magnitudes, as fractions of the mouth width (outer corners) W, the eye distance IOD or the face height FH.
# The mouth motions' sizes live with the rest of the mouth mapping in avatar.face.shapes (one place to calibrate).
JAW_DROP = DEFAULT_SHAPES.jaw_drop
JAW_UPPER_LIFT = DEFAULT_SHAPES.jaw_upper_lift
JAW_NARROW = DEFAULT_SHAPES.jaw_narrow
JAW_CORNER_DROP = DEFAULT_SHAPES.jaw_corner_drop
LIP_RAISE = DEFAULT_SHAPES.lip_raise
LIP_DROP = DEFAULT_SHAPES.lip_drop
LIP_CARRY = 0.8  # a raised / dropped lip moves whole over this share of its thickness, then the skin follows
SPREAD_OUT = DEFAULT_SHAPES.spread_out
ROUND_IN = DEFAULT_SHAPES.round_in
ROUND_PROTRUDE = DEFAULT_SHAPES.round_protrude
ROUND_POUT = DEFAULT_SHAPES.round_pout
PRESS_ROLL = DEFAULT_SHAPES.press_roll
BROW_LIFT = 0.11  # brow raise, in IOD
# The expressions' motions at full strength (a broad but natural expression, not a caricature)
SMILE_UP = 0.11  # a smile lifts the mouth corners this much, in W (the middle stays: the mouth curves)...
SMILE_OUT = 0.06  # ...and pulls them out this much, in W
CHEEK_LIFT = 0.05  # and lifts the cheeks this much, in IOD (their lift pushes the lower lids up a little)
CHEEK_RADIUS = 0.3  # the cheek's moving pad, in IOD, centred below each eye...
CHEEK_HEIGHT = 0.45  # ...this share of the way up from the mouth to the eyes
FROWN_DOWN = 0.08  # a frown pulls the mouth corners down this much, in W...
FROWN_IN = 0.02  # ...and in this much
CORNER_REACH = 0.6  # the corners' motion fades over this beyond them, in W
BROW_KNIT_DOWN = 0.05  # knitted brows come down this much at their inner ends, in IOD (half that at the outer)...
BROW_KNIT_IN = 0.035  # ...and toward each other this much
BROW_INNER_LIFT = 0.09  # sad brows: the inner ends rise this much, in IOD, the outer ends stay
BROW_INNER_IN = 0.015  # and draw together a little
BROW_MIDDLE = 0.1  # the fold between the brows, in IOD: how fast the inward pull changes sides there
EYE_WIDEN_UP = 0.4  # wide eyes: the upper lid rises this share of the eye's upper half-opening...
EYE_WIDEN_DOWN = 0.15  # ...and the lower lid drops this share of its lower half
EYE_WIDEN_REACH = 0.35  # the lids' motion fades over this above and below them, in IOD
YAW_RAD, PITCH_RAD, ROLL_RAD = 0.12, 0.10, 0.08  # head rotation at |param| = 1 (about 7, 6 and 4.5 degrees)
RISE = 0.012  # breathing rise at head_rise = 1, in FH
MIN_EYE_DISTANCE = 4.0  # pixels: closer eyes cannot carry a rig


def smoothstep(e0, e1, x):
    s = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


@dataclass
class FaceGeometry:
    """Frames, scales and curves of one face, measured from its landmarks (canvas pixels)."""

    points: np.ndarray
    ux: np.ndarray = field(init=False)  # unit vector along the eye line (image right for an upright face)
    vy: np.ndarray = field(init=False)  # unit vector down the face

    def __post_init__(self):
        p = self.points[:, :2]
        r, l = lm.eye_centers(self.points)
        d = l - r
        self.iod = float(np.hypot(*d))
        span = float(np.ptp(p, axis=0).max())
        if self.iod < MIN_EYE_DISTANCE or span < 2 * MIN_EYE_DISTANCE:
            raise ValueError(f"The face landmarks are degenerate (eyes {self.iod:.1f} px apart): place the eyes, "
                             "mouth and chin where they are in the photo.")
        self.ux = d / self.iod
        self.vy = np.array([-self.ux[1], self.ux[0]])
        self.mouth_center = (p[lm.MOUTH_INNER_CORNERS[0]] + p[lm.MOUTH_INNER_CORNERS[1]]) / 2
        self.W = float(np.hypot(*(p[lm.MOUTH_CORNERS[1]] - p[lm.MOUTH_CORNERS[0]])))
        self.W = max(self.W, 0.5 * self.iod)  # a degenerate mouth would collapse every field
        self.face_h = float(np.hypot(*(p[lm.CHIN] - p[lm.FOREHEAD])))
        oval = self.to_frame(p[list(lm.FACE_OVAL)], self.mouth_center)
        self.face_w = float(np.ptp(oval[:, 0]))
        up = self.to_frame(p[list(lm.LIP_INNER_UPPER)], self.mouth_center)
        lo = self.to_frame(p[list(lm.LIP_INNER_LOWER)], self.mouth_center)
        self.lip_upper = up[np.argsort(up[:, 0])]
        self.lip_lower = lo[np.argsort(lo[:, 0])]
        self.a_in = max(0.5 * float(np.ptp(np.r_[up[:, 0], lo[:, 0]])), 0.2 * self.W)  # half the slit length
        self.a_out = 0.5 * self.W
        gap = self.lower_lip_v(0.0) - self.upper_lip_v(0.0)
        self.photo_gap = max(float(gap), 0.0)
        c = self.to_frame(p[[lm.CHIN, lm.UPPER_LIP_TOP, lm.LOWER_LIP_BOTTOM, lm.UPPER_LIP_INNER,
                             lm.LOWER_LIP_INNER]], self.mouth_center)
        self.t_chin = float(c[0, 1] - self.line_v(c[0, 0]))
        self.upper_thick = max(float(c[3, 1] - c[1, 1]), 0.08 * self.W)
        self.lower_thick = max(float(c[2, 1] - c[4, 1]), 0.08 * self.W)

    # --- frames ---
    def to_frame(self, xy: np.ndarray, origin: np.ndarray) -> np.ndarray:
        d = xy - origin
        return np.stack([d @ self.ux, d @ self.vy], axis=-1)

    def uv(self, x, y, origin):
        dx, dy = x - origin[0], y - origin[1]
        return dx * self.ux[0] + dy * self.ux[1], dx * self.vy[0] + dy * self.vy[1]

    def to_xy(self, du, dv):
        return du * self.ux[0] + dv * self.vy[0], du * self.ux[1] + dv * self.vy[1]

    # --- the lips' meeting line ---
    def upper_lip_v(self, u):
        return np.interp(u, self.lip_upper[:, 0], self.lip_upper[:, 1])

    def lower_lip_v(self, u):
        return np.interp(u, self.lip_lower[:, 0], self.lip_lower[:, 1])

    def line_v(self, u):
        return (self.upper_lip_v(u) + self.lower_lip_v(u)) / 2

    def mouth_ut(self, x, y):
        u, v = self.uv(x, y, self.mouth_center)
        return u, v - self.line_v(u)

    def slit(self, u):
        """Opening profile along the slit: 1 in the middle, 0 at the inner corners (the lips part only between)."""
        return np.clip(1 - (u / self.a_in) ** 2, 0, 1) ** 0.6

    def corner_profile(self, u, reach):
        """Signed 0..1 profile: 0 at the mouth centre, 1 at the outer corners, fading over `reach` beyond them."""
        au = np.abs(u)
        inside = (np.minimum(au, self.a_out) / self.a_out) ** 1.3
        outside = np.exp(-(np.maximum(au - self.a_out, 0) / reach) ** 2)
        return np.sign(u) * inside * outside


# ---------------------------------------------------------------- forward fields (unit strength)
# Each returns (dx, dy) in canvas pixels for points (x, y); `lower` picks the branch below the lips' line.

def _beyond(g: FaceGeometry, t, lower: bool):
    """A branch continues past the line only as far as its pixels can be pulled (bounds the warped box)."""
    across = -t if lower else t
    return 1 - smoothstep(0.7 * g.W, 1.3 * g.W, across)


def jaw(g: FaceGeometry, x, y, lower: bool):
    u, t = g.mouth_ut(x, y)
    drop = JAW_DROP * g.W
    s = g.slit(u)
    au = np.abs(u)
    # the corners go down with the jaw (JAW_CORNER_DROP of the drop, both lips alike there, so they stay shut),
    # fading beside the mouth
    corners = JAW_CORNER_DROP * (1 - s) * np.exp(-(np.maximum(au - g.a_in, 0) / (0.4 * g.W)) ** 2)
    if lower:
        reach = 0.30 * g.W + 0.5 * np.maximum(au - g.a_in, 0)  # lower lip thickness, wider beside the mouth
        chin = 1 - smoothstep(0.6 * g.W, 1.6 * g.W, au)  # the jaw moves as a whole, fading into the cheeks
        line = s + corners * (1 - s)  # the lip line's drop: all of it in the middle, JAW_CORNER_DROP at the corners
        mag = line + (np.maximum(chin, line) - line) * smoothstep(0, 1, t / reach)
        neck = 1 - smoothstep(g.t_chin, g.t_chin + 2.2 * drop, t)  # the chin slides over the neck
        dv = drop * mag * neck * _beyond(g, t, lower)
    else:
        carry = _lip_carry(g, -t, g.upper_thick, 0.45 * g.W)
        dv = (-JAW_UPPER_LIFT * s + corners * (1 - s)) * drop * carry * _beyond(g, t, lower)
    du = -JAW_NARROW * drop * g.corner_profile(u, 0.5 * g.W) * np.exp(-(t / (0.6 * g.W)) ** 2)
    return g.to_xy(du, dv)


def _lip_carry(g: FaceGeometry, across, thick: float, reach: float):
    """1 over the lip's body (its thickness from the line), fading over `reach` beyond it: the lip moves whole
    instead of thinning to a line, and the skin beyond follows."""
    body = LIP_CARRY * thick
    return 1 - smoothstep(body, body + reach, across)


def lip_raise(g: FaceGeometry, x, y, lower: bool):
    u, t = g.mouth_ut(x, y)
    if lower:
        return np.zeros_like(u), np.zeros_like(u)
    dv = -LIP_RAISE * g.W * g.slit(u) ** 0.7 * _lip_carry(g, -t, g.upper_thick, 0.5 * g.W) * _beyond(g, t, lower)
    return g.to_xy(np.zeros_like(u), dv)


def lip_drop(g: FaceGeometry, x, y, lower: bool):
    """The lower lip alone drops (the chin stays): it shows the lower teeth."""
    u, t = g.mouth_ut(x, y)
    if not lower:
        return np.zeros_like(u), np.zeros_like(u)
    dv = LIP_DROP * g.W * g.slit(u) ** 0.7 * _lip_carry(g, t, g.lower_thick, 0.45 * g.W) * _beyond(g, t, lower)
    return g.to_xy(np.zeros_like(u), dv)


def lip_motion(weights) -> tuple[float, float]:
    """(upper-lip lift, lower-lip drop beyond the jaw) at the mouth's middle, in W, for LOCAL_FIELDS weights."""
    w = dict(zip(LOCAL_FIELDS, weights))
    lift = JAW_UPPER_LIFT * JAW_DROP * w["jaw"] + LIP_RAISE * w["lip_raise"]
    return float(lift), float(LIP_DROP * w["lip_drop"])


def lip_spread(g: FaceGeometry, x, y, lower: bool):
    u, t = g.mouth_ut(x, y)
    side = g.corner_profile(u, 0.7 * g.W)
    h = np.exp(-(t / (0.5 * g.W)) ** 2)
    du = SPREAD_OUT * g.W * side * h
    dv = -0.3 * SPREAD_OUT * g.W * np.abs(side) * h  # a spread pulls the corners slightly up
    thin = 0.04 * g.W * g.slit(u) * np.exp(-(t / (0.25 * g.W)) ** 2)  # and stretches the lips thinner
    dv = dv + (-thin if lower else thin)
    return g.to_xy(du, dv)


def lip_round(g: FaceGeometry, x, y, lower: bool):
    """Corners in, lips apart into a small oval, and each lip pouts (pushed forward, it shows taller): its outer
    edge moves out while its inner edge stays."""
    u, t = g.mouth_ut(x, y)
    du = -ROUND_IN * g.W * g.corner_profile(u, 0.6 * g.W) * np.exp(-(t / (0.55 * g.W)) ** 2)
    push = ROUND_PROTRUDE * g.W * g.slit(u) ** 1.5 * np.exp(-(t / (0.4 * g.W)) ** 2)
    thick = g.lower_thick if lower else g.upper_thick
    across = np.abs(t)
    pout = ROUND_POUT * g.W * np.sqrt(g.slit(u)) * smoothstep(0, thick, across) * (
        1 - smoothstep(thick, thick + 0.45 * g.W, across))
    return g.to_xy(du, push + pout if lower else -(push + pout))


def lip_press(g: FaceGeometry, x, y, lower: bool):
    """Pressed lips roll in: each lip's body slides toward the line while the crease itself stays (and a photo's
    open lips first meet at the line)."""
    u, t = g.mouth_ut(x, y)
    half_gap = g.photo_gap / 2 * np.clip(g.slit(u) * 1.5, 0, 1)
    thick = g.lower_thick if lower else g.upper_thick
    roll = PRESS_ROLL * thick
    tt = np.abs(np.maximum(t, 0) if lower else np.minimum(t, 0))
    body = smoothstep(0, 0.7 * thick, tt) * np.exp(-(np.maximum(tt - 0.5 * thick, 0) / thick) ** 2)
    reach = max(thick, 2.0 * g.photo_gap / 2 + 1)
    dv = (roll * body + half_gap * np.exp(-(tt / reach) ** 2)) * np.sqrt(g.slit(u)) * _beyond(g, t, lower)
    return g.to_xy(np.zeros_like(u), -dv if lower else dv)


def _brow_frame(g: FaceGeometry, x, y):
    """Where points lie around the brows: (u from the mouth's centre, u from the brows' middle, the lift profile
    (1 at the brows, fading up the forehead and down to the upper lids), the lateral profile (1 under the brows,
    fading beyond their outer ends), innerness (1 at the brows' inner ends and between them, 0 at their outer
    ends))."""
    pts = g.points[:, :2]
    brows = g.to_frame(pts[list(lm.RIGHT_BROW[:5] + lm.LEFT_BROW[:5])], g.mouth_center)
    brows = brows[np.argsort(brows[:, 0])]
    lids = g.to_frame(pts[list(lm.RIGHT_EYE_UPPER + lm.LEFT_EYE_UPPER)], g.mouth_center)
    lids = lids[np.argsort(lids[:, 0])]
    u, v = g.uv(x, y, g.mouth_center)
    vb = np.interp(u, brows[:, 0], brows[:, 1])
    vl = np.interp(u, lids[:, 0], lids[:, 1])
    span = brows[-1, 0] - brows[0, 0]
    middle = brows[:, 0].mean()
    lateral = 1 - smoothstep(span / 2, span / 2 + 0.45 * g.iod, np.abs(u - middle))
    down = np.maximum(vl - vb, 0.1 * g.iod)
    lift = np.where(v < vb, 1 - smoothstep(0, 1.1 * g.iod, vb - v), 1 - smoothstep(0, 1, (v - vb) / down))
    inner_end = float(np.abs(brows[:, 0] - middle).min())  # the brows' gap, half of it
    inner = 1 - smoothstep(inner_end, span / 2, np.abs(u - middle))
    return u, u - middle, lift, lateral, inner


def brow_raise(g: FaceGeometry, x, y, lower: bool):
    u, _, lift, lateral, _ = _brow_frame(g, x, y)
    lateral = lateral * (1 - 0.3 * np.exp(-(u / (0.25 * g.iod)) ** 2))  # the middle lifts a little less
    return g.to_xy(np.zeros_like(u), -BROW_LIFT * g.iod * lateral * lift)


def brow_knit(g: FaceGeometry, x, y, lower: bool):
    """Brows lowered and drawn together (a frown), the inner ends most; the skin between them bunches."""
    _, u, lift, lateral, inner = _brow_frame(g, x, y)
    w = lift * lateral
    du = -BROW_KNIT_IN * g.iod * np.tanh(u / (BROW_MIDDLE * g.iod)) * inner * w
    dv = BROW_KNIT_DOWN * g.iod * (0.5 + 0.5 * inner) * w
    return g.to_xy(du, dv)


def brow_inner_up(g: FaceGeometry, x, y, lower: bool):
    """The inner ends of the brows rise (sadness, worry), the outer ends stay."""
    _, u, lift, lateral, inner = _brow_frame(g, x, y)
    w = lift * lateral * inner
    du = -BROW_INNER_IN * g.iod * np.tanh(u / (BROW_MIDDLE * g.iod)) * w
    return g.to_xy(du, -BROW_INNER_LIFT * g.iod * w)


def _corners(g: FaceGeometry, x, y):
    """(the signed corner profile, its fade away from the lips' line) for the mouth corners' motions."""
    u, t = g.mouth_ut(x, y)
    return g.corner_profile(u, CORNER_REACH * g.W), np.exp(-(t / (0.55 * g.W)) ** 2)


def mouth_smile(g: FaceGeometry, x, y, lower: bool):
    """Corners up and out (the middle of the mouth stays, so the lips curve), cheeks lifted below the eyes."""
    side, fade = _corners(g, x, y)
    du = SMILE_OUT * g.W * side * fade
    dv = -SMILE_UP * g.W * np.abs(side) ** 1.5 * fade
    uf, vf = g.uv(x, y, g.mouth_center)
    for eye in lm.eye_centers(g.points):
        cu, cv = g.to_frame(eye[None], g.mouth_center)[0]
        r2 = ((uf - cu) ** 2 + (vf - CHEEK_HEIGHT * cv) ** 2) / (CHEEK_RADIUS * g.iod) ** 2
        dv = dv - CHEEK_LIFT * g.iod * np.exp(-0.5 * r2)
    return g.to_xy(du, dv)


def mouth_frown(g: FaceGeometry, x, y, lower: bool):
    """Corners down and a little in (a frown, a sad mouth)."""
    side, fade = _corners(g, x, y)
    return g.to_xy(-FROWN_IN * g.W * side * fade, FROWN_DOWN * g.W * np.abs(side) ** 1.5 * fade)


def eye_widen(g: FaceGeometry, x, y, lower: bool):
    """Wide-open eyes: each upper lid rises and each lower lid drops, the eye stretching about its middle line
    (the skin beyond the lids follows, fading); a negative weight narrows them (a smile's squint)."""
    pts = g.points[:, :2]
    uf, vf = g.uv(x, y, g.mouth_center)
    dv = np.zeros_like(uf)
    reach = EYE_WIDEN_REACH * g.iod
    for upper_ids, lower_ids in ((lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER), (lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER)):
        up = g.to_frame(pts[list(upper_ids)], g.mouth_center)
        lo = g.to_frame(pts[list(lower_ids)], g.mouth_center)
        up, lo = up[np.argsort(up[:, 0])], lo[np.argsort(lo[:, 0])]
        cu, half_w = (up[:, 0].max() + up[:, 0].min()) / 2, np.ptp(up[:, 0]) / 2
        v_up, v_lo = np.interp(uf, up[:, 0], up[:, 1]), np.interp(uf, lo[:, 0], lo[:, 1])
        mid = (v_up + v_lo) / 2
        h_up = np.maximum(mid - v_up, 0.02 * g.iod)  # half-openings (a closed eye in the photo still moves a bit)
        h_lo = np.maximum(v_lo - mid, 0.02 * g.iod)
        lateral = 1 - smoothstep(0.7 * half_w, 1.4 * half_w, np.abs(uf - cu))
        above = np.where(vf > v_up, np.clip((mid - vf) / h_up, 0, 1), 1 - smoothstep(0, reach, v_up - vf))
        below = np.where(vf < v_lo, np.clip((vf - mid) / h_lo, 0, 1), 1 - smoothstep(0, reach, vf - v_lo))
        dv = dv + lateral * (-EYE_WIDEN_UP * h_up * above + EYE_WIDEN_DOWN * h_lo * below)
    return g.to_xy(np.zeros_like(uf), dv)


# ---------------------------------------------------------------- head fields
@dataclass
class HeadShape:
    mask_center: np.ndarray
    mask_axes: np.ndarray  # semi-axes along ux, vy
    depth_points: np.ndarray  # (N, 2) xy of landmarks
    depth_values: np.ndarray  # (N,) depth in front of the head's turning axis, pixels
    pivot: np.ndarray  # roll pivot (the neck)


def head_shape(g: FaceGeometry) -> HeadShape:
    p = g.points
    oval = p[list(lm.FACE_OVAL), :2]
    f = g.to_frame(oval, g.mouth_center)
    c = g.mouth_center + g.ux * (f[:, 0].max() + f[:, 0].min()) / 2 + g.vy * (
        (f[:, 1].max() + f[:, 1].min()) / 2 - 0.06 * g.face_h)  # centred a bit up: hair goes with the head
    axes = np.array([np.ptp(f[:, 0]) / 2 * 1.18, np.ptp(f[:, 1]) / 2 * 1.15])
    z = p[:, 2]
    z_edge = float(np.median(z[list(lm.FACE_OVAL)]))
    depth = (z_edge - z) + 0.2 * g.face_w
    pivot = p[lm.CHIN, :2] + g.vy * 0.35 * g.face_h
    return HeadShape(c, axes, p[:, :2].copy(), np.clip(depth, 0.05 * g.face_w, None), pivot)


def head_mask(g: FaceGeometry, hs: HeadShape, x, y):
    u, v = g.uv(x, y, hs.mask_center)
    r = np.hypot(u / hs.mask_axes[0], v / hs.mask_axes[1])
    head = 1 - smoothstep(1.0, 1.32, r)  # a narrow fade: fewer pixels to warp, still gentle at a few degrees
    uc, vc = g.uv(x, y, g.points[lm.CHIN, :2])
    neck = 0.85 * (1 - smoothstep(0.22 * g.face_w, 0.45 * g.face_w, np.abs(uc))) * (vc > -0.3 * g.face_h) * (
        1 - smoothstep(0, 0.6 * g.face_h, vc))
    return np.maximum(head, neck)


def head_depth(g: FaceGeometry, hs: HeadShape, x, y):
    """Depth in front of the turning axis, interpolated between landmarks (Gaussian-weighted), base value outside."""
    sigma = 0.07 * g.face_w
    base = 0.2 * g.face_w
    flat_x, flat_y = x.ravel(), y.ravel()
    num = np.zeros(flat_x.shape)
    den = np.full(flat_x.shape, 0.05)
    for start in range(0, len(hs.depth_values), 64):
        pts = hs.depth_points[start:start + 64]
        k = np.exp(-((flat_x[:, None] - pts[None, :, 0]) ** 2 + (flat_y[:, None] - pts[None, :, 1]) ** 2)
                   / (2 * sigma**2))
        num += k @ hs.depth_values[start:start + 64]
        den += k.sum(1)
    return ((num + 0.05 * base) / den).reshape(x.shape)


def depth_sampler(g: FaceGeometry, hs: HeadShape, width: int, height: int, cell: int):
    """head_depth tabulated on a grid once, then read bilinearly (the Newton inversion reads it many times)."""
    gx, gy = _grid(-(-height // cell), -(-width // cell), cell)
    table = head_depth(g, hs, gx, gy).astype(np.float32)

    def sample(x, y):
        mx = ((x + 0.5) / cell - 0.5).astype(np.float32)
        my = ((y + 0.5) / cell - 0.5).astype(np.float32)
        return cv2.remap(table, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)

    return sample


def head_fields(g: FaceGeometry, hs: HeadShape, depth, x, y, which=range(len(HEAD_FIELDS))):
    m = head_mask(g, hs, x, y)
    d = depth(x, y) * m
    zero = np.zeros_like(x)
    yaw = g.to_xy(YAW_RAD * d, zero)
    pitch = g.to_xy(zero, PITCH_RAD * d)
    px, py = x - hs.pivot[0], y - hs.pivot[1]
    c, s = np.cos(ROLL_RAD), np.sin(ROLL_RAD)
    roll = (m * (c * px - s * py - px), m * (s * px + c * py - py))
    rise = g.to_xy(zero, -RISE * g.face_h * m)
    return [(yaw, pitch, roll, rise)[k] for k in which]


# ---------------------------------------------------------------- inversion
def invert(forward, gx: np.ndarray, gy: np.ndarray, max_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Backward field b with p = q + b(q) the photo point that the forward field moves onto output point q (Newton)."""
    fx, fy = forward(gx, gy)
    x, y = gx - fx, gy - fy
    eps = 0.25
    for _ in range(NEWTON_ITERS):
        fx, fy = forward(x, y)
        rx, ry = x + fx - gx, y + fy - gy
        ax, ay = forward(x + eps, y)
        bx, by = forward(x, y + eps)
        j11, j21 = 1 + (ax - fx) / eps, (ay - fy) / eps
        j12, j22 = (bx - fx) / eps, 1 + (by - fy) / eps
        det = j11 * j22 - j12 * j21
        det = np.where(np.abs(det) < 0.02, np.where(det < 0, -0.02, 0.02), det)
        sx, sy = (j22 * rx - j12 * ry) / det, (-j21 * rx + j11 * ry) / det
        n = np.hypot(sx, sy)
        k = np.minimum(1.0, max_step / np.maximum(n, 1e-9))
        x, y = x - sx * k, y - sy * k
    return (x - gx).astype(np.float32), (y - gy).astype(np.float32)


# ---------------------------------------------------------------- the rig
@dataclass
class Box:
    """A box of the coarse grid: cells [c0, c1) x [r0, r1); in pixels x0..x1, y0..y1 clipped to the canvas."""

    c0: int
    r0: int
    c1: int
    r1: int
    step: int
    width: int
    height: int

    @property
    def x0(self):
        return self.c0 * self.step

    @property
    def y0(self):
        return self.r0 * self.step

    @property
    def x1(self):
        return min(self.c1 * self.step, self.width)

    @property
    def y1(self):
        return min(self.r1 * self.step, self.height)

    @property
    def shape(self):
        return self.y1 - self.y0, self.x1 - self.x0


@dataclass
class Rig:
    image: np.ndarray  # canvas RGB uint8 (H, W, 3)
    landmarks: np.ndarray  # (478, 3) canvas pixels
    geometry: FaceGeometry
    step: int
    local_box: Box
    local_fields: np.ndarray  # (len(LOCAL_FIELDS), 2 branches, rows, cols, 2) float32 backward fields
    head_box: Box
    head_fields: np.ndarray  # (len(HEAD_FIELDS), rows, cols, 2)
    below: np.ndarray  # (H, W) bool over local_box: pixel is below the lips' line (lower branch)
    band: tuple[int, int]  # rows of local_box where `below` changes along a row
    line_t: np.ndarray  # (H, W) float32 over local_box: signed distance below the lips' line, pixels
    mouth_box: tuple[int, int, int, int]  # x0, y0, x1, y1 canvas pixels where the lips can part
    mouth_u: np.ndarray  # float32 over mouth_box: position along the mouth from its centre, pixels
    appearance: "object"  # avatar.face.mouth.MouthAppearance
    eyes: tuple  # (right, left) avatar.face.eyes.EyeBlink: each eye's closing stages
    closed_at_rest: bool = False  # the photo's lips were apart and `image` is the photo with them closed
    build_seconds: float = 0.0
    turn_warning: str | None = None  # a sentence for the user when the face is in three-quarter view (pose.py)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def _grid(h_cells, w_cells, step):
    gy, gx = np.mgrid[0:h_cells, 0:w_cells].astype(np.float64)
    return (gx + 0.5) * step - 0.5, (gy + 0.5) * step - 0.5  # cv2.resize's sample positions


def _support(mags: np.ndarray, step: int, width: int, height: int, pad: int) -> Box:
    rows = np.nonzero(mags.max(1) > SUPPORT_EPS)[0]
    cols = np.nonzero(mags.max(0) > SUPPORT_EPS)[0]
    hc, wc = mags.shape
    if len(rows) == 0:
        return Box(0, 0, 1, 1, step, width, height)
    return Box(max(cols[0] - pad, 0), max(rows[0] - pad, 0), min(cols[-1] + pad + 1, wc),
               min(rows[-1] + pad + 1, hc), step, width, height)


FIELD_FUNCTIONS = {"jaw": jaw, "lip_raise": lip_raise, "lip_drop": lip_drop, "lip_spread": lip_spread,
                   "lip_round": lip_round, "lip_press": lip_press, "brow_raise": brow_raise,
                   "mouth_smile": mouth_smile, "mouth_frown": mouth_frown, "brow_knit": brow_knit,
                   "brow_inner_up": brow_inner_up, "eye_widen": eye_widen}  # forward field of each LOCAL_FIELDS


def build_local(g: FaceGeometry, width: int, height: int, step: int):
    hc, wc = -(-height // step), -(-width // step)
    gx, gy = _grid(hc, wc, step)
    funcs = [FIELD_FUNCTIONS[name] for name in LOCAL_FIELDS]
    mags = np.zeros((hc, wc))
    for f in funcs:
        for lower in (False, True):
            dx, dy = f(g, gx, gy, lower)
            mags = np.maximum(mags, np.hypot(dx, dy))
    pad = 2 + int(np.ceil(mags.max() / step))
    box = _support(mags, step, width, height, pad)
    sx, sy = gx[box.r0:box.r1, box.c0:box.c1], gy[box.r0:box.r1, box.c0:box.c1]
    fields = np.zeros((len(funcs), 2, box.r1 - box.r0, box.c1 - box.c0, 2), np.float32)
    for k, f in enumerate(funcs):
        for b, lower in enumerate((False, True)):
            if b == 1 and LOCAL_FIELDS[k] in SMOOTH_FIELDS:  # the same on both sides
                fields[k, 1] = fields[k, 0]
                continue
            bx, by = invert(lambda x, y: f(g, x, y, lower), sx, sy, max_step=0.25 * g.W)
            fields[k, b, ..., 0], fields[k, b, ..., 1] = bx, by
    return box, fields


def build_head(g: FaceGeometry, width: int, height: int, step: int):
    hc, wc = -(-height // step), -(-width // step)
    coarse = 2 * step  # the support search needs no fine grid
    cx, cy = _grid(-(-height // coarse), -(-width // coarse), coarse)
    hs = head_shape(g)
    depth = depth_sampler(g, hs, width, height, coarse)
    mags = np.max([np.hypot(*f) for f in head_fields(g, hs, depth, cx, cy)], axis=0)
    cbox = _support(mags, coarse, width, height, 1)
    box = Box(cbox.c0 * 2, cbox.r0 * 2, min(cbox.c1 * 2, wc), min(cbox.r1 * 2, hc), step, width, height)
    gx, gy = _grid(hc, wc, step)
    sx, sy = gx[box.r0:box.r1, box.c0:box.c1], gy[box.r0:box.r1, box.c0:box.c1]
    fields = np.zeros((len(HEAD_FIELDS), box.r1 - box.r0, box.c1 - box.c0, 2), np.float32)
    for k in range(len(HEAD_FIELDS)):
        bx, by = invert(lambda x, y: head_fields(g, hs, depth, x, y, (k,))[0], sx, sy, max_step=0.1 * g.face_w)
        fields[k, ..., 0], fields[k, ..., 1] = bx, by
    return box, fields


def _mouth_box(g: FaceGeometry, box: Box):
    drop = JAW_DROP * g.W
    rounding = (ROUND_PROTRUDE + ROUND_POUT) * g.W
    up = JAW_UPPER_LIFT * drop + LIP_RAISE * g.W + rounding + 0.04 * g.W + g.photo_gap / 2 + 3
    down = drop + LIP_DROP * g.W + rounding + 0.04 * g.W + g.photo_gap / 2 + 3
    corners = []
    for u in (-g.a_in - 3, g.a_in + 3):
        v0 = float(g.line_v(np.clip(u, -g.a_in, g.a_in)))
        for v in (v0 - up, v0 + down, float(g.line_v(0)) - up, float(g.line_v(0)) + down):
            corners.append(g.mouth_center + u * g.ux + v * g.vy)
    c = np.array(corners)
    x0 = int(np.clip(np.floor(c[:, 0].min()), box.x0, box.x1 - 1))
    y0 = int(np.clip(np.floor(c[:, 1].min()), box.y0, box.y1 - 1))
    x1 = int(np.clip(np.ceil(c[:, 0].max()) + 1, x0 + 1, box.x1))
    y1 = int(np.clip(np.ceil(c[:, 1].max()) + 1, y0 + 1, box.y1))
    return x0, y0, x1, y1


def rig_from_canvas(image: np.ndarray, points: np.ndarray) -> Rig:
    t0 = time.perf_counter()
    closed_at_rest = lips_apart(points)
    if closed_at_rest:  # a smile with teeth: the rest pose is closed lips (avatar.face.rest)
        image, points = close_mouth(image, points)
    height, width = image.shape[:2]
    step = max(MIN_STEP, int(round(max(width, height) / GRID_CELLS)))
    g = FaceGeometry(points)
    local_box, local_fields = build_local(g, width, height, step)
    head_box, head_fields_ = build_head(g, width, height, step)
    ys, xs = np.mgrid[local_box.y0:local_box.y1, local_box.x0:local_box.x1].astype(np.float64)
    _, t = g.mouth_ut(xs, ys)
    below = t > 0
    changing = np.nonzero(below.any(1) & ~below.all(1))[0]
    band = (int(changing[0]), int(changing[-1]) + 1) if len(changing) else (0, 0)
    mb = _mouth_box(g, local_box)
    mys, mxs = np.mgrid[mb[1]:mb[3], mb[0]:mb[2]].astype(np.float64)
    mouth_u, _ = g.uv(mxs, mys, g.mouth_center)
    appearance = measure_appearance(image, g)
    eyes = build_eyes(image, points, g.ux, g.vy)
    rig = Rig(image=np.ascontiguousarray(image), landmarks=points, geometry=g, step=step, local_box=local_box,
              local_fields=local_fields, head_box=head_box, head_fields=head_fields_, below=below, band=band,
              line_t=t.astype(np.float32), mouth_box=mb, mouth_u=mouth_u.astype(np.float32), appearance=appearance,
              eyes=eyes, closed_at_rest=closed_at_rest)
    rig.build_seconds = time.perf_counter() - t0
    return rig


def build_rig(photo: PhotoSource, canvas: int | tuple[int, int] | None = 512, face_index: int = 0,
              landmarks: np.ndarray | None = None) -> Rig:
    """Load a photo, find the face (or take fitted `landmarks`, photo pixels), frame it and build its rig.

    canvas: an int N gives an N x N portrait crop around the face, (w, h) a crop of that size, None the whole photo.
    Raises PhotoError for unreadable photos and NoFaceError (carrying the loaded image) when no face is found;
    a found face turned to profile raises FaceTurnedError (a NoFaceError without the image: placing points by hand
    would not help); one in three-quarter view is rigged, with a sentence for the user in `rig.turn_warning` (also
    warned as a FaceTurnedWarning).
    """
    image = load_photo(photo)
    if landmarks is None:
        faces = lm.detect_faces(image)
        if not faces:
            raise lm.NoFaceError("No face was found in this photo. Place the eyes, mouth and chin by hand.", image)
        if not 0 <= face_index < len(faces):
            raise lm.NoFaceError(f"The photo has {len(faces)} face(s), so face {face_index} does not exist "
                                 f"(0 is the largest).", image)
        points = faces[face_index]
        warning = turn_warning(points)
        if warning:
            warnings.warn(FaceTurnedWarning(warning), stacklevel=2)
    else:
        warning = None
        points = np.asarray(landmarks, np.float64)
        if points.shape not in ((lm.N_LANDMARKS, 2), (lm.N_LANDMARKS, 3)) or not np.all(np.isfinite(points)):
            raise ValueError(f"landmarks must be a finite ({lm.N_LANDMARKS}, 2|3) array, got {points.shape}.")
        if points.shape[1] == 2:
            points = np.hstack([points, np.zeros((len(points), 1))])
    if canvas is None:
        rig = rig_from_canvas(image, points)
    else:
        size = (canvas, canvas) if isinstance(canvas, (int, np.integer)) else (int(canvas[0]), int(canvas[1]))
        if min(size) < 64 or max(size) > 4096:
            raise ValueError(f"canvas must be between 64 and 4096 pixels, got {size}.")
        cx, cy, crop_h = portrait_crop_box(points, image.shape[:2], aspect=size[0] / size[1])
        m = crop_affine((cx, cy), crop_h, size)
        rig = rig_from_canvas(warp_to_canvas(image, m, size), apply_affine(points, m))
    rig.turn_warning = warning
    return rig
