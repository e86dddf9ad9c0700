"""Whether a video's sound is in step with its picture: the lag at which the mouth its sound drives follows the
person's mouth on camera best.

Screen and webcam recorders, and some conversions, mux the sound a few hundred milliseconds off the picture
(`../shared/data/video`'s kim trails by ~120 ms, d20 by ~300 ms). The width fit (avatar.face.video_avatar
.calibrate) pairs each frame's network parameters with the person's width on that frame, so a file out of step
would teach it another frame's mouth. Here: the files network's jaw_open on the video's own sound (every 10 ms),
against the tracked opening (every frame), over lags of +-SEARCH_MS; a lag is taken only where it follows the
person clearly better than the file's own timing does. Measured on the real clips (files network, whole clips and
their first 60 %): kim +100 ms (r 0.07 -> 0.51), d20 +280 ms (0.21 -> 0.72); on every GRID sentence the best lag
lies within 20 ms of 0 and gains at most 0.08; on the four sung clips the jaw follows the voice too loosely to tell
(best r 0.04-0.38).
"""
from __future__ import annotations

import numpy as np

from avatar.stats import pearson

SEARCH_MS = 600  # lags searched either side of the file's own timing
STEP_MS = 10  # the network's hop
MIN_GAIN = 0.2  # a lag is taken where r(opening, jaw) at it beats r at 0 by this much (GRID's best: 0.08)...
MIN_R = 0.4  # ...and reaches this: a mouth that visibly follows the sound there
MIN_OVERLAP = 0.5  # a lag counts only where this share of the frames still has sound at it
TRACK_RATE = 100.0  # the network's frames per second


def rs_by_lag(jaw: np.ndarray, opening: np.ndarray, fps: float, lags_ms: np.ndarray) -> np.ndarray:
    """r(opening(t), jaw(t + lag)) for each lag: `jaw` every 1 / TRACK_RATE s from 0, `opening` at frame k / fps.
    A frame whose t + lag falls outside the sound is left out (not read at the sound's edge)."""
    times = np.arange(len(jaw)) / TRACK_RATE
    frame_times = np.arange(len(opening)) / fps
    out = np.full(len(lags_ms), np.nan)
    for i, lag in enumerate(lags_ms):
        t = frame_times + lag / 1000.0
        inside = (t >= 0) & (t <= times[-1]) if len(times) else np.zeros(len(t), bool)
        if inside.sum() >= MIN_OVERLAP * len(t):
            out[i] = pearson(np.interp(t[inside], times, jaw), opening[inside])
    return out


def sound_offset(jaw: np.ndarray, opening: np.ndarray, fps: float) -> dict:
    """{"offset_ms": how far the sound trails the picture (0: in step, or no clear sign of otherwise; < 0: it leads),
    "r_at_0", "r"} from the files network's jaw_open on the sound (TRACK_RATE) and the tracked opening per frame."""
    lags = np.arange(-SEARCH_MS, SEARCH_MS + 1, STEP_MS)
    rs = rs_by_lag(np.asarray(jaw, np.float64), np.asarray(opening, np.float64), fps, lags)
    at_0 = rs[len(lags) // 2]
    if not np.isfinite(rs).any():
        return {"offset_ms": 0, "r_at_0": None, "r": None}
    best = int(np.nanargmax(rs))
    r0 = float(at_0) if np.isfinite(at_0) else -1.0
    taken = rs[best] >= MIN_R and rs[best] >= r0 + MIN_GAIN
    return {"offset_ms": int(lags[best]) if taken else 0, "r_at_0": round(r0, 4), "r": round(float(rs[best]), 4),
            "best_lag_ms": int(lags[best])}


def find_sound_offset(audio: np.ndarray, opening: np.ndarray, fps: float, model=None) -> dict:
    """sound_offset of a video's sound (16 kHz, on its first frame's clock) against its tracked opening per frame,
    the files network (`model`: its path, the shipped one by default) run on ONNX Runtime, as the width fit runs it."""
    from avatar.audio import SAMPLE_RATE
    from avatar.engine import EngineError, default_model_path
    from avatar.face.video_avatar.calibrate import network_params

    n = int(len(audio) / SAMPLE_RATE * TRACK_RATE)
    try:
        _, params = network_params(audio, n, TRACK_RATE, model or default_model_path())
    except (EngineError, ValueError, OSError) as e:  # no engine: the file's own timing
        return {"offset_ms": 0, "r_at_0": None, "r": None, "why": str(e)}
    return sound_offset(params[:, 0], opening, fps)
