"""The person's own mouth: how this person's mouth widens and narrows as they speak, fitted on their video's speech.

A photo cannot tell how a person speaks; the video an avatar is made from can. The shipped mapping from the
network's parameters to the mouth (avatar.face.shapes, fitted on GRID) is one mapping for everyone, and real
people differ most in the width: some widen as they open, others narrow (r(width, opening) runs from -0.59 to
+0.71 across the 11 GRID speakers), so the shared mapping's width follows a new speaker's at r ~0.4. Here:

1. **The person's mouth**, per frame of the video: opening |13-14| and width |61-291| in eye distances (the build's
   tracking, eye-aligned as `avatar eval video` measures).
2. **The network**, per frame: the video's own sound through each shipped network and the offline path's smoothing
   and sampling (avatar.live.offline.frame_params): the parameters `avatar render` would draw there.
3. **What the shared mapping draws** on this face, per frame: the target lip contour (avatar.face.video_avatar
   .contour: the rest lips moved by the mapping's motion weights) and its width.
4. **The fit**: the mapping's spread and rounding fields (the weights those two motions take from the four
   parameters and two squares, avatar.face.shapes.width_features) chosen so the drawn width, centred, follows the
   person's: least squares through the mapping's own clipping (WidthModel, Levenberg-Marquardt), pulled towards
   the shared fields by RIDGE (a sum over the frames against a fixed pull: a short video moves the mapping a
   little, a long one to the person). Kept only where it draws the person's width closer than the shared mapping
   does, on the frames it was fitted to.

The result is a set of ShapeMap field values per network (calibrated(...) applies them); a video without speech
(or without sound) keeps the shared mapping, with a note saying so.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from avatar.face import shapes as shape_map
from avatar.face.video_avatar.contour import LIP_POINTS, MOUTH_FIELDS, lip_basis, motion_weights, target_lips
from avatar.stats import pearson
from avatar.visemes import PARAM_NAMES

RIDGE = 1.0  # the pull towards the shared fields (per eye distance of width drive). `avatar eval reenact --whole-sound`,
# 13 clips, the video avatar's rendered width r on the tails (shared mapping 0.413): 0.458 / 0.528 / 0.508 at RIDGE
# 0.3 / 1 / 3 (this solver; scipy's least_squares, first tried: 0.396 / 0.453 / 0.453 / 0.540 / 0.526 / 0.505 at
# 0.01 / 0.1 / 0.3 / 1 / 3 / 10)
MIN_FRAMES = 25  # fewer usable frames (1 s at 25 fps) than this: no calibration
MIN_JAW_RANGE = 0.15  # the network's jaw_open must range this much (p95 - p5) over the video: there is speech
AMPLITUDE_LO, AMPLITUDE_HI = 5, 95
WIDTH_POINTS = LIP_POINTS.index(61), LIP_POINTS.index(291)  # in the target contour
DECIMALS = 4
FIT_STEPS = 60  # Levenberg-Marquardt steps (the fits settle within 10-30)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0)


def drawn_widths(params: np.ndarray, shapes: shape_map.ShapeMap, rest_lips: np.ndarray,
                 basis: np.ndarray) -> np.ndarray:
    """(N,) the width of the target contour the mapping draws for each parameter row, eye distances."""
    a, b = WIDTH_POINTS
    out = np.empty(len(params))
    for k, row in enumerate(params):
        lips = target_lips(rest_lips, basis, motion_weights(row, None, shapes))
        out[k] = np.linalg.norm(lips[a] - lips[b])
    return out


def motion_width(basis: np.ndarray, motion: str) -> float:
    """The target contour's width change per unit weight of one mouth motion on this face (eye distances)."""
    a, b = WIDTH_POINTS
    d = basis[MOUTH_FIELDS.index(motion)]
    return float(d[b, 0] - d[a, 0])  # 291 is the face's left corner: it lies at larger x than 61


WIDTH_FIELDS = tuple(f"{motion}_per_{name}" for motion in ("spread", "round") for name in shape_map.WIDTH_FEATURES)


