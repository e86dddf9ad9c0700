"""The rest pose: a photo whose lips are apart (a smile with teeth) is closed once, when its rig is built.

Each lip slides toward the lips' meeting line by half the gap, carrying its own texture; the skin beyond it
stretches over a short reach and the photo's teeth are never sampled. The rig is then built on the closed photo
and its closed landmarks, so silence shows closed lips and every opening shows the synthesized interior.
The map is evaluated per pixel at full resolution (it is built once, not per frame).
"""
from __future__ import annotations

import cv2
import numpy as np

from avatar.face import landmarks as lm

OPEN_GAP = 0.03  # lips apart by more than this (in mouth widths, at the middle) are closed at rest
SEAM_OVERLAP = 0.012  # each lip is pulled this much further (in mouth widths), past its edge pixels (teeth)
SKIN_REACH = 0.45  # the skin beyond a lip stretches over this (in mouth widths) to follow it
FIXED_POINT_ITERS = 30


def _frame(points: np.ndarray):
    """(origin, ux, vy): the mouth centre and the unit vectors along the eye line and down the face."""
    p = points[:, :2]
    r, l = lm.eye_centers(points)
    ux = (l - r) / max(float(np.hypot(*(l - r))), 1e-6)
    vy = np.array([-ux[1], ux[0]])
    origin = (p[lm.MOUTH_INNER_CORNERS[0]] + p[lm.MOUTH_INNER_CORNERS[1]]) / 2
    return origin, ux, vy


class _Lips:
    """The inner-lip curves of a photo in the mouth frame, and the per-column closure of each lip."""

    def __init__(self, points: np.ndarray):
        self.origin, self.ux, self.vy = _frame(points)
        f = self.uv(points[:, 0], points[:, 1])
        up = np.stack([f[0][list(lm.LIP_INNER_UPPER)], f[1][list(lm.LIP_INNER_UPPER)]], 1)
        lo = np.stack([f[0][list(lm.LIP_INNER_LOWER)], f[1][list(lm.LIP_INNER_LOWER)]], 1)
        self.up, self.lo = up[np.argsort(up[:, 0])], lo[np.argsort(lo[:, 0])]
        top = np.stack([f[0][list(lm.LIP_OUTER_UPPER)], f[1][list(lm.LIP_OUTER_UPPER)]], 1)
        bottom = np.stack([f[0][list(lm.LIP_OUTER_LOWER)], f[1][list(lm.LIP_OUTER_LOWER)]], 1)
        self.top, self.bottom = top[np.argsort(top[:, 0])], bottom[np.argsort(bottom[:, 0])]
        c = points[list(lm.MOUTH_CORNERS), :2]
        self.W = max(float(np.hypot(*(c[1] - c[0]))), 1.0)
        self.u0 = min(self.up[0, 0], self.lo[0, 0])
        self.u1 = max(self.up[-1, 0], self.lo[-1, 0])

    def uv(self, x, y):
        dx, dy = x - self.origin[0], y - self.origin[1]
        return dx * self.ux[0] + dy * self.ux[1], dx * self.vy[0] + dy * self.vy[1]

    def xy(self, u, v):
        return (self.origin[0] + u * self.ux[0] + v * self.vy[0], self.origin[1] + u * self.ux[1] + v * self.vy[1])

    def curves(self, u):
        """(meeting line, upper lip's pull, lower lip's pull, upper lip thickness, lower lip thickness) at u."""
        vu = np.interp(u, self.up[:, 0], self.up[:, 1])
        vl = np.interp(u, self.lo[:, 0], self.lo[:, 1])
        gap = np.maximum(vl - vu, 0.0)
        inside = (u > self.u0) & (u < self.u1)
        half = np.where(inside, gap / 2, 0.0)
        # the overlap fades toward the corners with the gap, so closed corners stay exactly as they were
        over = SEAM_OVERLAP * self.W * np.clip(gap / (0.02 * self.W), 0, 1)
        line = (vu + vl) / 2
        thick_u = np.maximum(vu - np.interp(u, self.top[:, 0], self.top[:, 1]), 0.05 * self.W)
        thick_l = np.maximum(np.interp(u, self.bottom[:, 0], self.bottom[:, 1]) - vl, 0.05 * self.W)
        return line, half + over * inside, half + over * inside, thick_u, thick_l

    def pull(self, u, v):
        """Backward map along vy: the photo row each output point (u, v) samples is v + pull."""
        line, hu, hl, tu, tl = self.curves(u)
        d = v - line
        reach = SKIN_REACH * self.W
        # the whole lip moves by its pull; beyond the lip the skin follows less and less (smoothstep)
        s_up = np.clip((-d - tu) / reach, 0, 1)
        s_lo = np.clip((d - tl) / reach, 0, 1)
        w_up = 1 - s_up * s_up * (3 - 2 * s_up)
        w_lo = 1 - s_lo * s_lo * (3 - 2 * s_lo)
        return np.where(d < 0, -hu * w_up, hl * w_lo)


