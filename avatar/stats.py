"""Figures shared by the rulers and the fits: one Pearson r for every comparison of two tracks."""
from __future__ import annotations

import numpy as np

MIN_POINTS = 3  # fewer finite pairs than this: no r


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """r over the pairs where both are finite; nan with fewer than MIN_POINTS of them or where either is flat."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < MIN_POINTS or np.std(x[ok]) < 1e-12 or np.std(y[ok]) < 1e-12:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])
