"""How the network's four mouth parameters become mouth shapes: rig motion weights and what the interior shows.

The engine hands the renderer jaw_open, lip_spread, lip_round and lip_press (avatar.visemes); this module is the
one place that maps them onto the rig's motions (jaw drop, upper-lip raise, lower-lip drop, spread, round, press)
and onto the interior's visible teeth and tongue. Every number is a named field of ShapeMap so the mapping can be
calibrated against real per-viseme lip contours (a fitting command writes a ShapeMap; until then these are the
defaults, chosen from how real mouths move: "ee" lifts the upper lip off the upper teeth and drops the lower lip
a little, "aa" opens tall and shows the lower teeth, "oo" hides the teeth behind pushed-forward lips, p/b/m shut).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from avatar.visemes import PARAM_NAMES

# The tables `avatar eval fit-shapes` writes (GRID clips), one per shipped network: each network has its own
# quiet floor and its own relation of lip_spread / lip_round to the real width (the live network's, drawn with the
# files network's table, followed GRID's real width at r 0.34; with its own, 0.40), so each is drawn with the table
# fitted to it. Keyed by the model file's name without its suffix (avatar.engine.DEFAULT_MODEL, LIVE_MODEL)
FITTED_FILE = Path(__file__).with_name("fitted_shapes.json")  # the files network's, and any other network's
FITTED_FILES = {"lipsync_gru": FITTED_FILE, "lipsync_gru_live": Path(__file__).with_name("fitted_shapes_live.json")}


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)  # np.clip on a Python float costs microseconds


MIN_SIDEWAYS_WEIGHT = 0.03  # a spread / rounding weight under this is 0: a corner moving under 0.004 W (a third of a
# pixel at 512²) is not drawn, so the frame skips that field's blend and composition (the CPU frame budget)


def _sideways(w: float) -> float:
    return 0.0 if w < MIN_SIDEWAYS_WEIGHT else min(w, 1.0)


def _smooth(e0: float, e1: float, x: float) -> float:
    s = _clamp((x - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


@dataclass(frozen=True)
class ShapeMap:
    # --- each rig motion's size at full strength (avatar.face.rig builds them), in mouth widths W ---
    jaw_drop: float = 0.42  # lower-lip drop at jaw_open = 1 (a wide "aa" opens about 40-45% of the mouth width)
    jaw_upper_lift: float = 0.10  # the upper lip rises by this fraction of the drop
    jaw_narrow: float = 0.07  # the mouth corners move in by this fraction of the drop
    jaw_corner_drop: float = 0.3  # and down by this fraction of it, both lips with them (the corners join the lips:
    # the jaw drags them down too). At 0 the corners stayed on the closed line while the middle dropped, a
    # smile-shaped crescent: re-detected on GRID renders the inner corners sat 0.35 of the opening above the inner
    # contour's centroid where real ones sit 0.0-0.1 above it
    lip_raise: float = 0.09  # upper-lip raise (uncovers the upper teeth)
    lip_drop: float = 0.1  # lower-lip drop beyond the jaw's (uncovers the lower teeth)
    spread_out: float = 0.10  # each corner moves out this much at lip_spread = 1 ("ee": wide and thin)
    round_in: float = 0.12  # each corner moves in this much at lip_round = 1 (GRID: 0.17 made widths vary 1.5x real)
    round_protrude: float = 0.06  # rounded lips part into a small oval, per lip
    round_pout: float = 0.03  # and push forward: each lip's outer edge moves out this much (it shows taller)
    press_roll: float = 0.35  # pressed lips roll in by this fraction of their thickness (p/b/m)
    # --- rig motion weights from the network's parameters ---
    jaw_gain: float = 1.0  # jaw weight per jaw_open (the fit sets it so the rendered opening ranges as real ones)
    # The spread and rounding motions' weights, each a sum over the four parameters (clipped to 0..1). By hand:
    # lip_spread drives the spread and lip_round the rounding; fitted, the real width decides (the network's
    # lip_spread runs against real widths on GRID, so the fit draws width from what it does follow).
    spread_per_jaw_open: float = 0.0
    spread_per_lip_spread: float = 1.0
    spread_per_lip_round: float = 0.0
    spread_per_lip_press: float = 0.0
    round_per_jaw_open: float = 0.0
    round_per_lip_spread: float = 0.0
    round_per_lip_round: float = 1.0
    round_per_lip_press: float = 0.0
    # and over the squares of jaw_open and lip_spread: the real width is not linear in them (GRID: it narrows as the
    # jaw half-opens and comes back on a wide "aa"; it widens only on a clear lip_spread). The fit gives a parameter's
    # linear and square shares to one motion, the one its net pull over 0..1 goes to; either share may be negative
    spread_per_jaw_open_sq: float = 0.0
    round_per_jaw_open_sq: float = 0.0
    spread_per_lip_spread_sq: float = 0.0
    round_per_lip_spread_sq: float = 0.0
    # the network's lip_round is never 0: on the frames where it says the mouth is shut and quiet (GRID's room
    # noise before a sentence, jaw_open < 0.05) it reads 0.07 (median) to 0.14 (90th percentile). Drawn as rounding,
    # that floor pursed every silent mouth (re-detected 0.015-0.03 inter-ocular distances narrower than the photo on
    # GRID): the width motions read lip_round from this floor up (fitted: `avatar eval fit-shapes`, QUIET_ROUND_PCT)
    round_from: float = 0.0
    raise_per_spread: float = 0.45  # upper-lip raise per lip_spread: a spread lip lifts off the upper teeth
    drop_per_jaw: float = 0.25  # lower-lip drop (beyond the jaw's) per jaw_open: wide vowels pull the lip down
    drop_per_spread_open: float = 0.8  # and per lip_spread x jaw_open: "E" shows the lower teeth
    press_closes_from: float = 0.25  # lip_press over which an open jaw is pulled shut (p/b/m win over the jaw)
    press_shut: float = 0.5
    # --- what the interior shows, in mouth widths W ---
    upper_teeth_rest: float = 0.10  # upper incisors showing below a relaxed upper lip (GRID speakers show many)
    upper_teeth_per_lift: float = 1.0  # more show as the upper lip lifts (1 = exactly as far as it lifts)
    lower_teeth_rest: float = 0.02  # lower incisors showing above a relaxed lower lip's edge (< 0: hidden)
    lower_teeth_per_drop: float = 1.0  # they show as the lower lip drops beyond the jaw
    lower_teeth_per_open: float = 0.04  # and a little on a wide jaw opening (jaw_open beyond 0.5, per unit)
    teeth_fill: float = 1.0  # the teeth rows fill this share of an unrounded opening (GRID: real openings are
    # mostly teeth; avatar eval video's inner-mouth colour)
    round_hides_teeth: float = 1.1  # rounded, pushed-forward lips cover this share of the teeth at full rounding
    round_hides_from: float = 0.15  # the lips cover the teeth only once rounded this much (a share of a full "oo";
    # GRID's speech rounds 0.05-0.2 on most frames and real GRID openings are mostly teeth)
    round_hides_full: float = 0.7  # and cover them fully from here ("oh" is 0.7)
    tongue_open_share: float = 0.32  # the tongue fills this share of an open vowel's opening, from below
    round_hides_tongue: float = 0.9  # rounded vowels hold the tongue back: this much less of it shows
    tongue_tip_share: float = 0.3  # raised for t/d/n/l/th (a small, unrounded opening): this much more
    # the sound's jaw_open over which the tip shows: ramp up, plateau, down (the rig weights' 0.08 / 0.16 / 0.3 / 0.45
    # it was drawn on, divided by the jaw gain 0.78 they were measured under; avatar eval video's inner-mouth colour)
    tongue_tip_jaw: tuple[float, float, float, float] = (0.10, 0.20, 0.38, 0.58)


HAND_SHAPES = ShapeMap()  # the hand-set mapping the fit starts from

WIDTH_SQUARES = ("jaw_open", "lip_spread")  # parameters whose square the width may follow too (ShapeMap): on GRID,
# each clip scored by a fit to the other ten, the linear map's width r 0.404 -> 0.421 (jaw_open^2) -> 0.435 (and
# lip_spread^2); lip_round^2 adds nothing (0.432)
WIDTH_FEATURES = PARAM_NAMES + tuple(f"{name}_sq" for name in WIDTH_SQUARES)  # the spread_per_* / round_per_* suffixes


def width_features(params: np.ndarray, round_from: float = 0.0) -> np.ndarray:
    """(N, len(WIDTH_FEATURES)): parameter rows (N, 4; lip_round from its quiet floor up, as rig_weights reads
    it), then the squares of WIDTH_SQUARES: what the spread and rounding motions' weights are sums over."""
    params = np.array(params, np.float64)[:, :len(PARAM_NAMES)]
    rnd = PARAM_NAMES.index("lip_round")
    params[:, rnd] = np.maximum(params[:, rnd] - round_from, 0.0)
    squares = params[:, [PARAM_NAMES.index(name) for name in WIDTH_SQUARES]] ** 2
    return np.hstack([params, squares])


