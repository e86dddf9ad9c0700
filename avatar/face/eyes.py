"""Blinks: each eye's closing drawn once per photo at full resolution, as a few stages the renderer blends.

A coarse displacement field cannot close an eye: the lids meet along a seam a few pixels long, where the map
jumps from the upper lid to the lower one, and a smooth grid smears that jump into a dark band of squashed
eyeball. So each eye is closed here with an exact per-pixel map: the upper lid's skin slides down over the
eyeball (occluding it, not squashing it) and the lower lid rises to meet it; at blink = 1 no eyeball pixel is
sampled. The renderer writes the blended stage into the photo it warps, so head and mouth motion carry it.

FaceMesh's lid contour sits a little inside the visible opening (its lash line is above the landmarks), so the
lids travel from a margin beyond the landmarks; the lid skin reach above is short, so glasses rims stay straight.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar.face import landmarks as lm

BLINK_STAGES = 17  # closing stages drawn per eye; adjacent ones differ by under a pixel of lid travel
LID_MARGIN_UP = 0.14  # the visible upper lid edge this far above the landmarks, in eye widths (at the middle; 0.10
# left a sliver of the lid line FaceMesh reads above the closed lash line: re-detected closed height mean 0.085 ->
# 0.074 with LASH_DARK 0.75 on the 7 dev faces)
LID_MARGIN_DOWN = 0.05  # and the lower lid edge this far below
CORNER_EXTEND = 1.25  # the margins reach this far past the eye corners (in half eye widths), tapering to 0
UPPER_SHARE = 1.0  # the upper lid travels this share of the opening; the lower lid rises the rest (real lower lids
# barely move in a blink; FaceMesh re-detected closed/open height on 7 dev faces: 0.95 -> 1.0 with the darker lash
# line below, mean 0.254 -> 0.206)
LID_REACH_UP = 0.45  # lid skin this far above the lid (in half eye widths) stretches down: spares glasses rims
LID_REACH_DOWN = 0.35  # lower-lid skin this far below stretches up
MIN_REACH = 0.15  # in half eye widths: the lid skin reach never shrinks below this
RIM_DARKER = 0.65  # a row darker than this times the brightest lid skin row below it ends the reach (a glasses
# rim, a brow or hair: those must not slide down with the lid)
LASH_DARK = 0.75  # the moving lid edge is darkened this much (its lashes and shadow) at its centre: the closed
# eye's one dark line, where FaceMesh puts both lids (0.6: re-detected closed height on 7 dev faces up to 0.26)
LASH_WIDTH = 0.022  # in eye widths (plus 0.4 pixel)
SUPERSAMPLE = 3  # samples per pixel along each axis when drawing the stages


@dataclass
class EyeBlink:
    """One eye's closing: stages[k] is the canvas box y0:y1, x0:x1 at blink k / (BLINK_STAGES - 1)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 canvas pixels
    stages: np.ndarray  # (BLINK_STAGES, h, w, 3) uint8 RGB; stages[0] is the photo itself

    def patch(self, level: float) -> np.ndarray:
        """The box at blink `level` (0..1): the two nearest stages blended."""
        s = min(max(level, 0.0), 1.0) * (len(self.stages) - 1)
        k = min(int(s), len(self.stages) - 2)
        f = s - k
        if f <= 0.0:
            return self.stages[k]
        return cv2.addWeighted(self.stages[k], 1.0 - f, self.stages[k + 1], f, 0.0)


