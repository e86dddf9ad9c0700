"""Smoothing by time, manual placement (template fit), the preview command."""
import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar.face import (HANDLE_NAMES, LivelinessConfig, NoFaceError, ParamSmoother, build_rig, create_renderer,
                         default_handles, fit_template)
from avatar.face import bench
from avatar.face import landmarks as lm
from avatar.face.landmarks import HANDLES, detect_faces, load_template
from avatar.face.preview import add_cli
from avatar.face.render_base import mouth_params

OFF = LivelinessConfig(enabled=False)  # frames that move only as commanded
ROOT = Path(__file__).resolve().parent.parent
CAT = Path(__file__).parent / "data" / "face" / "cat.jpg"


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


def test_fit_template_places_handles_exactly():
    t = load_template()
    assert t.shape == (478, 3)
    handles = default_handles((400, 300))
    assert set(handles) == set(HANDLE_NAMES)
    rng = np.random.default_rng(1)
    moved = {k: (x + rng.uniform(-6, 6), y + rng.uniform(-6, 6)) for k, (x, y) in handles.items()}
    pts = fit_template(moved)
    for name, (x, y) in moved.items():
        got = pts[list(HANDLES[name]), :2].mean(0)
        assert np.hypot(got[0] - x, got[1] - y) < 0.5
    with pytest.raises(ValueError):
        fit_template({"chin": (1, 2), "mouth_left": (3, 4)})
    with pytest.raises(ValueError):
        fit_template({"chin": (1, 1), "mouth_left": (2, 2), "mouth_right": (3, 3)})


def test_manual_placement_animates_a_photo_without_face():
    with pytest.raises(NoFaceError) as e:
        build_rig(CAT)
    image = e.value.image
    handles = {"right_eye_outer": (150, 115), "right_eye_inner": (185, 118), "left_eye_inner": (245, 118),
               "left_eye_outer": (280, 115), "mouth_right": (195, 215), "mouth_left": (235, 215),
               "chin": (215, 250)}
    rig = build_rig(image, canvas=256, landmarks=fit_template(handles))
    r = create_renderer(rig, "cpu", OFF)
    assert np.array_equal(r.render(mouth_params(), 0), rig.image)
    opened = r.render(mouth_params(jaw_open=1.0), 0)
    x0, y0, x1, y1 = rig.mouth_box
    assert np.abs(opened.astype(int) - rig.image)[y0:y1, x0:x1].mean() > 5


def test_degenerate_landmarks_give_a_clear_error():
    image = np.full((300, 300, 3), 128, np.uint8)
    for points in (np.zeros((478, 2)), np.full((478, 3), 150.0)):
        with pytest.raises(ValueError, match="degenerate"):
            build_rig(image, canvas=256, landmarks=points)
    with pytest.raises(ValueError):
        build_rig(image, canvas=256, landmarks=np.zeros((68, 2)))
    jitter = np.random.default_rng(0).normal(0, 15, (478, 2))  # a wildly distorted face must still not crash
    scattered = fit_template(default_handles(image.shape))[:, :2] + jitter
    rig = build_rig(image, canvas=256, landmarks=scattered)
    frame = create_renderer(rig, "cpu").render(mouth_params(jaw_open=1), 1.0)
    assert frame.shape == (256, 256, 3)


def test_template_fitted_to_a_detection_is_close():
    img = np.asarray(Image.open(ROOT / "assets" / "default_face.jpg").convert("RGB"))
    real = detect_faces(img)[0]
    handles = {k: tuple(real[list(v), :2].mean(0)) for k, v in HANDLES.items()}
    fitted = fit_template(handles)
    iod = np.linalg.norm(real[33, :2] - real[263, :2])
    assert np.median(np.linalg.norm(fitted[:, :2] - real[:, :2], axis=1)) < 0.12 * iod


def test_preview_command_writes_a_sheet(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    out = tmp_path / "sheet.png"
    args = parser.parse_args(["preview", str(ROOT / "assets" / "default_face.jpg"), "-o", str(out), "--canvas", "256"])
    assert args.func(args) == 0
    sheet = Image.open(out)
    assert sheet.size[0] >= 6 * 200
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    args = parser.parse_args(["preview", str(bad), "-o", str(tmp_path / "x.png")])
    assert args.func(args) == 2
    assert "bad.jpg" in capsys.readouterr().out


def test_benchmark_reports_medians_and_p99():
    results = bench.benchmark(canvases=(256,), frames=5, gpu=False)
    assert {"cpu 256", "landmarks + rig build 512"} <= set(results)
    assert all(r["median"] > 0 for r in results.values())
    assert results["cpu 256"]["p99"] >= results["cpu 256"]["median"]
    assert "cpu 256" in bench.format_results(results)


def test_benchmark_takes_stored_landmarks_without_detection(monkeypatch):
    def no_detection(*a, **k):
        raise AssertionError("stored landmarks must not run the detector")

    monkeypatch.setattr(lm, "detect_faces", no_detection)
    points = np.load(Path(__file__).parent / "data" / "face" / "default_face_landmarks.npy")
    results = bench.benchmark(canvases=(256,), frames=3, gpu=False, landmarks=points)
    assert set(results) == {"rig build 512 (stored landmarks)", "cpu 256"}
    assert all(r["median"] > 0 for r in results.values())