def load_shapes(path: Path = FITTED_FILE, base: ShapeMap = HAND_SHAPES) -> ShapeMap:
    """The ShapeMap of a fitted table (its "fields" override `base`'s); `base` where the file is absent."""
    if not path.is_file():
        return base
    known = {f.name for f in fields(ShapeMap)}
    table = json.loads(path.read_text())["fields"]
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{path}: unknown ShapeMap fields {', '.join(sorted(unknown))}")
    return replace(base, **{k: float(v) for k, v in table.items()})


DEFAULT_SHAPES = load_shapes()  # what the renderer draws with until told the network: the files network's table


def table_path(model_name: str) -> Path:
    """The fitted table the network `model_name` (its model file's name without the suffix) is drawn with: its own,
    or the files network's for a network no table was fitted to (one trained by the user)."""
    path = FITTED_FILES.get(model_name)
    return path if path is not None and path.is_file() else FITTED_FILE


@functools.lru_cache(maxsize=None)
def shapes_for(model_name: str) -> ShapeMap:
    """The ShapeMap of table_path(model_name) (DEFAULT_SHAPES itself for the files network's)."""
    path = table_path(model_name)
    return DEFAULT_SHAPES if path == FITTED_FILE else load_shapes(path)


@dataclass(frozen=True)
class MouthPose:
    """What one frame's interior shows, in mouth widths (shows < 0 are hidden behind the lips)."""

    upper_show: float  # upper-teeth height below the upper lip
    lower_show: float  # lower-teeth height above the lower lip
    tongue_share: float  # share of the opening's height the tongue fills from below
    tongue_tip: float  # 0..1: the tongue tip is up (t/d/n/l/th): in front of the lower teeth, below the upper ones
    teeth_fill: float = 0.0  # share of each column's opening the two teeth rows fill (parted lips show the teeth)


