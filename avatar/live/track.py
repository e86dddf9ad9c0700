"""Mouth parameters on the audio clock: the 100 Hz track by audio time, and the smoothed mouth sampled by time."""
from __future__ import annotations

import math
import threading
from collections import deque
from typing import Mapping

import numpy as np

from avatar.audio import HOP_LENGTH, SAMPLE_RATE, WIN_LENGTH
from avatar.visemes import N_PARAMS, PARAM_NAMES

FEATURE_RATE = SAMPLE_RATE // HOP_LENGTH  # 100 parameter frames per second
# feature frame i covers samples [(i+1)*HOP - WIN, (i+1)*HOP): its centre is this far from i / FEATURE_RATE
FRAME_CENTER_OFFSET = (HOP_LENGTH - WIN_LENGTH / 2) / SAMPLE_RATE  # -2.5 ms
TRACK_SECONDS = 10.0  # parameter history kept for sampling by time
# The mouth follows the network's 100 Hz targets through ParamSmoother (a critically damped spring).
# Live, its lag adds straight to mic→pixel latency, so the app runs it faster than DEFAULT_OMEGA:
SMOOTHING_OMEGA = 150.0  # rad/s: 7 ms time constant; still rounds off the 100 Hz steps and single-frame jitter
# Each 100 Hz row pulls the spring from one hop *before* its stamp: the newest row is being reached as it is
# shown. Stamped at its own time, the newest row could not move the mouth at all until the next row came (a hop
# of latency, ~10 ms, on every onset).
SPRING_LEAD = 1.0 / FEATURE_RATE  # 10 ms
# the spring's group delay (2 / omega, 13 ms) less the lead: 3 ms; frames are stamped this much earlier
# (recordings, files). Measured on speech, smoothed vs raw track: best aligned at 2 ms (12 ms without the lead).
SMOOTHING_DELAY = 2.0 / SMOOTHING_OMEGA - SPRING_LEAD
# ...and stiffens for big moves (up to 600 rad/s, 1.7 ms): a vowel onset opens the mouth without the spring's lag
SMOOTHING_MAX_OMEGA = 600.0
DEFAULT_OMEGA = 38.0  # rad/s: ~26 ms time constant, fast enough for a p/b/m closure, calm on 10 ms jitter
MAX_PENDING = 4096  # targets kept while nobody samples (40 s at 100 Hz)


class ParamTrack:
    """Mouth parameters per 10 ms frame, indexed by the audio time they describe; sampled by time."""

    def __init__(self, seconds: float = TRACK_SECONDS):
        self.capacity = int(seconds * FEATURE_RATE)
        self._params = np.zeros((0, N_PARAMS), np.float32)
        self._first = 0  # frame index of _params[0]
        self._lock = threading.Lock()

    def append(self, params: np.ndarray, first_index: int) -> None:
        with self._lock:
            if len(self._params) == 0:
                self._first = first_index
            self._params = np.concatenate([self._params, params])[-self.capacity:]
            self._first = first_index + len(params) - len(self._params)

    def rows_from(self, index: int, until: float) -> tuple[np.ndarray, int]:
        """Rows from frame `index` (or the oldest kept) to time `until`, and the frame index of the first."""
        with self._lock:
            start = max(index, self._first)
            end = int(np.floor((until - FRAME_CENTER_OFFSET) * FEATURE_RATE)) + 1
            return self._params[start - self._first:max(start, end) - self._first].copy(), start

    @staticmethod
    def time_of(index: float) -> float:
        return index / FEATURE_RATE + FRAME_CENTER_OFFSET

    @property
    def latest_time(self) -> float | None:
        with self._lock:
            return None if len(self._params) == 0 else self.time_of(self._first + len(self._params) - 1)

    def at(self, t: float) -> np.ndarray:
        """Parameters at audio time t, linearly interpolated; held at the ends; neutral before any audio."""
        with self._lock:
            if len(self._params) == 0:
                return np.zeros(N_PARAMS, np.float32)
            x = (t - FRAME_CENTER_OFFSET) * FEATURE_RATE - self._first
            x = min(max(x, 0.0), len(self._params) - 1.0)
            i = int(x)
            j = min(i + 1, len(self._params) - 1)
            w = np.float32(x - i)
            return (1 - w) * self._params[i] + w * self._params[j]



