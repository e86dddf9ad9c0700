"""Mouth parameters on the audio clock: the 100 Hz track by audio time, and the smoothed mouth sampled by time."""
from __future__ import annotations

import math
import threading
from collections import deque

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
# The lips' width (lip_spread, lip_round) follows slower: the corners of a real mouth move more smoothly, and a
# little later, than the network's spread and rounding do. GRID, each clip's real width against a least-squares map
# fitted on the other ten (the network's parameters as drawn): r 0.427 on the jaw's spring, 0.437 / 0.445 / 0.448 /
# 0.448 / 0.445 at 150 / 100 / 75 / 60 / 50 rad/s without its stiffening (0.437 at 75 with it, up to 300). `avatar
# eval video`, GRID, tables refitted: rendered width r 0.485 -> 0.512 (held out 0.484); README, "The width's spring"
WIDTH_OMEGA = 75.0  # rad/s: 27 ms group delay against the jaw's 13 (the frames are stamped for the jaw's)
WIDTH_MAX_OMEGA = 75.0  # no stiffening: the real corners do not follow a jump of the network's spread
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

    Parameters are one array (PARAM_NAMES order). Each follows its latest target through a critically damped
    spring, solved exactly between target changes, so sampling at 30 or 60 fps gives the same values at the same
    instants. A non-finite target value leaves that parameter's target as it was.

    Optionally the spring stiffens for big moves (like the One Euro filter: calm when the mouth hovers, quick when
    it jumps): for each target change the rate is `omega * (1 + |target - value| / adapt_span)`, capped at
    `max_omega`. Small 10 ms wobbles keep the full smoothing; a mouth opening on a vowel onset is not held back.
    """

    def __init__(self, omega=DEFAULT_OMEGA, initial: np.ndarray | None = None,
                 max_omega=None, adapt_span: float = 0.1, size: int = N_PARAMS):
        """omega, max_omega: one rate for every parameter, or one per parameter (PARAM_NAMES order)."""
        omega = np.broadcast_to(np.asarray(omega, np.float64), (size,)).copy()
        max_omega = omega.copy() if max_omega is None else np.broadcast_to(
            np.asarray(max_omega, np.float64), (size,)).copy()
        if not (omega > 0).all():
            raise ValueError("omega must be positive")
        if (max_omega < omega).any():
            raise ValueError("max_omega must be at least omega")
        if not adapt_span > 0:
            raise ValueError("adapt_span must be positive")
        self.omega = omega
        self.max_omega = max_omega
        self.adapt_span = float(adapt_span)
        self.size = size
        # float64 state: the spring is solved in double precision; samples come out float32
        self._value = np.zeros(size)
        self._known = np.zeros(size, bool)  # parameters that have had a value (initial or a first target)
        if initial is not None:
            initial = self._row(initial)
            self._known = np.isfinite(initial)
            self._value[self._known] = initial[self._known]
        self._target = self._value.copy()  # an unknown parameter rests at 0, as the neutral mouth does
        self._velocity = np.zeros(size)
        self._omega = self.omega.copy()  # per parameter: the rate chosen at its latest target change
        self._pending: deque[tuple[float, np.ndarray]] = deque(maxlen=MAX_PENDING)
        self._time: float | None = None
        self._last_push: float = -math.inf

    def _row(self, params) -> np.ndarray:
        row = np.array(params, np.float64).reshape(-1)
        if row.shape != (self.size,):
            raise ValueError(f"expected {self.size} parameters, got {row.shape[0]}")
        return row

    def reset(self, initial: np.ndarray | None = None) -> None:
        self.__init__(self.omega, initial, self.max_omega, self.adapt_span, self.size)

    def push(self, t: float, params: np.ndarray) -> None:
        """A new target at time t (seconds, non-decreasing; an earlier t starts over from that time)."""
        t = float(t)
        row = self._row(params)  # a copy: the caller may reuse its array
        if t < self._last_push:
            self.reset(np.where(self._known, self._value, np.nan))
        self._last_push = t
        self._pending.append((t, row))

    def _advance(self, dt: float) -> None:
        if dt <= 0:
            return
        w = self._omega
        decay = np.exp(-w * dt)
        x0 = self._value - self._target
        v0 = self._velocity
        c = v0 + w * x0
        self._value = self._target + (x0 + c * dt) * decay
        self._velocity = (v0 - w * c * dt) * decay

    def sample(self, t: float) -> np.ndarray:
        """The smoothed parameters at time t (float32); a t earlier than the last sample returns the last values."""
        t = float(t)
        if self._time is None:
            if not self._pending or self._pending[0][0] > t:
                return self._value.astype(np.float32)
            t0, first = self._pending.popleft()
            self._time = t0  # start at rest on the first target
            given = np.isfinite(first)
            self._target[given] = first[given]
            new = given & ~self._known
            self._value[new] = first[new]
            self._known |= given
        if t <= self._time:
            return self._value.astype(np.float32)
        while self._pending and self._pending[0][0] <= t:
            tp, row = self._pending.popleft()
            self._advance(tp - self._time)
            self._time = max(self._time, tp)
            given = np.isfinite(row)
            self._target[given] = row[given]
            self._known |= given
            jump = np.abs(row[given] - self._value[given])
            self._omega[given] = np.minimum(self.max_omega[given], self.omega[given] * (1.0 + jump / self.adapt_span))
        self._advance(t - self._time)
        self._time = t
        return self._value.astype(np.float32)


def smoothing_rates() -> tuple[np.ndarray, np.ndarray]:
    """(omega, max_omega) per parameter, PARAM_NAMES order: the jaw and the press at the app's rate, the width's two
    slower."""
    omega, max_omega = np.full(N_PARAMS, SMOOTHING_OMEGA), np.full(N_PARAMS, SMOOTHING_MAX_OMEGA)
    for name in ("lip_spread", "lip_round"):
        omega[PARAM_NAMES.index(name)], max_omega[PARAM_NAMES.index(name)] = WIDTH_OMEGA, WIDTH_MAX_OMEGA
    return omega, max_omega


class ParamSampler:
    """Smoothed parameters by time, for one consumer (the render thread, or the offline loop).

    Feeds the track's new 100 Hz rows to the smoother as targets and samples it at the asked time; `delay` is
    how far behind that time the smoothed mouth is (its frames depict t - delay)."""

    def __init__(self, track: ParamTrack, smooth: bool = True):
        self.track = track
        omega, max_omega = smoothing_rates()
        self.smoother = ParamSmoother(omega=omega, max_omega=max_omega) if smooth else None
        self.delay = SMOOTHING_DELAY if smooth else 0.0
        self._next = 0  # first track frame not yet given to the smoother

    def at(self, t: float) -> np.ndarray:
        """The mouth parameters at audio time t: one float32 array, PARAM_NAMES order (neutral before any row)."""
        if self.smoother is None:
            return self.track.at(t)
        rows, first = self.track.rows_from(self._next, until=t + SPRING_LEAD)
        for k, row in enumerate(rows):
            self.smoother.push(self.track.time_of(first + k) - SPRING_LEAD, row)
        self._next = first + len(rows)
        return self.smoother.sample(t)


def neutral_params() -> np.ndarray:
    """The closed, relaxed mouth: every parameter 0."""
    return np.zeros(N_PARAMS, np.float32)