def _shut(press: float, shapes: ShapeMap) -> float:
    """How far pressed lips (p/b/m) pull an open mouth shut, 0..1."""
    return _clamp((press - shapes.press_closes_from) / (shapes.press_shut - shapes.press_closes_from), 0, 1)


def rig_weights(jaw: float, spread: float, rnd: float, press: float, raise_: float = 0.0,
                shapes: ShapeMap = DEFAULT_SHAPES) -> dict[str, float]:
    """The rig's mouth motion weights (0..1) for clipped parameters; raise_: an extra upper-lip raise."""
    s = shapes
    # as the engine's float32 rows: a hand-made pose's float64 0.7 draws the same frame as the engine's 0.7
    jaw, spread, rnd, press = (float(np.float32(v)) for v in (jaw, spread, rnd, press))
    jaw2, spread2 = jaw * jaw, spread * spread
    rnd = max(rnd - s.round_from, 0.0)  # the rounding the network means: above its quiet floor
    spread_w = _sideways(s.spread_per_jaw_open * jaw + s.spread_per_lip_spread * spread + s.spread_per_lip_round * rnd
                         + s.spread_per_lip_press * press + s.spread_per_jaw_open_sq * jaw2
                         + s.spread_per_lip_spread_sq * spread2)
    round_w = _sideways(s.round_per_jaw_open * jaw + s.round_per_lip_spread * spread + s.round_per_lip_round * rnd
                        + s.round_per_lip_press * press + s.round_per_jaw_open_sq * jaw2
                        + s.round_per_lip_spread_sq * spread2)
    jaw = _clamp(jaw * s.jaw_gain, 0, 1)
    # pressed lips (p/b/m) shut what parts them: the jaw, and the rounding's small oval (round_protrude)
    shut = _shut(press, s)
    jaw *= 1.0 - shut
    round_w = _sideways(round_w * (1.0 - shut))
    return {
        "jaw": jaw,
        "lip_raise": _clamp(raise_ + shapes.raise_per_spread * spread, 0, 1),
        "lip_drop": _clamp(shapes.drop_per_jaw * jaw + shapes.drop_per_spread_open * spread * jaw, 0, 1),
        "lip_spread": spread_w,
        "lip_round": round_w,
        "lip_press": press,
    }


