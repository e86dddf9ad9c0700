"""The live stage's parameter smoother: one float32 array per sample, smoothed by time, independent of the frame
rate, and the same spring as before the move out of avatar/face (checked against the spring's own equation)."""
import numpy as np
import pytest

from avatar.live.track import (SMOOTHING_MAX_OMEGA, SMOOTHING_OMEGA, SPRING_LEAD, ParamSampler, ParamSmoother,
                               ParamTrack, neutral_params)
from avatar.visemes import N_PARAMS, PARAM_NAMES

JAW, ROUND = PARAM_NAMES.index("jaw_open"), PARAM_NAMES.index("lip_round")


def row(**values) -> np.ndarray:
    out = neutral_params()
    for name, v in values.items():
        out[PARAM_NAMES.index(name)] = v
    return out


def test_smoother_is_frame_rate_independent_and_settles():
    def run(fps):
        s = ParamSmoother()
        out = {}
        pushes = [(i / 100, row(jaw_open=1.0 if 20 <= i < 60 else 0.0)) for i in range(120)]
        frames = np.arange(0, 1.2, 1 / fps)
        k = 0
        for t in frames:
            while k < len(pushes) and pushes[k][0] <= t:
                s.push(*pushes[k])
                k += 1
            sample = s.sample(t)
            assert sample.dtype == np.float32 and sample.shape == (N_PARAMS,)
            out[round(t * 60)] = float(sample[JAW])
        return out

    a30, a60 = run(30), run(60)
    common = sorted(set(a30) & set(a60))
    assert len(common) > 30
    assert max(abs(a30[k] - a60[k]) for k in common) < 1e-6  # float32 samples of the same float64 spring
    values = np.array([a60[k] for k in sorted(a60)])
    assert values.max() > 0.95 and values.max() <= 1.0 + 1e-6  # reaches the target, critically damped: no overshoot
    assert values[-1] < 0.01
    rising = values[12:36]
    assert np.all(np.diff(rising) >= -1e-7)


def _step_response(smoother, size, fps=240, seconds=0.2):
    smoother.push(0.0, row(jaw_open=0.0))
    smoother.push(0.01, row(jaw_open=size))
    return np.array([smoother.sample(t)[JAW] for t in np.arange(0, seconds, 1 / fps)], np.float64) / size


def test_adaptive_smoother_is_quick_on_big_moves_and_calm_on_small_ones():
    def half_time(response, fps=240):
        return np.argmax(response >= 0.5) / fps - 0.01  # the step comes at 10 ms

    plain, quick = ParamSmoother(omega=150), ParamSmoother(omega=150, max_omega=600, adapt_span=0.1)
    big_plain, big_quick = _step_response(plain, 0.8), _step_response(quick, 0.8)
    assert half_time(big_quick) < 0.5 * half_time(big_plain)  # a vowel onset shows sooner
    assert big_quick.max() <= 1.0 + 1e-6 and big_quick[-1] > 0.999  # still settles without overshoot
    small_plain = _step_response(ParamSmoother(omega=150), 0.01)
    small_quick = _step_response(ParamSmoother(omega=150, max_omega=600, adapt_span=0.1), 0.01)
    assert np.abs(small_quick - small_plain).max() < 0.1  # a 10 ms wobble is smoothed (almost) as before
    # still frame-rate independent: the rate is chosen when a target arrives, not when a frame is drawn
    a = _step_response(ParamSmoother(omega=150, max_omega=600), 0.8, fps=60)
    b = _step_response(ParamSmoother(omega=150, max_omega=600), 0.8, fps=120)[::2]
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError):
        ParamSmoother(omega=150, max_omega=100)


def test_smoother_handles_gaps_time_going_back_and_bad_values():
    s = ParamSmoother()
    assert not s.sample(0.0).any()  # nothing pushed yet: the neutral mouth
    s.push(0.0, row(lip_round=0.5))
    assert s.sample(0.0)[ROUND] == pytest.approx(0.5)  # starts at rest on the first target
    s.push(0.01, row(lip_round=np.nan, jaw_open=0.2))  # a NaN keeps that parameter's target
    v = s.sample(5.0)
    assert v[ROUND] == pytest.approx(0.5) and v[JAW] == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_array_equal(s.sample(1.0), v)  # asking for the past returns the latest values
    s.push(0.5, row(jaw_open=1.0))  # earlier than the last push: a new clip starts from the current values
    assert s.sample(6.0)[JAW] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="expected 4 parameters"):
        s.push(7.0, np.zeros(3, np.float32))


def test_step_follows_the_critically_damped_closed_form():
    """A step of size A at t0, from rest: x(t) = A (1 - (1 + w (t - t0)) exp(-w (t - t0))), w chosen at the step."""
    a, t0, omega, max_omega, span = 0.8, 0.01, SMOOTHING_OMEGA, SMOOTHING_MAX_OMEGA, 0.1
    s = ParamSmoother(omega=omega, max_omega=max_omega, adapt_span=span)
    s.push(0.0, row(jaw_open=0.0))
    s.push(t0, row(jaw_open=a))
    w = min(max_omega, omega * (1 + a / span))  # 600 rad/s: the big-move rate
    ts = np.arange(0.0, 0.05, 1 / 1000)
    got = np.array([s.sample(t)[JAW] for t in ts], np.float64)
    dt = np.clip(ts - t0, 0, None)
    np.testing.assert_allclose(got, a * (1 - (1 + w * dt) * np.exp(-w * dt)), atol=1e-6)


