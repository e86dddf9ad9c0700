"""Facial expressions on demand (hotkeys): neutral, smile, surprise, frown, sad.

An expression is a set of additive extras (the rig's expression motions, avatar.face.rig, plus a little brow,
jaw or head where it belongs), added to what the mouth parameters and the liveliness ask for, so the mouth keeps
talking while the face smiles. One is shown at a time; switching eases from whatever is on the face now (also
half-way through a switch) to the new one over EASE_SECONDS, on the renderer's own clock (the `t` frames are
rendered at), so callers need no clock: a request takes effect at the first frame rendered after it.

`ExpressionState.request` may be called from any thread (the window's) while the render thread calls `extras`:
a request is one tuple assignment, read once per frame, so neither waits for the other.
"""
from __future__ import annotations

import math

NEUTRAL = "neutral"
# Each expression's extras at full strength (names the renderer's field_weights knows: avatar.face.render_base).
EXPRESSIONS: dict[str, dict[str, float]] = {
    NEUTRAL: {},
    # corners up and out, cheeks up, the eyes narrowed a little by the cheeks (a real smile's squint)
    "smile": {"mouth_smile": 1.0, "eye_widen": -0.3, "brow_raise": 0.1},
    # brows up, eyes wide, the jaw dropped a little (p/b/m still close it: lip_press wins over the jaw)
    # jaw 0.2 before the fitted jaw gain 0.99 -> 0.84 (v3r), 0.24 before 0.84 -> 0.78 (the corners drop with the
    # jaw, the teeth lit evenly: FaceMesh reads the opening larger, so the fit draws it smaller)
    "surprise": {"brow_raise": 1.0, "eye_widen": 1.0, "jaw_open": 0.26},
    # brows down and together, corners down a little
    "frown": {"brow_knit": 1.0, "mouth_frown": 0.5, "eye_widen": -0.2},
    # inner brows up, corners down, the head a little lowered
    "sad": {"brow_inner_up": 1.0, "mouth_frown": 1.0, "eye_widen": -0.15, "head_pitch": 0.25},
}
EXPRESSION_NAMES = tuple(EXPRESSIONS)  # the hotkeys' order: 1 neutral, 2 smile, 3 surprise, 4 frown, 5 sad
EASE_SECONDS = 0.2  # a switch eases in and out over this (faces take 150-250 ms to change expression)


def check_expression(name: str) -> str:
    """`name` if it is a known expression, else ValueError naming the known ones."""
    if name not in EXPRESSIONS:
        raise ValueError(f"unknown expression {name!r}; known: {', '.join(EXPRESSION_NAMES)}")
    return name


def _ease(s: float) -> float:
    """0 -> 1 with zero slope at both ends (smoothstep)."""
    s = min(max(s, 0.0), 1.0)
    return s * s * (3 - 2 * s)


class ExpressionState:
    """The expression on the face and the switch in progress, as extras for a frame at time t."""

    def __init__(self, ease_seconds: float = EASE_SECONDS):
        self.ease_seconds = ease_seconds
        self._request: tuple[int, str, bool] = (0, NEUTRAL, False)  # (number, name, ease): the latest request
        self._applied = 0  # the number of the request the frames follow
        self._from: dict[str, float] = {}  # the extras on the face when the current switch began
        self._to: dict[str, float] = {}  # the target's extras
        self._start = -math.inf  # render time the current switch began
        self._last_t: float | None = None

    @property
    def name(self) -> str:
        """The expression asked for last (shown, or being eased into)."""
        return self._request[1]

    def request(self, name: str, ease: bool = True) -> None:
        """Switch to expression `name` from the next frame on, eased (or at once: ease=False)."""
        check_expression(name)
        self._request = (self._request[0] + 1, name, ease)

    def extras(self, t: float) -> dict[str, float]:
        """The expression's extras at render time t (empty when neutral and settled: nothing to add)."""
        number, name, ease = self._request
        if self._last_t is not None and t < self._last_t:  # time went back (a new clip): no switch in the past
            self._start = min(self._start, t - self.ease_seconds)
        self._last_t = t
        if number != self._applied:
            self._from = self._blend(t)
            self._to = dict(EXPRESSIONS[name])
            self._start = t if ease else -math.inf
            self._applied = number
        return self._blend(t)

    def _blend(self, t: float) -> dict[str, float]:
        s = 1.0 if self.ease_seconds <= 0 else _ease((t - self._start) / self.ease_seconds)
        if s >= 1.0:
            return dict(self._to)
        keys = self._from.keys() | self._to.keys()
        return {k: self._from.get(k, 0.0) + s * (self._to.get(k, 0.0) - self._from.get(k, 0.0)) for k in keys}