class WidthModel:
    """The drawn width as a function of the mapping's spread and rounding fields (WIDTH_FIELDS), every other
    motion held as the mapping draws it: width = base + per_spread * spread weight + per_round * rounding weight,
    the weights as avatar.face.shapes.rig_weights makes them (sums over the width features, clipped, the rounding
    shut by pressed lips). The target contour is linear in the motion weights and its corners move sideways, so this
    is its width to within 2e-5 eye distances (a test)."""

    def __init__(self, params: np.ndarray, shapes: shape_map.ShapeMap, rest_points: np.ndarray):
        mouth = np.clip(np.asarray(params, np.float32)[:, :len(PARAM_NAMES)], 0, 1).astype(np.float64)
        self.x = shape_map.width_features(mouth, shapes.round_from)
        self.open_share = np.array([1.0 - shape_map._shut(p, shapes) for p in mouth[:, PARAM_NAMES.index("lip_press")]])
        self.rest_lips = np.asarray(rest_points, np.float64)[list(LIP_POINTS)]
        self.basis = lip_basis(rest_points)
        self.per_spread = motion_width(self.basis, "lip_spread")
        self.per_round = motion_width(self.basis, "lip_round")  # < 0: it narrows
        still = replace(shapes, **dict.fromkeys(WIDTH_FIELDS, 0.0))  # neither spread nor rounding drawn
        self.base = drawn_widths(params, still, self.rest_lips, self.basis)

    def widths(self, theta: np.ndarray) -> np.ndarray:
        return self.widths_and_slopes(theta)[0]

    def widths_and_slopes(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) widths and (N, len(WIDTH_FIELDS)) their derivatives by the fields (0 where a weight is clipped)."""
        k = len(shape_map.WIDTH_FEATURES)
        z_spread, z_round = self.x @ theta[:k], self.x @ theta[k:]
        inner = _sideways(z_round)
        spread, rounding = _sideways(z_spread), _sideways(inner * self.open_share)
        d_spread = self.per_spread * _active(z_spread)
        d_round = self.per_round * _active(z_round) * _active(inner * self.open_share) * self.open_share
        slopes = np.hstack([d_spread[:, None] * self.x, d_round[:, None] * self.x])
        return self.base + self.per_spread * spread + self.per_round * rounding, slopes


def _sideways(w: np.ndarray) -> np.ndarray:
    """avatar.face.shapes._sideways over arrays: under its minimum weight nothing, at most 1."""
    return np.where(w < shape_map.MIN_SIDEWAYS_WEIGHT, 0.0, np.minimum(w, 1.0))


def _active(w: np.ndarray) -> np.ndarray:
    """1 where _sideways passes a weight through (its slope), 0 where it clips it."""
    return ((w >= shape_map.MIN_SIDEWAYS_WEIGHT) & (w <= 1.0)).astype(np.float64)


def least_squares(model: WidthModel, y: np.ndarray, theta0: np.ndarray, prior_scale: np.ndarray,
                  steps: int = FIT_STEPS) -> np.ndarray:
    """The fields minimising |centred drawn width - y|^2 + |prior_scale (theta - theta0)|^2: Levenberg-Marquardt
    on the exact slopes (numpy only: scipy.optimize would add 60 MB to the desktop bundle)."""
    def cost_of(theta):
        w = model.widths(theta)
        return float(np.sum((_centred(w) - y) ** 2) + np.sum((prior_scale * (theta - theta0)) ** 2))

    theta, damping = theta0.copy(), 1e-3
    cost = cost_of(theta)
    for _ in range(steps):
        w, slopes = model.widths_and_slopes(theta)
        j = np.vstack([_centred(slopes), np.diag(prior_scale)])
        r = np.r_[_centred(w) - y, prior_scale * (theta - theta0)]
        jtj, g = j.T @ j, j.T @ r
        while damping < 1e6:
            step = np.linalg.solve(jtj + damping * (np.diag(np.diag(jtj)) + 1e-9 * np.eye(len(theta))), -g)
            trial = cost_of(theta + step)
            if trial < cost:
                theta, cost, damping = theta + step, trial, max(damping / 3, 1e-7)
                break
            damping *= 4
        else:
            break  # no step lowers the cost: a minimum (or a clipped plateau)
        if np.abs(step).max() < 1e-6:
            break
    return theta


def fit_width(width: np.ndarray, params: np.ndarray, shapes: shape_map.ShapeMap, rest_points: np.ndarray,
              ridge: float = RIDGE) -> tuple[dict | None, dict]:
    """(ShapeMap field values, or None to keep the shared mapping; the evidence) for one network's parameter rows
    `params` (N, >= 4) paired with the person's real mouth width (N,) on the same frames."""
    ok = np.isfinite(width) & np.isfinite(params).all(axis=1)
    evidence = {"frames": int(ok.sum())}
    if ok.sum() < MIN_FRAMES:
        return None, {**evidence, "kept": False, "why": f"{int(ok.sum())} frames with a face and sound (at least "
                                                        f"{MIN_FRAMES} needed)"}
    params, width = params[ok], width[ok]
    jaw = np.clip(params[:, PARAM_NAMES.index("jaw_open")], 0, 1)
    jaw_range = float(np.percentile(jaw, AMPLITUDE_HI) - np.percentile(jaw, AMPLITUDE_LO))
    evidence["jaw_range"] = round(jaw_range, DECIMALS)
    if jaw_range < MIN_JAW_RANGE:
        return None, {**evidence, "kept": False, "why": "no speech heard in the video's sound"}
    model = WidthModel(params, shapes, rest_points)
    if model.per_spread <= 0 or model.per_round >= 0:
        return None, {**evidence, "kept": False, "why": "the spread / rounding motions do not widen / narrow this "
                                                        "face's mouth"}
    theta0 = np.array([getattr(shapes, f) for f in WIDTH_FIELDS])
    k = len(shape_map.WIDTH_FEATURES)
    prior_scale = np.sqrt(ridge) * np.r_[np.full(k, model.per_spread), np.full(k, -model.per_round)]  # in IOD
    y = _centred(width)

    theta = least_squares(model, y, theta0, prior_scale)
    fields = {name: round(float(v), DECIMALS) for name, v in zip(WIDTH_FIELDS, theta)}
    personal = replace(shapes, **fields)
    shared = drawn_widths(params, shapes, model.rest_lips, model.basis)
    drawn = drawn_widths(params, personal, model.rest_lips, model.basis)
    r_shared, r_person = (float(np.nan_to_num(pearson(w, y))) for w in (shared, drawn))  # flat: 0
    evidence.update({"width_r_shared": round(r_shared, DECIMALS), "width_r_person": round(r_person, DECIMALS)})
    if not r_person > r_shared:
        return None, {**evidence, "kept": False, "why": "the person's fit draws their width no closer"}
    return fields, {**evidence, "kept": True}


