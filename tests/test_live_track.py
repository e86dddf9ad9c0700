"""The live stage's parameter smoother: smoothing by time, independent of the frame rate."""
import numpy as np
import pytest

from avatar.live.track import ParamSmoother


def test_smoother_is_frame_rate_independent_and_settles():
    def run(fps):
        s = ParamSmoother()
        out = {}
        pushes = [(i / 100, {"jaw_open": 1.0 if 20 <= i < 60 else 0.0}) for i in range(120)]
        frames = np.arange(0, 1.2, 1 / fps)
        k = 0
        for t in frames:
            while k < len(pushes) and pushes[k][0] <= t:
                s.push(*pushes[k])
                k += 1
            out[round(t * 60)] = s.sample(t)["jaw_open"]
        return out

    a30, a60 = run(30), run(60)
    common = sorted(set(a30) & set(a60))
    assert len(common) > 30
    assert max(abs(a30[k] - a60[k]) for k in common) < 1e-9
    values = np.array([a60[k] for k in sorted(a60)])
    assert values.max() > 0.95 and values.max() <= 1.0 + 1e-9  # reaches the target, critically damped: no overshoot
    assert values[-1] < 0.01
    rising = values[12:36]
    assert np.all(np.diff(rising) >= -1e-12)


def _step_response(smoother, size, fps=240, seconds=0.2):
    smoother.push(0.0, {"jaw_open": 0.0})
    smoother.push(0.01, {"jaw_open": size})
    return np.array([smoother.sample(t)["jaw_open"] for t in np.arange(0, seconds, 1 / fps)]) / size


def test_adaptive_smoother_is_quick_on_big_moves_and_calm_on_small_ones():
    def half_time(response, fps=240):
        return np.argmax(response >= 0.5) / fps - 0.01  # the step comes at 10 ms

    plain, quick = ParamSmoother(omega=150), ParamSmoother(omega=150, max_omega=600, adapt_span=0.1)
    big_plain, big_quick = _step_response(plain, 0.8), _step_response(quick, 0.8)
    assert half_time(big_quick) < 0.5 * half_time(big_plain)  # a vowel onset shows sooner
    assert big_quick.max() <= 1.0 + 1e-9 and big_quick[-1] > 0.999  # still settles without overshoot
    small_plain = _step_response(ParamSmoother(omega=150), 0.01)
    small_quick = _step_response(ParamSmoother(omega=150, max_omega=600, adapt_span=0.1), 0.01)
    assert np.abs(small_quick - small_plain).max() < 0.1  # a 10 ms wobble is smoothed (almost) as before
    # still frame-rate independent: the rate is chosen when a target arrives, not when a frame is drawn
    a = _step_response(ParamSmoother(omega=150, max_omega=600), 0.8, fps=60)
    b = _step_response(ParamSmoother(omega=150, max_omega=600), 0.8, fps=120)[::2]
    np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError):
        ParamSmoother(omega=150, max_omega=100)


def test_smoother_handles_gaps_time_going_back_and_bad_values():
    s = ParamSmoother()
    assert s.sample(0.0) == {}
    s.push(0.0, {"lip_round": 0.5})
    assert s.sample(0.0)["lip_round"] == pytest.approx(0.5)
    s.push(0.01, {"lip_round": float("nan"), "jaw_open": 0.2})
    v = s.sample(5.0)
    assert v["lip_round"] == pytest.approx(0.5) and v["jaw_open"] == pytest.approx(0.2, abs=1e-6)
    assert s.sample(1.0) == v  # asking for the past returns the latest values
    s.push(0.5, {"jaw_open": 1.0})  # earlier than the last push: a new clip starts from the current values
    assert s.sample(6.0)["jaw_open"] == pytest.approx(1.0, abs=1e-6)
