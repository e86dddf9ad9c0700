"""Manual placement (template fit), the preview command."""
import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar.face import (HANDLE_NAMES, LivelinessConfig, NoFaceError, build_rig, create_renderer,
                         default_handles, fit_template)
from avatar.bench import render as bench
from avatar.face import landmarks as lm
from avatar.face.landmarks import HANDLES, detect_faces, load_template
from avatar.face.preview import add_cli
from avatar.face.render_base import mouth_params

OFF = LivelinessConfig(enabled=False)  # frames that move only as commanded
ROOT = Path(__file__).resolve().parent.parent
CAT = Path(__file__).parent / "data" / "face" / "cat.jpg"


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
