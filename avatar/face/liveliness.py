"""Liveliness: blinks at natural random intervals, head sway, breathing, and brow lift + nod on speech emphasis.

Everything is a function of time and the seed (plus the speech parameters for emphasis), so a clip rendered twice
looks the same and tests can pin it down.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from avatar.visemes import PARAM_NAMES

EMPHASIS_EMA_SECONDS = 0.35  # running average of jaw_open that emphasis is measured against
EMPHASIS_RISE = 0.22  # jaw_open this far above its running average...
EMPHASIS_MIN_OPEN = 0.4  # ...and at least this open counts as an emphasised syllable
EMPHASIS_REFRACTORY = 0.9  # seconds between two emphasis gestures
EMPHASIS_BROW_SECONDS, EMPHASIS_NOD_SECONDS = 0.55, 0.45
JAW_OPEN = PARAM_NAMES.index("jaw_open")  # where emphasis reads the jaw in the mouth parameter array


@dataclass
class LivelinessConfig:
    enabled: bool = True
    seed: int = 0
    blinks: bool = True
    blink_interval: tuple[float, float] = (2.0, 6.0)  # seconds between blinks, uniform
    blink_duration: float = 0.15  # seconds, closing + opening
    double_blink_chance: float = 0.1
    sway: bool = True
    sway_amount: float = 1.0  # 1 = a few degrees of slow head motion
    breathing: bool = True
    breath_rate: float = 0.25  # breaths per second
    breath_amount: float = 1.0
    emphasis: bool = True
    emphasis_amount: float = 1.0


def _pulse(tau: float, length: float) -> float:
    if tau <= 0 or tau >= length:
        return 0.0
    return math.sin(math.pi * tau / length) ** 2


class Liveliness:
    def __init__(self, config: LivelinessConfig | None = None):
        self.config = config or LivelinessConfig()
        rng = np.random.default_rng(self.config.seed)
        # sway: three incommensurate sines per axis, random phases (yaw, pitch, roll)
        self._sway_freq = rng.uniform(0.05, 0.23, size=(3, 3))
        self._sway_phase = rng.uniform(0, 2 * math.pi, size=(3, 3))
        self._sway_amp = np.array([0.22, 0.14, 0.12])[:, None] * np.array([0.55, 0.3, 0.15])[None, :]
        self._breath_phase = float(rng.uniform(0, 2 * math.pi))
        self._blink_rng = np.random.default_rng([self.config.seed, 1])
        self._blinks: list[float] = []
        self._blink_horizon = float(self._blink_rng.uniform(0.5, self.config.blink_interval[0]))
        self.reset()

    def reset(self):
        self._ema = 0.0
        self._last_t: float | None = None
        self._emphasis_times: list[float] = []

    def _blink_starts_until(self, t: float) -> list[float]:
        lo, hi = self.config.blink_interval
        while self._blink_horizon <= t + 1.0:
            start = self._blink_horizon
            bisect.insort(self._blinks, start)  # kept sorted (blinks_near looks them up)
            if self._blink_rng.random() < self.config.double_blink_chance:
                bisect.insort(self._blinks, start + 2.2 * self.config.blink_duration)
            self._blink_horizon = start + float(self._blink_rng.uniform(lo, hi))
        return self._blinks

    def blinks_near(self, t: float) -> list[float]:
        """Starts of the blinks that may cover time t (those within one blink duration before it): a look-up in the
        sorted schedule, so a session's hours of blinks do not make every frame scan them all."""
        starts = self._blink_starts_until(t)
        d = self.config.blink_duration
        return starts[bisect.bisect_left(starts, t - d):bisect.bisect_right(starts, t)]

    def next_blink(self, t: float) -> float:
        """When the first blink after time t starts (inf without blinks): what the live view must draw then."""
        c = self.config
        if not (c.enabled and c.blinks):
            return math.inf
        starts = self._blink_starts_until(t)
        i = bisect.bisect_right(starts, t)
        return starts[i] if i < len(starts) else self._blink_horizon

    def blink(self, t: float) -> float:
        d = self.config.blink_duration
        closing = 0.4 * d  # lids fall faster than they rise
        value = 0.0
        for start in self.blinks_near(t):
            tau = t - start
            if 0 <= tau < d:
                if tau < closing:
                    s = tau / closing
                    value = max(value, s * s * (3 - 2 * s))
                else:
                    s = (tau - closing) / (d - closing)
                    value = max(value, 1 - s * s * (3 - 2 * s))
        return value

    def _track_emphasis(self, jaw: float, t: float):
        if self._last_t is not None and t < self._last_t - 1e-6:
            self.reset()  # time went back: a new clip
        if self._last_t is None:
            self._ema = jaw
        else:
            dt = max(t - self._last_t, 0.0)
            k = 1 - math.exp(-dt / EMPHASIS_EMA_SECONDS)
            last = self._emphasis_times[-1] if self._emphasis_times else -1e9
            if jaw > EMPHASIS_MIN_OPEN and jaw - self._ema > EMPHASIS_RISE and t - last > EMPHASIS_REFRACTORY:
                self._emphasis_times.append(t)
                self._emphasis_times = self._emphasis_times[-4:]
            self._ema += k * (jaw - self._ema)
        self._last_t = t

    def extras(self, params: np.ndarray, t: float) -> dict[str, float]:
        """Additive parameters (blink_l/r, brow_raise, head_yaw/pitch/roll/rise) at time t, for the mouth
        parameter array (PARAM_NAMES order) shown then."""
        c = self.config
        out = {"blink_l": 0.0, "blink_r": 0.0, "brow_raise": 0.0,
               "head_yaw": 0.0, "head_pitch": 0.0, "head_roll": 0.0, "head_rise": 0.0}
        if not c.enabled:
            return out
        if c.blinks:
            b = self.blink(t)
            out["blink_l"] = out["blink_r"] = b
        if c.sway:
            s = (self._sway_amp * np.sin(2 * math.pi * self._sway_freq * t + self._sway_phase)).sum(1) * c.sway_amount
            out["head_yaw"], out["head_pitch"], out["head_roll"] = float(s[0]), float(s[1]), float(s[2])
        if c.breathing:
            phase = 2 * math.pi * c.breath_rate * t + self._breath_phase
            out["head_rise"] = 0.5 * c.breath_amount * (1 - math.cos(phase))
            out["head_pitch"] += 0.03 * c.breath_amount * math.sin(phase)
        if c.emphasis:
            self._track_emphasis(float(params[JAW_OPEN]), t)
            for te in self._emphasis_times:
                out["brow_raise"] += 0.6 * c.emphasis_amount * _pulse(t - te, EMPHASIS_BROW_SECONDS)
                out["head_pitch"] += 0.35 * c.emphasis_amount * _pulse(t - te - 0.05, EMPHASIS_NOD_SECONDS)
        return out
