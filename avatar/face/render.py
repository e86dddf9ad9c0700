"""Frame rendering: parameters -> field weights -> one warp per pass -> mouth interior -> RGB frame.

`create_renderer` returns the OpenCV renderer (CpuRenderer) or the torch one (TorchRenderer, CUDA or CPU); both
follow the same steps on the same rig and agree within a few grey levels.
"""
from __future__ import annotations

import math
from typing import Mapping

import cv2
import numpy as np

from avatar.face.liveliness import Liveliness, LivelinessConfig
from avatar.face.mouth import NumpyOps, crop_statics, gap_coverage, interior, mouth_statics
from avatar.face.rig import HEAD_FIELDS, LOCAL_FIELDS, SIDEWAYS_FIELDS, Rig
from avatar.visemes import PARAM_NAMES

SIDEWAYS = np.array([LOCAL_FIELDS.index(n) for n in SIDEWAYS_FIELDS])
TEARING = np.array([n in ("jaw", "lip_raise", "lip_spread", "lip_round", "lip_press") for n in LOCAL_FIELDS])
SPREAD_SHOWS_TEETH = 0.45  # lip_spread also raises the upper lip this much ("ee" shows the upper teeth)
MIN_COVERAGE = 1.0 / 512  # below this the lips are closed: no interior to draw
EXTRA_PARAMS = ("blink", "blink_l", "blink_r", "brow_raise", "lip_raise",
                "head_yaw", "head_pitch", "head_roll", "head_rise")


def _value(params: Mapping[str, float], key: str) -> float:
    v = params.get(key, 0.0)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def field_weights(params: Mapping[str, float], extras: Mapping[str, float] | None = None):
    """(local weights in LOCAL_FIELDS order, head weights in HEAD_FIELDS order), clipped to their ranges."""
    p = {k: _value(params, k) for k in PARAM_NAMES + EXTRA_PARAMS}
    for k, v in (extras or {}).items():
        p[k] = p.get(k, 0.0) + v
    jaw, spread, rnd, press = (float(np.clip(p[k], 0, 1)) for k in PARAM_NAMES)
    blink = p["blink"]
    local = np.array([
        jaw,
        np.clip(p["lip_raise"] + SPREAD_SHOWS_TEETH * spread, 0, 1),
        spread,
        rnd,
        press,
        np.clip(max(p["blink_r"], blink), 0, 1),
        np.clip(max(p["blink_l"], blink), 0, 1),
        np.clip(p["brow_raise"], -0.5, 1),
    ], np.float32)
    head = np.clip(np.array([p[k] for k in HEAD_FIELDS], np.float32), -1, 1)
    return local, head


