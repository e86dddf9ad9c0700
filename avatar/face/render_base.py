"""The renderers' shared base: mouth parameters -> field weights, the frame plan, and the Renderer base class that
both the OpenCV renderer (avatar.face.render) and the torch renderer (avatar.face.render_torch) build on.

Mouth parameters arrive as ONE array, the engine's row: N_PARAMS values in avatar.visemes.PARAM_NAMES order
(float32 from the engine). Everything else the face can do (blinks, brows, head turns) is an additive extra, by
name: the liveliness adds its own each frame, and `Renderer.render_pose` takes a hand-made one (previews, tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from avatar.face.expressions import ExpressionState
from avatar.face.liveliness import Liveliness, LivelinessConfig
from avatar.face.mouth import MouthStatics, mouth_statics
from avatar.face.rig import (HEAD_FIELDS, LOCAL_FIELDS, ROUND_IN, SIDEWAYS_FIELDS, SMILE_OUT, SMOOTH_FIELDS,
                             SPREAD_OUT, SUPPORT_EPS, Rig, lip_motion)
from avatar.face.shapes import DEFAULT_SHAPES, ShapeMap, mouth_pose, rig_weights, shapes_for
from avatar.visemes import N_PARAMS, PARAM_NAMES

SIDEWAYS = np.array([LOCAL_FIELDS.index(n) for n in SIDEWAYS_FIELDS])
TEARING = np.array([n not in SMOOTH_FIELDS for n in LOCAL_FIELDS])  # fields whose two branches differ
SMOOTH = ~TEARING
SLIT_TAPER = 0.05  # the opening fades out over this (in mouth widths) at the slit's ends
# the expressions' motions (avatar.face.expressions) and their ranges: a negative eye_widen narrows the eyes
EXPRESSION_RANGES = {"mouth_smile": (0.0, 1.0), "mouth_frown": (0.0, 1.0), "brow_knit": (0.0, 1.0),
                     "brow_inner_up": (0.0, 1.0), "eye_widen": (-0.5, 1.0)}
EXTRA_PARAMS = ("blink", "blink_l", "blink_r", "brow_raise", "lip_raise",
                "head_yaw", "head_pitch", "head_roll", "head_rise",
                *EXPRESSION_RANGES)  # the named extras field_weights knows
EYE_PARAMS = ("blink_r", "blink_l")  # the order of Rig.eyes
STATIC_CHANNELS = ("upper_h", "lower_h", "tongue_w", "upper_shade", "lower_shade", "side_dark")


@runtime_checkable
class FrameRenderer(Protocol):
    """What the stages downstream of the engine call on a frame renderer (the live and offline pipelines, the
    window, the benches): `render` and nothing else. The face renderers here implement it, and so do wrappers
    (the background fill) and stand-ins (the window's blank frame, test frame sources)."""

    def render(self, params: np.ndarray, t: float) -> np.ndarray:
        """params: N_PARAMS mouth parameters in PARAM_NAMES order; t: seconds on the clip's clock (it drives the
        idle motion) -> the frame, (H, W, 3) uint8 RGB, C-contiguous."""
        ...


def mouth_params(**named: float) -> np.ndarray:
    """The mouth parameter array (float32, PARAM_NAMES order) with the named ones set, the others 0:
    mouth_params(jaw_open=1.0)."""
    unknown = set(named) - set(PARAM_NAMES)
    if unknown:
        raise ValueError(f"unknown mouth parameters {', '.join(sorted(unknown))}; known: {', '.join(PARAM_NAMES)}")
    return np.array([named.get(k, 0.0) for k in PARAM_NAMES], np.float32)


def mouth_values(params: np.ndarray) -> list[float]:
    """The N_PARAMS mouth parameters as Python floats, a non-finite value as 0 (closed)."""
    values = np.asarray(params, np.float64)  # exact for float32 rows; float64 ones keep every bit they have
    if values.shape != (N_PARAMS,):
        raise ValueError(f"mouth parameters: expected {N_PARAMS} values in the order {', '.join(PARAM_NAMES)}; "
                         f"got an array of shape {values.shape}")
    return [v if math.isfinite(v) else 0.0 for v in values.tolist()]


def _value(pose: Mapping[str, float], key: str) -> float:
    """One value of a hand-made pose: missing, non-numeric and non-finite values count as 0."""
    v = pose.get(key, 0.0)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def split_pose(pose: Mapping[str, float]) -> tuple[np.ndarray, dict[str, float]]:
    """A pose by name ({"jaw_open": 0.6, "blink": 1.0, ...}) -> (the mouth parameter array, the named extras)."""
    unknown = set(pose) - set(PARAM_NAMES) - set(EXTRA_PARAMS)
    if unknown:
        raise ValueError(f"unknown pose names {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(PARAM_NAMES + EXTRA_PARAMS)}")
    mouth = np.array([_value(pose, k) for k in PARAM_NAMES], np.float64)
    return mouth, {k: _value(pose, k) for k in EXTRA_PARAMS if k in pose}


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)  # np.clip on a Python float costs microseconds


