"""Frames that would look the same are not rendered again: the live view's idle saving.

At rest (silence, the mouth closed, no expression easing) only the slow idle motion moves the face: head sway and
breathing move it by at most ~0.1 px per 60 Hz frame on the default face, so redrawing every frame repaints
pictures that differ by a tenth of a pixel. `StillFrames.render` asks the renderer for the frame's field weights
first (cheap: a few dozen numbers) and bounds how far any pixel would move since the frame last rendered:
sum_k |dw_k| * (field k's largest displacement, in pixels). Below MOTION_STEP_PIXELS the last frame stands and
nothing is rendered; eye closure (a blink) and any weight change beyond that bound render at once, so blinks and
speech are drawn every frame, and the idle motion is drawn in steps of at most MOTION_STEP_PIXELS.

A renderer that cannot tell its weights (a stand-in, a wrapper without them) is rendered every time.

`quiet_ticks` says how many of the next display ticks need no look at all: at the speed the idle motion was last
seen moving, no pixel gets a step from the frame shown before then (nor does a blink start). The live render
worker sleeps through them instead of waking at 60 Hz to find the frame unchanged.
"""
from __future__ import annotations

import math

import numpy as np

MOTION_STEP_PIXELS = 0.25  # a frame is rendered once some pixel would move this far since the last rendered one
EYE_STEP = 1e-4  # eye closure change (0..1) that renders at once: blinks are drawn every frame
MOUTH_STEP = 0.01  # a mouth-parameter change (0..1) that renders at once: speech is drawn every frame, while the
# network's flutter in silence (well under this after the smoother) leaves a still face still
MAX_QUIET_TICKS = 3  # at most this many display ticks slept through at once (50 ms at 60 fps): what anything the
# motion speed cannot foresee (a setting, a new photo) may wait at worst; speech and expressions wake the worker


def _weights_source(renderer):
    """The object whose `weights(params, t)` gives the renderer's field weights, and its rig; (None, None) when
    there is none. A wrapper (avatar.face.assemble.BackgroundFill) holds the face renderer as `.renderer`."""
    seen = 0
    while renderer is not None and seen < 4:
        if callable(getattr(renderer, "weights", None)) and getattr(renderer, "rig", None) is not None:
            return renderer, renderer.rig
        renderer, seen = getattr(renderer, "renderer", None), seen + 1
    return None, None


def field_reach(fields: np.ndarray) -> np.ndarray:
    """Largest displacement (pixels) of each field at full weight: fields (K, ..., 2) → (K,)."""
    fields = np.asarray(fields, np.float32)
    return np.sqrt((fields ** 2).sum(-1)).reshape(len(fields), -1).max(1) if fields.size else np.zeros(len(fields))


class StillFrames:
    """Renders through `renderer` only when the frame would differ visibly from the last one rendered."""

    def __init__(self, step_pixels: float = MOTION_STEP_PIXELS):
        self.step_pixels = step_pixels
        self._renderer = None
        self._source = None
        self._reach = None  # (head fields' reach, local fields' reach), pixels
        self._last = None  # (local, head, eyes) of the last frame rendered
        self._last_params = None  # the mouth parameters it was rendered for
        self._last_t = None  # and its time
        self._motion = None  # (pixels, seconds): how far the face was last seen to move, in how long; None: unknown
        self._now = None  # the time of the latest look
        self.rendered = 0
        self.unchanged = 0

    def _bind(self, renderer) -> None:
        self._renderer, self._last, self._last_params, self._motion = renderer, None, None, None
        self._source, rig = _weights_source(renderer)
        self._reach = None if rig is None else (field_reach(rig.head_fields), field_reach(rig.local_fields))

    def moved_pixels(self, weights, last) -> float:
        """Upper bound of how far any pixel moves from the frame of weights `last` to that of `weights`."""
        (local, head, eyes), (l0, h0, e0) = weights[:3], last[:3]  # the sound moves no pixel the weights do not
        if np.abs(np.asarray(eyes) - e0).max(initial=0.0) > EYE_STEP:
            return float("inf")
        head_reach, local_reach = self._reach
        return float(np.abs(np.asarray(head) - h0) @ head_reach + np.abs(np.asarray(local) - l0) @ local_reach)

    def render(self, renderer, params: np.ndarray, t: float) -> np.ndarray | None:
        """The frame for (params, t), or None when the last frame rendered still shows it (within the step)."""
        if renderer is not self._renderer:
            self._bind(renderer)
        self._now, self._motion = t, None
        if self._source is not None:
            weights = tuple(np.array(w, np.float32) for w in self._source.weights(params, t))
            mouth = np.asarray(params, np.float32)
            talking = self._last_params is None or np.abs(mouth - self._last_params).max(initial=0.0) >= MOUTH_STEP
            if self._last is not None and not talking:
                moved = self.moved_pixels(weights, self._last)
                if t > self._last_t and math.isfinite(moved):
                    self._motion = (moved, t - self._last_t)
                if moved < self.step_pixels:
                    self.unchanged += 1
                    return None
            self._last, self._last_params, self._last_t = weights, mouth.copy(), t
        self.rendered += 1
        # render() computes the same weights again: liveliness and expressions depend on t only (a second call at
        # the same t changes no state), and the weights are a few dozen numbers next to the warp
        return renderer.render(params, t)

    def quiet_ticks(self, period: float, limit: int = MAX_QUIET_TICKS) -> int:
        """How many display ticks (`period` s apart) after the latest look need none: at the speed the face was
        last seen moving (from the frame shown), a pixel reaches the step only at the tick after them. 0 when that
        speed is unknown (speech, a blink, the first frame, a renderer without weights); stops short of the tick
        where the next blink starts."""
        if self._motion is None or self._last is None or period <= 0:
            return 0
        moved, seconds = self._motion
        since = self._now - self._last_t  # 0 when the latest look rendered: the motion seen is that frame's
        reach = self.step_pixels - (moved if since > 0 else 0.0)
        speed = moved / seconds
        ticks = limit if speed <= 0 else max(math.ceil(reach / (speed * period)) - 1, 0)
        blink = getattr(self._source, "next_blink", None)
        until = blink(self._now) - self._now if blink is not None else math.inf
        if until < (limit + 1) * period:  # (inf: the face does not blink)
            ticks = min(ticks, max(int(until / period), 0))
        return min(ticks, limit)

    def invalidate(self) -> None:
        """The next frame is rendered whatever it shows (its picture was dropped, e.g. the view was hidden)."""
        self._last = self._last_params = self._motion = None