class ParamSmoother:
    """Parameter smoothing from the network's 100 Hz output to any display rate, by time (not by frame count).
    
    Each parameter follows its latest target through a critically damped spring, solved exactly between target
    changes, so sampling at 30 or 60 fps gives the same values at the same instants.
    
    Optionally the spring stiffens for big moves (like the One Euro filter: calm when the mouth hovers, quick when
    it jumps): for each target change the rate is `omega * (1 + |target - value| / adapt_span)`, capped at
    `max_omega`. Small 10 ms wobbles keep the full smoothing; a mouth opening on a vowel onset is not held back.
    """

    def __init__(self, omega: float = DEFAULT_OMEGA, initial: Mapping[str, float] | None = None,
                 max_omega: float | None = None, adapt_span: float = 0.1):
        if not omega > 0:
            raise ValueError("omega must be positive")
        if max_omega is not None and max_omega < omega:
            raise ValueError("max_omega must be at least omega")
        if not adapt_span > 0:
            raise ValueError("adapt_span must be positive")
        self.omega = float(omega)
        self.max_omega = float(max_omega) if max_omega is not None else self.omega
        self.adapt_span = float(adapt_span)
        self._omega: dict[str, float] = {}  # per parameter: the rate chosen at its latest target change
        self._pending: deque[tuple[float, dict[str, float]]] = deque(maxlen=MAX_PENDING)
        self._target: dict[str, float] = dict(initial or {})
        self._value: dict[str, float] = dict(initial or {})
        self._velocity: dict[str, float] = {k: 0.0 for k in self._value}
        self._time: float | None = None
        self._last_push: float = -math.inf

    def reset(self, initial: Mapping[str, float] | None = None):
        self.__init__(self.omega, initial, self.max_omega, self.adapt_span)

    def push(self, t: float, params: Mapping[str, float]):
        """A new target at time t (seconds, non-decreasing; an earlier t starts over from that time)."""
        t = float(t)
        if t < self._last_push:
            self.reset(self._value)
        self._last_push = t
        clean = {k: float(v) for k, v in params.items() if v is not None and math.isfinite(float(v))}
        self._pending.append((t, clean))

    def _advance(self, dt: float):
        if dt <= 0:
            return
        for k, target in self._target.items():
            w = self._omega.get(k, self.omega)
            decay = math.exp(-w * dt)
            x0 = self._value.get(k, 0.0) - target
            v0 = self._velocity.get(k, 0.0)
            c = v0 + w * x0
            self._value[k] = target + (x0 + c * dt) * decay
            self._velocity[k] = (v0 - w * c * dt) * decay

    def sample(self, t: float) -> dict[str, float]:
        """The smoothed parameters at time t; a t earlier than the last sample returns the last values."""
        t = float(t)
        if self._time is None:
            if not self._pending or self._pending[0][0] > t:
                return dict(self._value)
            t0, first = self._pending.popleft()
            self._time = t0  # start at rest on the first target
            for k, v in first.items():
                self._target[k] = v
                self._value.setdefault(k, v)
                self._velocity.setdefault(k, 0.0)
        if t <= self._time:
            return dict(self._value)
        while self._pending and self._pending[0][0] <= t:
            tp, params = self._pending.popleft()
            self._advance(tp - self._time)
            self._time = max(self._time, tp)
            for k, v in params.items():
                self._target[k] = v
                self._value.setdefault(k, 0.0)
                self._velocity.setdefault(k, 0.0)
                jump = abs(v - self._value[k])
                self._omega[k] = min(self.max_omega, self.omega * (1.0 + jump / self.adapt_span))
        self._advance(t - self._time)
        self._time = t
        return dict(self._value)


class ParamSampler:
    """Smoothed parameters by time, for one consumer (the render thread, or the offline loop).

    Feeds the track's new 100 Hz rows to the smoother as targets and samples it at the asked time; `delay` is
    how far behind that time the smoothed mouth is (its frames depict t - delay)."""

    def __init__(self, track: ParamTrack, smooth: bool = True):
        self.track = track
        self.smoother = None
        if smooth:
            self.smoother = ParamSmoother(omega=SMOOTHING_OMEGA, max_omega=SMOOTHING_MAX_OMEGA)
        self.delay = SMOOTHING_DELAY if smooth else 0.0
        self._next = 0  # first track frame not yet given to the smoother

    def at(self, t: float) -> dict[str, float]:
        if self.smoother is None:
            return dict(zip(PARAM_NAMES, map(float, self.track.at(t))))
        rows, first = self.track.rows_from(self._next, until=t + SPRING_LEAD)
        for k, row in enumerate(rows):
            self.smoother.push(self.track.time_of(first + k) - SPRING_LEAD, dict(zip(PARAM_NAMES, map(float, row))))
        self._next = first + len(rows)
        return {**neutral_params(), **self.smoother.sample(t)}


def neutral_params() -> dict[str, float]:
    return dict.fromkeys(PARAM_NAMES, 0.0)

