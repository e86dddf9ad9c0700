"""Parameter smoothing from the network's 100 Hz output to any display rate, by time (not by frame count).

Each parameter follows its latest target through a critically damped spring, solved exactly between target
changes, so sampling at 30 or 60 fps gives the same values at the same instants.

Optionally the spring stiffens for big moves (like the One Euro filter: calm when the mouth hovers, quick when
it jumps): for each target change the rate is `omega * (1 + |target - value| / adapt_span)`, capped at
`max_omega`. Small 10 ms wobbles keep the full smoothing; a mouth opening on a vowel onset is not held back.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Mapping

DEFAULT_OMEGA = 38.0  # rad/s: ~26 ms time constant, fast enough for a p/b/m closure, calm on 10 ms jitter
MAX_PENDING = 4096  # targets kept while nobody samples (40 s at 100 Hz)


class ParamSmoother:
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