def field_weights(params: np.ndarray, extras: Mapping[str, float] | None = None,
                  shapes: ShapeMap = DEFAULT_SHAPES):
    """(local weights in LOCAL_FIELDS order, head weights in HEAD_FIELDS order, eye closures in EYE_PARAMS
    order, the sound's mouth parameters in PARAM_NAMES order), clipped to their ranges, from the mouth parameter
    array and the named extras added to it. The last is what the interior is drawn from (avatar.face.shapes)."""
    p = dict.fromkeys(EXTRA_PARAMS, 0.0)
    p.update(zip(PARAM_NAMES, mouth_values(params)))
    for k, v in (extras or {}).items():
        p[k] = p.get(k, 0.0) + v
    jaw, spread, rnd, press = (_clamp(p[k], 0, 1) for k in PARAM_NAMES)
    # the mouth's motions from the four parameters (pressed lips shut an open jaw): avatar.face.shapes
    mouth = rig_weights(jaw, spread, rnd, press, _clamp(p["lip_raise"], 0, 1), shapes)
    mouth["brow_raise"] = _clamp(p["brow_raise"], -0.5, 1)
    for k, (lo, hi) in EXPRESSION_RANGES.items():
        mouth[k] = _clamp(p[k], lo, hi)
    blink = p["blink"]
    local = np.array([mouth[k] for k in LOCAL_FIELDS], np.float32)
    head = np.array([_clamp(p[k], -1, 1) for k in HEAD_FIELDS], np.float32)
    eyes = np.array([_clamp(max(p[k], blink), 0, 1) for k in EYE_PARAMS], np.float32)
    return local, head, eyes, np.array([jaw, spread, rnd, press], np.float32)


@dataclass
class FramePlan:
    """Which pixels a frame warps, in canvas pixels; shared by both renderers so they do the same work."""

    cells: tuple[int, int, int, int]  # canvas cells r0, r1, c0, c1 of the warped region
    region: tuple[int, int, int, int]  # pixels y0, y1, x0, x1
    band: tuple[int, int]  # region rows where a pixel's branch (above/below the lips' line) must be looked up
    mouth: tuple[int, int, int, int] | None  # region-relative y0, y1, x0, x1 where the lips may part
    head_on: bool
    tearing: bool
    # the lips part while smooth fields (an expression) move the mouth: each pixel's side of the lips' line is
    # read where the head and those fields carry it from (they move both lips alike), not where it is
    carried: bool = False