class _Lids:
    def __init__(self, image: np.ndarray, points: np.ndarray, upper_idx, lower_idx, ux: np.ndarray,
                 vy: np.ndarray):
        pts = points[:, :2]
        self.ux, self.vy = ux, vy
        self.center = pts[list(upper_idx + lower_idx)].mean(0)
        up = self.frame(pts[list(upper_idx)])
        lo = self.frame(pts[list(lower_idx)])
        self.up, self.lo = up[np.argsort(up[:, 0])], lo[np.argsort(lo[:, 0])]
        u0, u1 = min(self.up[0, 0], self.lo[0, 0]), max(self.up[-1, 0], self.lo[-1, 0])
        self.uc, self.half_w = (u0 + u1) / 2, max((u1 - u0) / 2, 1.0)
        self.margin_up = LID_MARGIN_UP * 2 * self.half_w
        self.margin_up, self.reach_up = self._free_reach(image)

    def _free_reach(self, image: np.ndarray) -> tuple[float, float]:
        """(upper margin, lid skin reach above it): LID_MARGIN_UP eye widths and LID_REACH_UP half eye widths, or
        less where a darker band (a glasses rim, the brow) begins above the landmarks' lid; measured on rows that
        follow the lid's curve over its middle."""
        luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        u = np.linspace(self.uc - 0.6 * self.half_w, self.uc + 0.6 * self.half_w, 15)
        a = np.interp(u, self.up[:, 0], self.up[:, 1])
        full = self.margin_up + LID_REACH_UP * self.half_w
        d = np.arange(0.0, full + 1.0)
        v = a[None, :] - d[:, None]
        x = self.center[0] + u[None, :] * self.ux[0] + v * self.vy[0]
        y = self.center[1] + u[None, :] * self.ux[1] + v * self.vy[1]
        rows = cv2.remap(luma, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE).mean(1)
        brightest = np.maximum.accumulate(rows)
        dark = np.nonzero(rows < RIM_DARKER * brightest)[0]
        free = float(d[dark[0]] - 1) if len(dark) else full  # skin rows between the lid and the band
        margin = min(self.margin_up, 0.4 * free)
        return margin, float(np.clip(free - margin, MIN_REACH * self.half_w, LID_REACH_UP * self.half_w))

    def frame(self, xy):
        d = xy - self.center
        return np.stack([d @ self.ux, d @ self.vy], axis=-1)

    def edges(self, u):
        """(upper lid edge A, lower lid edge B) at u, margins included; A == B beyond the corners."""
        ew = 2 * self.half_w
        taper = np.clip(1 - ((u - self.uc) / (CORNER_EXTEND * self.half_w)) ** 2, 0, 1) ** 0.7
        vu = np.interp(u, self.up[:, 0], self.up[:, 1])
        vl = np.maximum(np.interp(u, self.lo[:, 0], self.lo[:, 1]), vu)
        return vu - self.margin_up * taper, vl + LID_MARGIN_DOWN * ew * taper

    def source_v(self, u, v, level: float):
        """Backward map along vy at blink `level`: the photo row that output point (u, v) samples, and the lash
        shading there."""
        a, b = self.edges(u)
        h = b - a
        a2, b2 = a + level * UPPER_SHARE * h, b - level * (1 - UPPER_SHARE) * h
        r_up, r_lo = self.reach_up, LID_REACH_DOWN * self.half_w
        top = a - r_up
        src = np.where(v < top, v, top + (v - top) * r_up / (r_up + a2 - a))  # lid skin slides down over the eye
        src = np.where(v >= a2, v, src)  # the eyeball stays where it is, behind the lids
        lower = b + (v - b2) * r_lo / (r_lo + b - b2)  # the lower lid's skin rises
        src = np.where((v >= b2) & (v < b + r_lo), lower, src)
        width = LASH_WIDTH * 2 * self.half_w + 0.4
        lash = LASH_DARK * min(level / 0.25, 1.0) * np.exp(-((v - a2) / width) ** 2) * (h > 0.5)
        return src, lash


def _sample(image: np.ndarray, lids: _Lids, box, level: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The box drawn at `level` (None: the identity map), supersampled and averaged back to pixels (float32),
    and how far each pixel's samples moved (pixels, mean)."""
    x0, y0, x1, y1 = box
    s = SUPERSAMPLE
    off = (np.arange(s) + 0.5) / s - 0.5
    ys = (np.arange(y0, y1)[:, None] + off[None, :]).ravel()
    xs = (np.arange(x0, x1)[:, None] + off[None, :]).ravel()
    gx, gy = np.meshgrid(xs, ys)
    shade = moved = np.zeros_like(gx)
    if level is not None:
        d = np.stack([gx - lids.center[0], gy - lids.center[1]], axis=-1)
        u, v = d @ lids.ux, d @ lids.vy
        src, shade = lids.source_v(u, v, level)
        gx, gy = gx + (src - v) * lids.vy[0], gy + (src - v) * lids.vy[1]
        moved = np.abs(src - v) + shade * 10
    out = cv2.remap(image.astype(np.float32), gx.astype(np.float32), gy.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE) * (1 - shade[..., None]).astype(np.float32)
    size = (x1 - x0, y1 - y0)
    return (cv2.resize(out, size, interpolation=cv2.INTER_AREA),
            cv2.resize(moved.astype(np.float32), size, interpolation=cv2.INTER_AREA))


def build_eye(image: np.ndarray, points: np.ndarray, upper_idx, lower_idx, ux, vy) -> EyeBlink:
    lids = _Lids(image, points, upper_idx, lower_idx, ux, vy)
    h_img, w_img = image.shape[:2]
    u = np.linspace(lids.uc - CORNER_EXTEND * lids.half_w, lids.uc + CORNER_EXTEND * lids.half_w, 33)
    a, b = lids.edges(u)
    v0 = float(a.min()) - LID_REACH_UP * lids.half_w - 2
    v1 = float(b.max()) + LID_REACH_DOWN * lids.half_w + 2
    corners = np.array([lids.center + uu * ux + vv * vy for uu in (u[0] - 2, u[-1] + 2) for vv in (v0, v1)])
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w_img - 1, h_img - 1])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, [x0 + 1, y0 + 1], [w_img, h_img])
    box = (int(x0), int(y0), int(x1), int(y1))
    photo = image[y0:y1, x0:x1].astype(np.float32)
    # the supersampling blurs a little: add back what it loses where pixels stay (still pixels stay the photo's)
    detail = photo - _sample(image, lids, box, None)[0]
    stages = [image[y0:y1, x0:x1].copy()]
    for level in np.linspace(0, 1, BLINK_STAGES)[1:]:
        drawn, moved = _sample(image, lids, box, float(level))
        drawn += detail * np.clip(1 - 2 * moved, 0, 1)[..., None]
        stages.append(np.clip(np.floor(drawn + 0.5), 0, 255).astype(np.uint8))
    return EyeBlink(box, np.stack(stages))


def build_eyes(image: np.ndarray, points: np.ndarray, ux: np.ndarray, vy: np.ndarray) -> tuple[EyeBlink, EyeBlink]:
    """(right eye, left eye) closings, in the order of render.EYE_PARAMS."""
    return (build_eye(image, points, lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER, ux, vy),
            build_eye(image, points, lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER, ux, vy))