def calibrated(shapes: shape_map.ShapeMap, fields: dict | None) -> shape_map.ShapeMap:
    """The mapping with a person's fitted fields (unknown names, from a newer file, are ignored)."""
    if not isinstance(fields, dict) or not fields:
        return shapes
    known = set(shape_map.ShapeMap.__dataclass_fields__)
    values = {}
    for k, v in fields.items():  # a hand-edited or damaged record: what is not a finite number is left out
        if k in known and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            values[k] = float(v)
    return replace(shapes, **values)


def network_params(audio: np.ndarray, n_frames: int, fps: float, model) -> tuple[str, np.ndarray]:
    """(the network's name, (n_frames, P) the parameters `avatar render` draws each frame with) for a model path."""
    from avatar.engine import create_engine
    from avatar.live.offline import frame_params

    # ONNX Runtime on the CPU: every backend gives the same numbers, and a GPU's TensorRT engine may not be built
    # yet (minutes, the first time); a minute of sound takes it well under a second
    engine = create_engine("onnxruntime", model)
    try:
        return engine.model_name, frame_params(audio, engine, n_frames, fps)
    finally:
        engine.close()


def calibrate(audio: np.ndarray | None, width: np.ndarray, fps: float, rest_points: np.ndarray,
              models=None) -> dict:
    """{network name: {"fields": ShapeMap values or None, "evidence": ...}} for each shipped network (`models`:
    model paths, the two shipped networks by default); {} without sound."""
    from avatar.engine import EngineError, default_model_path, live_model_path

    if audio is None or not len(audio):
        return {}
    out = {}
    for model in models or (default_model_path(), live_model_path()):
        try:
            name, params = network_params(audio, len(width), fps, model)
        except (EngineError, ValueError, OSError) as e:  # no engine here: the shared mapping, with the reason
            out[str(getattr(model, "stem", model))] = {"fields": None, "evidence": {"kept": False, "why": str(e)}}
            continue
        fields, evidence = fit_width(width, params, shape_map.shapes_for(name), rest_points)
        out[name] = {"fields": fields, "evidence": evidence}
    return out