def mouth_pose(sound: tuple[float, float, float, float] | None, weights: dict[str, float], upper_lift: float,
               lower_drop: float, shapes: ShapeMap = DEFAULT_SHAPES) -> MouthPose:
    """The interior for the sound's clipped (jaw_open, lip_spread, lip_round, lip_press) and the rig weights
    rig_weights drew from them; upper_lift / lower_drop: how far (in W) the lips' middles moved at those weights
    beyond the jaw's own drop (avatar.face.rig.lip_motion). sound None: weights made by hand (a motion probed
    alone, `avatar eval fit-shapes`), read as the sound itself.

    What tells the sound (the lips hiding the teeth, the tongue tip of t/d/n/l/th) follows the sound, whatever gain
    and size the fit gave the jaw and the spread / rounding motions (those motions also carry the real width's pull
    on an opening jaw or pressed lips, not the lips spreading or rounding); what is geometry (the lower teeth of a
    wide opening) follows the opening drawn."""
    jaw = weights["jaw"]
    if sound is None:  # weights made by hand read as the sound once the press shut it (the jaw over its gain)
        sound_jaw = _clamp(jaw / max(shapes.jaw_gain, 1e-6), 0, 1)
        spread, rnd = _clamp(weights["lip_spread"], 0, 1), _clamp(weights["lip_round"], 0, 1)
    else:
        jaw_open, spread, rnd, press = (_clamp(float(v), 0, 1) for v in sound)
        shut = _shut(press, shapes)  # pressed lips shut the opening and the rounding's oval (rig_weights)
        sound_jaw, rnd = jaw_open * (1.0 - shut), rnd * (1.0 - shut)
    hidden = max(1.0 - shapes.round_hides_teeth * _smooth(shapes.round_hides_from, shapes.round_hides_full, rnd), 0.0)
    upper = (shapes.upper_teeth_rest + shapes.upper_teeth_per_lift * upper_lift) * hidden
    lower = (shapes.lower_teeth_rest + shapes.lower_teeth_per_drop * lower_drop
             + shapes.lower_teeth_per_open * max(jaw - 0.5, 0.0) / 0.5) * hidden
    a, b, c, d = shapes.tongue_tip_jaw
    tip = _smooth(a, b, sound_jaw) * (1.0 - _smooth(c, d, sound_jaw)) * (1.0 - rnd) * (1.0 - _smooth(0.3, 0.5, spread))
    tongue = shapes.tongue_open_share * (1.0 - shapes.round_hides_tongue * rnd) + shapes.tongue_tip_share * tip
    return MouthPose(upper, lower, tongue, tip, shapes.teeth_fill * hidden)
