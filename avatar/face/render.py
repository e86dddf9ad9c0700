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
from avatar.face.mouth import NumpyOps, gap_coverage, interior, mouth_statics
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
        self._mouth = (slice(y0 - lb.y0, y1 - lb.y0), slice(x0 - lb.x0, x1 - lb.x0))
        self._line_t_mouth = rig.line_t[self._mouth]
        self._origin = np.array([lb.x0, lb.y0], np.float32)
        rows, cols = rig.local_fields.shape[2:4]
        gy, gx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        self._coarse_grid = np.ascontiguousarray(np.dstack([gx, gy]))

    def _blend_local(self, local: np.ndarray, branches: int) -> np.ndarray:
        """Coarse backward field per branch: sideways fields composed after the others (see SIDEWAYS_FIELDS)."""
        fields = self.rig.local_fields[:, :branches]
        other = local.copy()
        other[SIDEWAYS] = 0
        blend = np.tensordot(other, fields, axes=1)
        side = local[SIDEWAYS]
        if np.any(side):
            sblend = np.tensordot(side, fields[SIDEWAYS], axes=1)
            for b in range(branches):
                coords = self._coarse_grid + sblend[b] * (1.0 / self.rig.step)
                blend[b] = sblend[b] + cv2.remap(blend[b], coords, None, cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_REPLICATE)
        return blend

    def _upsample(self, field: np.ndarray, box) -> np.ndarray:
        h, w = field.shape[:2]
        full = cv2.resize(field, (w * box.step, h * box.step), interpolation=cv2.INTER_LINEAR)
        return full[:box.shape[0], :box.shape[1]]

    def render_weights(self, local: np.ndarray, head: np.ndarray) -> np.ndarray:
        rig = self.rig
        frame = rig.image.copy()
        if np.any(local):
            self._local_pass(frame, local)
        if np.any(head):
            box = rig.head_box
            disp = self._upsample(np.tensordot(head, rig.head_fields, axes=1), box)
            maps = self._head_base + disp
            frame[box.y0:box.y1, box.x0:box.x1] = cv2.remap(frame, maps, None, cv2.INTER_LINEAR,
                                                            borderMode=cv2.BORDER_REPLICATE)
        return frame

    def _local_pass(self, frame: np.ndarray, local: np.ndarray):
        rig = self.rig
        box = rig.local_box
        tearing = bool(np.any(local[TEARING]))
        blend = self._blend_local(local, 2 if tearing else 1)  # (branches, rows, cols, 2)
        disp = self._upsample(blend[0], box)
        if tearing:
            lower = self._upsample(blend[1], box)
            b0, b1 = rig.band
            disp[b1:] = lower[b1:]
            disp[b0:b1] = np.where(rig.below[b0:b1, :, None], lower[b0:b1], disp[b0:b1])
        maps = self._local_base + disp
        warped = cv2.remap(rig.image, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if tearing:
            mouth_maps = maps[self._mouth] - self._origin
            t_src = cv2.remap(rig.line_t, mouth_maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            alpha = gap_coverage(NumpyOps, self._line_t_mouth, t_src)
            if alpha.max() > MIN_COVERAGE:
                rgb = interior(NumpyOps, alpha, self.statics, rig.appearance, self.colors)
                region = warped[self._mouth]
                a = alpha[..., None]
                warped[self._mouth] = np.clip(region * (1 - a) + rgb * a + 0.5, 0, 255).astype(np.uint8)
        frame[box.y0:box.y1, box.x0:box.x1] = warped


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