def lips_apart(points: np.ndarray) -> bool:
    """Whether the photo's lips are apart enough to be closed at rest (middle gap over OPEN_GAP mouth widths)."""
    lips = _Lips(points)
    u = np.linspace(-0.15 * lips.W, 0.15 * lips.W, 7)
    gap = np.interp(u, lips.lo[:, 0], lips.lo[:, 1]) - np.interp(u, lips.up[:, 0], lips.up[:, 1])
    return bool(np.max(gap) > OPEN_GAP * lips.W)


def close_mouth(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the photo with its lips brought together, the landmarks moved with them)."""
    lips = _Lips(points)
    h, w = image.shape[:2]
    # only a box around the mouth can change
    pad = SKIN_REACH * lips.W + 0.5 * lips.W
    corners = np.array([lips.xy(u, v) for u in (lips.u0 - pad, lips.u1 + pad) for v in (-pad - 0.3 * lips.W,
                                                                                      pad + 0.3 * lips.W)])
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, [x0 + 1, y0 + 1], [w, h])
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, v = lips.uv(xs, ys)
    dv = lips.pull(u, v)
    map_x = (xs + dv * lips.vy[0]).astype(np.float32)
    map_y = (ys + dv * lips.vy[1]).astype(np.float32)
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, _move_points(lips, points)


def _move_points(lips: _Lips, points: np.ndarray) -> np.ndarray:
    """Where each landmark goes: the output point q whose source q + pull(q) is the landmark (fixed point, per
    side of the line; an inner-lip point lands on the meeting line)."""
    out = points.astype(np.float64).copy()
    u, v = lips.uv(points[:, 0], points[:, 1])
    line, *_ = lips.curves(u)
    upper = np.zeros(len(points), bool)
    upper[list(lm.LIP_INNER_UPPER)] = True
    side = np.where(upper, -1.0, np.where(v < line, -1.0, 1.0))  # inner upper-lip points lie above the line
    lower = np.zeros(len(points), bool)
    lower[list(lm.LIP_INNER_LOWER)] = True
    side[lower & ~upper] = 1.0
    q = v.copy()
    for _ in range(FIXED_POINT_ITERS):
        q_side = np.where(side < 0, np.minimum(q, line - 1e-6), np.maximum(q, line + 1e-6))
        q = v - lips.pull(u, q_side)
    q = np.where(side < 0, np.minimum(q, line), np.maximum(q, line))
    # the inner corners belong to both lips: they stay on the line
    corners = list(lm.MOUTH_INNER_CORNERS)
    q[corners] = line[corners]
    out[:, 0] += (q - v) * lips.vy[0]  # moved along vy only: points the map leaves alone stay exactly put
    out[:, 1] += (q - v) * lips.vy[1]
    return out