def _spring_ode(targets, t_end, omega, max_omega, span, h=1e-5):
    """x'' = -2 w x' - w^2 (x - target), integrated with RK4 in steps of h; targets [(t, value)] change w as the
    smoother documents (chosen from the distance to go when each target arrives). Returns a sampler of x(t)."""
    x, v, t = float(targets[0][1]), 0.0, targets[0][0]
    times, xs = [t], [x]
    for k, (tk, target) in enumerate(targets):
        w = omega if k == 0 else min(max_omega, omega * (1 + abs(target - x) / span))
        until = targets[k + 1][0] if k + 1 < len(targets) else t_end
        f = lambda x_, v_: (v_, -2 * w * v_ - w * w * (x_ - target))  # noqa: E731
        while t < until - 1e-12:
            step = min(h, until - t)
            k1 = f(x, v)
            k2 = f(x + step / 2 * k1[0], v + step / 2 * k1[1])
            k3 = f(x + step / 2 * k2[0], v + step / 2 * k2[1])
            k4 = f(x + step * k3[0], v + step * k3[1])
            x += step / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            v += step / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            t += step
            times.append(t), xs.append(x)
    return lambda ts: np.interp(ts, times, xs)


def test_ramp_and_steps_match_the_spring_equation():
    """A 100 Hz ramp up, a hold, a step down: the sampled spring is the integrated equation to float32 precision."""
    targets = [(i / 100, min(i / 10, 1.0)) for i in range(15)] + [(0.15, 0.0), (0.16, 0.3), (0.17, 0.3)]
    s = ParamSmoother(omega=SMOOTHING_OMEGA, max_omega=SMOOTHING_MAX_OMEGA, adapt_span=0.1)
    for t, value in targets:
        s.push(t, row(jaw_open=value))
    ts = np.arange(0.0, 0.25, 1 / 240)
    got = np.array([s.sample(t)[JAW] for t in ts], np.float64)
    want = _spring_ode(targets, 0.25, SMOOTHING_OMEGA, SMOOTHING_MAX_OMEGA, 0.1)(ts)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert got.max() > 0.9 and abs(got[-1] - 0.3) < 1e-3  # the ramp is followed, the last target reached


def test_sampler_gives_one_float32_array_in_param_order():
    track = ParamTrack()
    rows = np.zeros((30, N_PARAMS), np.float32)
    rows[:, JAW], rows[:, ROUND] = 0.7, 0.2
    track.append(rows, first_index=0)
    for smooth in (False, True):
        sampler = ParamSampler(track, smooth=smooth)
        out = sampler.at(track.latest_time - SPRING_LEAD)
        assert out.dtype == np.float32 and out.shape == (N_PARAMS,)
        assert out[JAW] == pytest.approx(0.7, abs=1e-4) and out[ROUND] == pytest.approx(0.2, abs=1e-4)
        assert out[PARAM_NAMES.index("lip_press")] == 0.0


def test_the_live_stage_loads_no_opencv_torch_or_qt():
    """The live stage (sources, track, threads, recording, offline) runs without the renderer's or the trainer's
    libraries: they come in with the renderer (avatar.face), the engine or the window, not with the pipeline."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, avatar.live.offline; from avatar.live.pipeline import LipSync, ParamSampler; "
            "ParamSampler(LipSync(None).track, smooth=True).at(0.0); "  # the smoother came from avatar.face (cv2)
            "print(sorted(m for m in ('cv2', 'torch', 'mediapipe', 'PySide6') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.strip() == "[]"


def test_each_parameter_can_have_its_own_rate_and_the_sampler_draws_the_width_slower():
    """Per-parameter rates give each parameter the spring it would get alone; the sampler's width parameters
    (lip_spread, lip_round) follow a jump more slowly than the jaw, which keeps the app's quick spring."""
    from avatar.live.track import WIDTH_MAX_OMEGA, WIDTH_OMEGA, smoothing_rates

    rng = np.random.default_rng(0)
    targets = [(i / 100, rng.uniform(0, 1, N_PARAMS).astype(np.float32)) for i in range(60)]
    rates = np.array([150.0, 75.0, 40.0, 300.0])[:N_PARAMS]
    mixed = ParamSmoother(omega=rates, max_omega=rates * 2, adapt_span=0.1)
    alone = [ParamSmoother(omega=w, max_omega=2 * w, adapt_span=0.1) for w in rates]
    for t, target in targets:
        for s in (mixed, *alone):
            s.push(t, target)
    for t in np.arange(0, 0.6, 1 / 60):
        got = mixed.sample(t)
        np.testing.assert_allclose(got, [s.sample(t)[k] for k, s in enumerate(alone)], atol=1e-7)
    with pytest.raises(ValueError):
        ParamSmoother(omega=rates, max_omega=rates / 2)

    omega, max_omega = smoothing_rates()
    spread = PARAM_NAMES.index("lip_spread")
    assert omega[JAW] == SMOOTHING_OMEGA and max_omega[JAW] == SMOOTHING_MAX_OMEGA
    assert omega[spread] == omega[ROUND] == WIDTH_OMEGA < SMOOTHING_OMEGA
    assert max_omega[spread] == max_omega[ROUND] == WIDTH_MAX_OMEGA
    track = ParamTrack()  # a mouth at rest, then opening, spreading and rounding at once
    track.append(np.r_[np.zeros((5, N_PARAMS), np.float32),
                       np.repeat(row(jaw_open=0.8, lip_spread=0.8, lip_round=0.8)[None], 25, 0)], 0)
    sampler = ParamSampler(track)
    halfway = {}
    for t in np.arange(0, 0.3, 1 / 240):
        value = sampler.at(t)
        for k in (JAW, spread, ROUND):
            if k not in halfway and value[k] >= 0.4:
                halfway[k] = t
    assert halfway[spread] > halfway[JAW] + 0.01 and halfway[ROUND] > halfway[JAW] + 0.01