class Renderer:
    """render(params, t) -> HxWx3 uint8 RGB frame of the rig's canvas (a FrameRenderer); subclasses implement
    render_weights, the frame for given field weights.

    One warp per frame: the head field H and the local fields L (branch b) are composed on the coarse grid,
    T_b(q) = H(q) + L_b(q + H(q)), upsampled, and each output pixel samples the photo at q + T_b(q), its branch
    chosen by which side of the lips' line q + H(q) falls. The mouth interior is drawn where the source lies across
    the line, in output space, its lateral layout (teeth) read at q + H(q) so it moves with the head.
    """

    name = "base"

    def __init__(self, rig: Rig, liveliness: LivelinessConfig | None = None):
        self.rig = rig
        # the parameters -> rig mapping, read both ways (weights from parameters; the interior back from the
        # weights): the fitted table, or a candidate while `avatar eval fit-shapes` fits it
        self.shapes: ShapeMap = DEFAULT_SHAPES
        self.liveliness = Liveliness(liveliness)  # None: the defaults (blinks, sway, breathing, emphasis on)
        self.expressions = ExpressionState()  # neutral until set_expression
        self._eye_levels = [0.0] * len(EYE_PARAMS)  # each eye's closure in the photo being warped now
        app = rig.appearance
        self.statics = mouth_statics(rig.mouth_u, app)
        self.colors = (app.cavity_edge, app.cavity_deep, app.teeth, app.tongue, app.gums)
        step = rig.step
        lb, hb = rig.local_box, rig.head_box
        mags = np.abs(rig.local_fields).max(axis=(1, 4))
        self._field_cells = [_cells(m > SUPPORT_EPS, lb.r0, lb.c0) for m in mags]
        x0, y0, x1, y1 = rig.mouth_box
        self._mouth_px = (y0, y1, x0, x1)
        self._mouth_cells = (y0 // step, -(-y1 // step), x0 // step, -(-x1 // step))
        self._head_cells = (hb.r0, hb.r1, hb.c0, hb.c1)
        # how far each head field moves the mouth region at full strength: bounds the line's and opening's shift
        r0, r1 = max(y0 // step - 2 - hb.r0, 0), max(-(-y1 // step) + 2 - hb.r0, 0)
        c0, c1 = max(x0 // step - 2 - hb.c0, 0), max(-(-x1 // step) + 2 - hb.c0, 0)
        near = rig.head_fields[:, r0:r1, c0:c1]
        self._head_reach = np.abs(near).max(axis=(1, 2, 3)) if near.size else np.zeros(len(HEAD_FIELDS))
        # and each local field, in the same cells: the smooth ones shift the lips' line that far
        r0, r1 = max(y0 // step - 2 - lb.r0, 0), max(-(-y1 // step) + 2 - lb.r0, 0)
        c0, c1 = max(x0 // step - 2 - lb.c0, 0), max(-(-x1 // step) + 2 - lb.c0, 0)
        near = rig.local_fields[:, 0, r0:r1, c0:c1]
        self._local_reach = np.abs(near).max(axis=(1, 2, 3)) if near.size else np.zeros(len(LOCAL_FIELDS))

    @property
    def size(self) -> tuple[int, int]:
        return self.rig.size

    def use_network(self, model_name: str) -> None:
        """Draw the parameters of network `model_name` (its model file's name without the suffix) with the table
        fitted to it (avatar.face.shapes.shapes_for), from the next frame on. Any thread."""
        self.shapes = shapes_for(model_name)

    def set_expression(self, name: str, ease: bool = True) -> None:
        """Show expression `name` (avatar.face.expressions.EXPRESSION_NAMES) from the next frame on, eased in from
        what the face shows now (ease=False: at once); the mouth keeps following its parameters. Any thread."""
        self.expressions.request(name, ease)

    @property
    def expression(self) -> str:
        return self.expressions.name

    def weights(self, params: np.ndarray, t: float, pose: Mapping[str, float] | None = None):
        """field_weights of the mouth parameter array at time t, the liveliness's and the expression's extras (and
        a pose's) added."""
        extras = self.liveliness.extras(params, t)
        for source in (self.expressions.extras(t), pose or {}):
            for k, v in source.items():
                extras[k] = extras.get(k, 0.0) + v
        return field_weights(params, extras, self.shapes)

    def next_blink(self, t: float) -> float:
        """When the liveliness's next blink after time t starts (inf: none will): the live view looks then."""
        return self.liveliness.next_blink(t)

    def render(self, params: np.ndarray, t: float = 0.0) -> np.ndarray:
        """The frame for N_PARAMS mouth parameters (PARAM_NAMES order) at time t; see FrameRenderer."""
        return self.render_weights(*self.weights(params, t))

    def render_pose(self, pose: Mapping[str, float], t: float = 0.0) -> np.ndarray:
        """The frame for a pose by name: mouth parameters and EXTRA_PARAMS ({"jaw_open": 0.5, "blink": 1.0,
        "head_yaw": -1.0}); missing names are 0. For previews and tests; the live path calls render."""
        mouth, extras = split_pose(pose)
        return self.render_weights(*self.weights(mouth, t, extras))

    def render_weights(self, local: np.ndarray, head: np.ndarray, eyes: np.ndarray | None = None,
                       sound: np.ndarray | None = None) -> np.ndarray:
        """The frame for field weights (field_weights' four arrays; sound None: weights made by hand)."""
        raise NotImplementedError

    def _eye_changes(self, eyes: np.ndarray | None):
        """[(eye index, its box, the box's RGB pixels now)] for each eye whose closure changed since the last
        frame; the renderers write them into the photo they warp (so head and mouth motion carry the lids)."""
        eyes = np.zeros(len(EYE_PARAMS), np.float32) if eyes is None else np.asarray(eyes, np.float32)
        changes = []
        for k, (eye, level) in enumerate(zip(self.rig.eyes, eyes.tolist())):
            if level != self._eye_levels[k]:
                self._eye_levels[k] = level
                changes.append((k, eye.box, eye.patch(level)))
        return changes

    def _slit_mask(self, ops, local_pos):
        """1 along the slit between the inner mouth corners (widened by this frame's spread), 0 beyond: elsewhere
        sources never cross the lips' line by tearing, only by smooth motion, which must not open a gap."""
        g = self.rig.geometry
        u = (local_pos[..., 0] - float(g.mouth_center[0])) * float(g.ux[0]) + (
            local_pos[..., 1] - float(g.mouth_center[1])) * float(g.ux[1])
        # the inner corners move out with spread and in with rounding (as lip_spread / lip_round move them there)
        corner = (g.a_in / g.a_out) ** 1.3
        out = SPREAD_OUT * self._spread + SMILE_OUT * corner * self._smile  # (a smile moves the corners out too)
        reach = g.a_in + (out - ROUND_IN * corner * self._round) * g.W + 1.5
        soft = SLIT_TAPER * g.W + 1.0  # the opening closes toward its corners, never with a straight cut
        return ops.clip((reach - abs(u)) * (1.0 / soft), 0.0, 1.0)

    def plan(self, local: np.ndarray, head: np.ndarray, sound: np.ndarray | None = None) -> FramePlan | None:
        rig = self.rig
        head_on, local_on = bool(np.any(head)), bool(np.any(local))
        if not (head_on or local_on):
            return None
        tearing = local_on and bool(np.any(local[TEARING]))
        self._spread = float(local[LOCAL_FIELDS.index("lip_spread")])
        self._round = float(local[LOCAL_FIELDS.index("lip_round")])
        self._smile = float(local[LOCAL_FIELDS.index("mouth_smile")])
        if tearing:  # what the interior shows this frame
            self._pose = mouth_pose(None if sound is None else sound.tolist(), dict(zip(LOCAL_FIELDS, local.tolist())),
                                    *lip_motion(local), self.shapes)
        cells = [self._field_cells[k] for k in np.nonzero(local)[0]]
        cells += [self._mouth_cells] if tearing else []
        cells += [self._head_cells] if head_on else []
        cells = [c for c in cells if c[1] > c[0] and c[3] > c[2]]
        if not cells:
            return None
        r0, r1 = min(c[0] for c in cells), max(c[1] for c in cells)
        c0, c1 = min(c[2] for c in cells), max(c[3] for c in cells)
        h, w = rig.image.shape[:2]
        step = rig.step
        y0, y1, x0, x1 = r0 * step, min(r1 * step, h), c0 * step, min(c1 * step, w)
        carried = tearing and bool(np.any(local[SMOOTH]))
        m = int(np.ceil(np.abs(head) @ self._head_reach)) + 1 if head_on else 0
        if carried:
            m += int(np.ceil(np.abs(local[SMOOTH]) @ self._local_reach[SMOOTH])) + 1
        band = (min(max(rig.local_box.y0 + rig.band[0] - m - y0, 0), y1 - y0),
                min(max(rig.local_box.y0 + rig.band[1] + m - y0, 0), y1 - y0))
        mouth = None
        if tearing:
            my0, my1, mx0, mx1 = self._mouth_px
            my0, my1, mx0, mx1 = my0 - m, my1 + m, mx0 - m, mx1 + m
            mouth = (max(my0, y0) - y0, min(my1, y1) - y0, max(mx0, x0) - x0, min(mx1, x1) - x0)
        return FramePlan((r0, r1, c0, c1), (y0, y1, x0, x1), band, mouth, head_on, tearing, carried)


def _cells(mask: np.ndarray, row0: int = 0, col0: int = 0, pad: int = 2) -> tuple[int, int, int, int]:
    """Canvas cells (r0, r1, c0, c1) around the true cells of a coarse mask whose first cell is (row0, col0)."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(rows) == 0:
        return (0, 0, 0, 0)
    return (row0 + max(rows[0] - pad, 0), row0 + min(rows[-1] + pad + 1, mask.shape[0]),
            col0 + max(cols[0] - pad, 0), col0 + min(cols[-1] + pad + 1, mask.shape[1]))


STATIC_CHANNELS = ("upper_h", "lower_h", "tongue_w", "upper_shade", "lower_shade", "side_dark")


def stack_statics(st) -> np.ndarray:
    return np.ascontiguousarray(np.dstack([getattr(st, k) for k in STATIC_CHANNELS]).astype(np.float32))


def unstack_statics(image, rows) -> MouthStatics:
    return MouthStatics(rows=rows, **{k: image[..., i] for i, k in enumerate(STATIC_CHANNELS)})