class Renderer:
    """render(params, t) -> HxWx3 uint8 RGB frame of the rig's canvas."""

    name = "base"

    def __init__(self, rig: Rig, liveliness: LivelinessConfig | None = None):
        self.rig = rig
        self.liveliness = Liveliness(liveliness if liveliness is not None else LivelinessConfig(enabled=False))
        app = rig.appearance
        self.statics = mouth_statics(rig.mouth_u, app)
        self.colors = (app.cavity_edge, app.cavity_deep, app.teeth, app.tongue)

    @property
    def size(self) -> tuple[int, int]:
        return self.rig.size

    def weights(self, params: Mapping[str, float], t: float):
        return field_weights(params, self.liveliness.extras(params, t))

    def render(self, params: Mapping[str, float], t: float = 0.0) -> np.ndarray:
        local, head = self.weights(params, t)
        return self.render_weights(local, head)

    def render_weights(self, local: np.ndarray, head: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _base_grid(box) -> np.ndarray:
    ys, xs = np.mgrid[box.y0:box.y1, box.x0:box.x1].astype(np.float32)
    return np.ascontiguousarray(np.dstack([xs, ys]))


class CpuRenderer(Renderer):
    name = "cpu"

    def __init__(self, rig: Rig, liveliness: LivelinessConfig | None = None):
        super().__init__(rig, liveliness)
        self._local_base = _base_grid(rig.local_box)
        self._head_base = _base_grid(rig.head_box)
        lb = rig.local_box
        x0, y0, x1, y1 = rig.mouth_box
        self._mouth = (y0 - lb.y0, y1 - lb.y0, x0 - lb.x0, x1 - lb.x0)  # rows, cols within the local box
        self._origin = np.array([lb.x0, lb.y0], np.float32)
        k, _, rows, cols, _ = rig.local_fields.shape
        self._coarse_shape = (rows, cols)
        # blending is one matrix-vector product over contiguous fields
        self._local_both = rig.local_fields.reshape(k, -1)
        self._local_upper = np.ascontiguousarray(rig.local_fields[:, 0]).reshape(k, -1)
        self._head_matrix = rig.head_fields.reshape(len(HEAD_FIELDS), -1)
        gy, gx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        self._coarse_grid = np.ascontiguousarray(np.dstack([gx, gy]))
        # per field, the coarse cells it moves: a frame warps only the union of its active fields' cells
        step = rig.step
        mags = np.abs(rig.local_fields).max(axis=(1, 4))
        self._field_cells = [_cells(m > SUPPORT_EPS_CELLS) for m in mags]
        my0, my1, mx0, mx1 = self._mouth
        self._mouth_cells = (my0 // step, -(-my1 // step), mx0 // step, -(-mx1 // step))

    def _blend_local(self, local: np.ndarray, branches: int) -> np.ndarray:
        """Coarse backward field per branch: sideways fields composed after the others (see SIDEWAYS_FIELDS)."""
        rows, cols = self._coarse_shape
        matrix = self._local_both if branches == 2 else self._local_upper
        other = local.copy()
        other[SIDEWAYS] = 0
        blend = (other @ matrix).reshape(branches, rows, cols, 2)
        side = np.zeros_like(local)
        side[SIDEWAYS] = local[SIDEWAYS]
        if np.any(side):
            sblend = (side @ matrix).reshape(branches, rows, cols, 2)
            for b in range(branches):
                coords = self._coarse_grid + sblend[b] * (1.0 / self.rig.step)
                blend[b] = sblend[b] + cv2.remap(blend[b], coords, None, cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_REPLICATE)
        return blend

    @staticmethod
    def _upsample(field: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
        h, w = field.shape[:2]
        full = cv2.resize(field, (w * step, h * step), interpolation=cv2.INTER_LINEAR)
        return full[:shape[0], :shape[1]]

    def render_weights(self, local: np.ndarray, head: np.ndarray) -> np.ndarray:
        rig = self.rig
        frame = rig.image.copy()
        local = local.astype(np.float32)
        if np.any(local):
            self._local_pass(frame, local)
        if np.any(head):
            box = rig.head_box
            rows, cols = rig.head_fields.shape[1:3]
            coarse = (head.astype(np.float32) @ self._head_matrix).reshape(rows, cols, 2)
            maps = self._head_base + self._upsample(coarse, box.step, box.shape)
            frame[box.y0:box.y1, box.x0:box.x1] = cv2.remap(frame, maps, None, cv2.INTER_LINEAR,
                                                            borderMode=cv2.BORDER_REPLICATE)
        return frame

    def _local_pass(self, frame: np.ndarray, local: np.ndarray):
        rig = self.rig
        box, step = rig.local_box, rig.step
        tearing = bool(np.any(local[TEARING]))
        cells = [self._field_cells[k] for k in np.nonzero(local)[0]] + ([self._mouth_cells] if tearing else [])
        r0, r1 = min(c[0] for c in cells), max(c[1] for c in cells)
        c0, c1 = min(c[2] for c in cells), max(c[3] for c in cells)
        if r1 <= r0 or c1 <= c0:
            return
        y0, y1 = r0 * step, min(r1 * step, box.shape[0])  # active pixels within the local box
        x0, x1 = c0 * step, min(c1 * step, box.shape[1])
        shape = (y1 - y0, x1 - x0)
        blend = self._blend_local(local, 2 if tearing else 1)[:, r0:r1, c0:c1]  # (branches, rows, cols, 2)
        disp = self._upsample(blend[0], step, shape)
        if tearing:
            lower = self._upsample(blend[1], step, shape)
            b0, b1 = (min(max(b - y0, 0), shape[0]) for b in rig.band)
            disp[b1:] = lower[b1:]
            disp[b0:b1] = np.where(rig.below[y0 + b0:y0 + b1, x0:x1, None], lower[b0:b1], disp[b0:b1])
        maps = self._local_base[y0:y1, x0:x1] + disp
        warped = cv2.remap(rig.image, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if tearing:
            my0, my1, mx0, mx1 = self._mouth
            mouth = (slice(my0 - y0, my1 - y0), slice(mx0 - x0, mx1 - x0))
            t_src = cv2.remap(rig.line_t, maps[mouth] - self._origin, None, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
            alpha = gap_coverage(NumpyOps, rig.line_t[my0:my1, mx0:mx1], t_src)
            rows = np.nonzero(alpha.max(1) > MIN_COVERAGE)[0]
            if len(rows):
                cols = np.nonzero(alpha.max(0) > MIN_COVERAGE)[0]
                gr = slice(rows[0], rows[-1] + 1)  # the opening's box: the interior is computed there only
                gc = slice(cols[0], cols[-1] + 1)
                a = alpha[gr, gc]
                rgb = interior(NumpyOps, a, crop_statics(self.statics, gr, gc), rig.appearance, self.colors)
                region = warped[mouth][gr, gc]
                a = a[..., None]
                warped[mouth][gr, gc] = np.clip(region * (1 - a) + rgb * a + 0.5, 0, 255).astype(np.uint8)
        frame[box.y0 + y0:box.y0 + y1, box.x0 + x0:box.x0 + x1] = warped


SUPPORT_EPS_CELLS = 0.02  # pixels: a coarse cell moving less than this is left out of a frame's warp


def _cells(mask: np.ndarray, pad: int = 2) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(rows) == 0:
        return (0, 0, 0, 0)
    return (max(rows[0] - pad, 0), min(rows[-1] + pad + 1, mask.shape[0]),
            max(cols[0] - pad, 0), min(cols[-1] + pad + 1, mask.shape[1]))


def create_renderer(rig: Rig, device: str = "auto", liveliness: LivelinessConfig | None = None) -> Renderer:
    """device: "cpu" (OpenCV), "cuda" (torch on the GPU), "torch-cpu" (the torch renderer on CPU tensors) or
    "auto" (CUDA when torch sees a GPU, else the OpenCV renderer)."""
    if device == "cpu":
        return CpuRenderer(rig, liveliness)
    if device == "auto":
        try:
            import torch
            if torch.cuda.is_available():
                from avatar.face.render_torch import TorchRenderer
                return TorchRenderer(rig, liveliness, device="cuda")
        except ImportError:
            pass
        return CpuRenderer(rig, liveliness)
    if device in ("cuda", "torch-cpu") or device.startswith("cuda:"):
        from avatar.face.render_torch import TorchRenderer
        return TorchRenderer(rig, liveliness, device="cpu" if device == "torch-cpu" else device)
    raise ValueError(f"Unknown renderer device {device!r}; use 'auto', 'cpu', 'cuda' or 'torch-cpu'.")
