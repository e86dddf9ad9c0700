"""`avatar eval video`: the real-video ruler. Pure pieces on made-up signals; the whole ruler on one real clip."""
from __future__ import annotations

import json
from dataclasses import replace
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.eval import video as ev

ROOT = Path(__file__).resolve().parent.parent
REAL_VIDEO = Path(os.environ.get("AVATAR_REAL_VIDEO", ROOT.parent / "shared" / "data" / "video"))
GRID_CLIP = REAL_VIDEO / "bbaf2n.mpg"  # "bin blue at f two now", 3 s, 25 fps
needs_clips = pytest.mark.skipif(not GRID_CLIP.is_file(),
                                 reason=f"the real talking clips are not here ({REAL_VIDEO}: shared/data/video)")


def test_lag_search_finds_a_known_offset():
    rng = np.random.default_rng(0)
    track = np.convolve(rng.random(400), np.ones(7) / 7, mode="same")  # 4 s of smooth 100 Hz motion
    frame_times = np.arange(0, 3.5, 1 / 25)
    # the picture shows at t what the track says at t + 60 ms: the sound trails the picture by 60 ms
    real = np.interp(frame_times + 0.060, ev.track_times(len(track)), track)
    r = ev.lagged_r(track, real, frame_times)
    assert r["best_lag_ms"] == 60
    assert r["best_r"] > 0.999 > r["r0"]


def test_loudness_envelope_is_floored_and_smoothed():
    sr = 16000
    audio = np.zeros(sr, np.float32)
    audio[4000:8000] = 0.5 * np.sin(2 * np.pi * 220 * np.arange(4000) / sr)
    env = ev.loudness_envelope(audio)
    assert len(env) == sr // 160
    assert env.min() == pytest.approx(env.max() - ev.ENVELOPE_FLOOR_DB, abs=0.5)  # silence sits on the floor
    # the 50 ms mean spreads the 25 ms window's step over about 5 more frames
    rising = np.flatnonzero((env > env.min() + 1) & (env < env.max() - 1))
    assert 3 <= len(rising) <= 16


def test_eye_similarity_puts_the_eye_corners_at_unit_distance():
    pts = np.zeros((478, 3))
    pts[33, :2], pts[263, :2] = (100.0, 200.0), (180.0, 260.0)  # tilted and scaled
    pts[13, :2], pts[14, :2] = (150.0, 300.0), (150.0, 320.0)
    a = ev.align(pts)
    np.testing.assert_allclose(a[33], (-0.5, 0), atol=1e-9)
    np.testing.assert_allclose(a[263], (0.5, 0), atol=1e-9)
    assert np.linalg.norm(a[13] - a[14]) == pytest.approx(20 / 100)  # distances in inter-ocular units


def test_offsets_parse_and_refuse_nonsense():
    assert ev.parse_offsets(["kim_7s_raw.mp4=120", "a=b.mp4=-40"]) == {"kim_7s_raw.mp4": 120.0, "a=b.mp4": -40.0}
    for bad in ("kim.mp4", "=120", "kim.mp4=fast", "kim.mp4=nan"):
        with pytest.raises(ValueError, match="CLIP=MS"):
            ev.parse_offsets([bad])


def test_lateral_profile_bins_pixels_by_their_place_between_the_corners():
    # a slit tilted 30 degrees, corners 40 px apart: lightness = 100 |u| along it, and 0 across it does not count
    a, b = np.array([50.0, 50.0]), np.array([50 + 40 * np.cos(np.pi / 6), 50 + 40 * np.sin(np.pi / 6)])
    along, across = (b - a) / 40, np.array([-np.sin(np.pi / 6), np.cos(np.pi / 6)])
    u = np.linspace(-0.99, 0.99, 199)
    pixels = np.concatenate([(a + b) / 2 + 20 * u[:, None] * along + d * across for d in (-3.0, 0.0, 3.0)])
    profile = ev.lateral_profile(pixels, np.tile(100 * np.abs(u), 3), a, b)
    assert profile.shape == (ev.PROFILE_BINS,)
    centres = 100 * (np.arange(ev.PROFILE_BINS) + 0.5) / ev.PROFILE_BINS
    np.testing.assert_allclose(profile, centres, atol=1.0)
    # a bin with no pixels is NaN, not 0; the per-bin mean over frames skips it, and a bin never seen is no profile
    middle = np.abs(np.tile(u, 3)) < 0.39
    half = ev.lateral_profile(pixels[middle], np.tile(100 * np.abs(u), 3)[middle], a, b)
    assert np.isfinite(half[:2]).all() and np.isnan(half[2:]).all()
    assert ev._mean_profile(np.vstack([profile, half])) == pytest.approx(np.round(profile, 2).tolist(), abs=1.0)
    assert ev._mean_profile(half[None]) is None
    assert ev.profile_error([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.5)
    assert np.isnan(ev.profile_error(None, [1.0]))


def test_offset_hint_finds_a_lag_beyond_the_window_and_only_there():
    rng = np.random.default_rng(3)
    track = np.convolve(rng.normal(size=1000), np.ones(15) / 15, mode="same")  # 10 s of rows at 100 per second
    frame_times, rows = np.arange(0, 9, 0.04), ev.track_times(1000)
    real = np.interp(frame_times + 0.4, rows, track)  # the picture shows what the sound says 400 ms later
    hint = ev.offset_hint(track, real, frame_times)
    assert hint["lag_ms"] == 400 and hint["r"] > 0.99 and hint["window_r"] < hint["r"] - ev.OFFSET_HINT_GAIN
    assert ev.offset_hint(track, np.interp(frame_times + 0.05, rows, track), frame_times) is None  # in the window
    assert ev.offset_hint(track, np.full(len(frame_times), 0.1), frame_times) is None  # nothing to follow


@needs_clips
def test_a_clip_whose_sound_trails_its_picture_gets_an_offset_hint():
    """Beyond the ruler's +-120 ms every audio-driven figure reads as a miss (d20's sound trails its picture by
    300 ms): the report says where the mouth follows the sound best, and nothing for an aligned clip."""
    from avatar.engine import create_engine

    engine = create_engine("onnxruntime", ev.model_path("default"))
    aligned = ev.evaluate_clip(GRID_CLIP, engine, render=False)
    assert aligned.offset_hint is None
    trailing = ev.evaluate_clip(GRID_CLIP, engine, render=False, av_offset_ms=-300)  # its sound 300 ms later
    hint = trailing.offset_hint
    assert hint is not None and 260 <= hint["lag_ms"] <= 340, hint
    assert trailing.jaw_open["best_r"] < aligned.jaw_open["best_r"] - 0.3  # what the exact ruler then reads
    assert abs(hint["r"] - aligned.jaw_open["best_r"]) < 0.1


@needs_clips
def test_offset_moves_the_sound_earlier():
    plain, moved = ev.read_clip(GRID_CLIP), ev.read_clip(GRID_CLIP, av_offset_ms=100)
    np.testing.assert_array_equal(moved.audio, plain.audio[1600:])
    assert plain.fps == 25 and len(plain.frame_times) == 75


@needs_clips
def test_ruler_on_a_real_grid_clip(tmp_path):
    from avatar.engine import create_engine

    report = ev.evaluate_clip(GRID_CLIP, create_engine("onnxruntime"), out_dir=tmp_path)
    assert report.faces_found == 1.0 and report.frames == 75
    # the network follows the real mouth, and better than loudness alone (the per-clip margin, 0.10)
    assert report.jaw_open["r0"] > 0.5
    assert report.jaw_open["r0"] > report.loudness["r0"] + 0.10
    chain = report.chain
    assert chain["rendered_faces_found"] == 1.0
    assert chain["opening_r"] > 0.5  # the rendered mouth, re-detected, opens when the real one does
    assert 0.3 < chain["opening_amplitude_ratio"] < 3
    assert chain["frozen_inner_lip_distance"] > 5  # the real mouth moves: a frozen one is measurably off
    assert 0 < chain["inner_mouth_delta_e"] < 100 and chain["delta_e_frames"] >= 5
    # what the ΔE compares, per channel: a real open mouth's interior is darker than white and warm (a, b > 0)
    for lab in (chain["inner_mouth_lab_real"], chain["inner_mouth_lab_rendered"]):
        assert len(lab) == 3 and 5 < lab[0] < 90 and lab[1] > 0 and lab[2] > 0, lab
    # where the light is: a real opening is lit in the middle and darker toward the corners
    real, rendered = chain["inner_mouth_profile_real"], chain["inner_mouth_profile_rendered"]
    assert len(real) == len(rendered) == ev.PROFILE_BINS and real[0] > real[-1] + 1, real
    assert chain["inner_mouth_profile_error"] == pytest.approx(np.mean(np.abs(np.subtract(real, rendered))), abs=0.01)
    # the colour difference of the means is at most the mean of the per-frame differences (triangle inequality)
    assert np.linalg.norm(np.subtract(chain["inner_mouth_lab_real"], chain["inner_mouth_lab_rendered"])) <= (
        chain["inner_mouth_delta_e"] + 0.05)
    montage = tmp_path / "bbaf2n_montage.png"
    import cv2
    sheet = cv2.imread(str(montage))
    assert sheet is not None and sheet.shape[1] > 2 * sheet.shape[0] / ev.MONTAGE_ROWS  # real | rendered per row


@needs_clips
def test_cli_writes_the_report(tmp_path):
    out = tmp_path / "ev"
    run = subprocess.run([sys.executable, "-m", "avatar", "eval", "video", str(GRID_CLIP), "--no-render",
                          "--model", "live", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "| bbaf2n.mpg | 0 |" in run.stdout and "lipsync_gru_live" in run.stdout
    data = json.loads((out / "report.json").read_text())
    assert data["clips"][0]["chain"] is None and data["clips"][0]["jaw_open"]["r0"] > 0.4
    assert data["shapes_table"] == "fitted_shapes_live.json" and "mouth table: fitted_shapes_live.json" in run.stdout


def test_cli_refuses_a_missing_clip_and_a_bad_offset(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "avatar", "eval", "video", str(tmp_path / "none.mp4")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 3 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    bad = subprocess.run([sys.executable, "-m", "avatar", "eval", "video", "x.mp4", "--av-offset", "x.mp4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "CLIP=MS" in bad.stderr


# ---------------------------------------------------------------- avatar eval fit-shapes

def _samples(name, width, params, spread_px=0.08, round_px=-0.14):
    from avatar.eval.fit_shapes import ClipSamples

    response = {"lip_spread": (0.0, spread_px), "lip_round": (0.05, round_px)}
    return ClipSamples(name, np.full(len(width), 0.1), width, params, response)


def test_width_direction_finds_what_the_width_follows_and_splits_it_by_sign():
    from avatar.eval import fit_shapes as fs

    rng = np.random.default_rng(3)
    clips = []
    for k in range(3):  # each clip has its own rest width: only the motion about each clip's mean counts
        p = rng.uniform(0, 1, (200, 4))
        width = 0.5 + 0.1 * k + 0.04 * p[:, 0] - 0.12 * p[:, 2] + rng.normal(0, 0.002, 200)
        clips.append(_samples(f"c{k}", width, p))
    coef, r = fs.width_direction(clips)
    assert fs.WIDTH_FEATURES[:4] == fs.PARAM_NAMES  # then the squares
    assert coef == pytest.approx([0.04, 0.0, -0.12, 0.0, 0.0, 0.0], abs=0.003) and r > 0.99
    fields = fs.split_width(coef, clips)
    # widening goes to the spread motion (0.08 IOD per unit weight), narrowing to the rounding one (0.14)
    assert fields["spread_per_jaw_open"] == pytest.approx(0.5, abs=0.05) and fields["round_per_jaw_open"] == 0
    assert fields["round_per_lip_round"] == pytest.approx(0.12 / 0.14, abs=0.03) and fields["spread_per_lip_round"] == 0
    with pytest.raises(fs.FitError):  # a rig whose spread does not widen cannot be fitted
        fs.split_width(coef, [_samples("bad", clips[0].width, clips[0].params, spread_px=-0.01)])


def test_a_width_that_is_not_linear_in_a_parameter_keeps_its_square_on_one_motion():
    """A mouth that narrows as the jaw half-opens and comes back on a wide "aa" (GRID's), and widens only on a
    clear spread: the squares are found, and each parameter's two shares go to the motion its net pull goes to."""
    from avatar.eval import fit_shapes as fs

    rng = np.random.default_rng(4)
    clips = []
    for k in range(3):
        p = rng.uniform(0, 1, (300, 4))
        jaw, spread = p[:, 0], p[:, 1]
        width = 0.5 + 0.1 * k - 0.06 * jaw + 0.05 * jaw ** 2 - 0.02 * spread + 0.09 * spread ** 2
        clips.append(_samples(f"c{k}", width + rng.normal(0, 0.001, 300), p))
    coef, r = fs.width_direction(clips)
    drive = dict(zip(fs.WIDTH_FEATURES, coef))
    assert r > 0.99
    assert (drive["jaw_open"], drive["jaw_open_sq"]) == (pytest.approx(-0.06, abs=0.005), pytest.approx(0.05, abs=0.005))
    assert (drive["lip_spread"], drive["lip_spread_sq"]) == (pytest.approx(-0.02, abs=0.005),
                                                           pytest.approx(0.09, abs=0.005))
    fields = fs.split_width(coef, clips)
    # the jaw narrows over 0..1 (-0.03 + 0.017): both its shares on the rounding motion, the square's negative
    assert fields["round_per_jaw_open"] == pytest.approx(0.06 / 0.14, abs=0.04)
    assert fields["round_per_jaw_open_sq"] == pytest.approx(-0.05 / 0.14, abs=0.04)
    assert fields["spread_per_jaw_open"] == fields["spread_per_jaw_open_sq"] == 0
    # the spread widens (-0.01 + 0.03): both on the spread motion
    assert fields["spread_per_lip_spread"] == pytest.approx(-0.02 / 0.08, abs=0.07)
    assert fields["spread_per_lip_spread_sq"] == pytest.approx(0.09 / 0.08, abs=0.07)
    assert fields["round_per_lip_spread"] == fields["round_per_lip_spread_sq"] == 0


def test_the_networks_quiet_rounding_floor_draws_no_rounding():
    """The network's lip_round is never 0 on a quiet, shut mouth (GRID: 0.07-0.14); drawn, that floor pursed every
    silent mouth. fit-shapes measures it (a percentile of lip_round on the network's quiet frames) and the width
    motions read lip_round from it up: the floor draws nothing, a clear rounding still rounds."""
    from avatar.eval import fit_shapes as fs
    from avatar.face import shapes

    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, (1000, 4))
    quiet = p[:, 0] < fs.QUIET_JAW  # 5 % of frames; their lip_round: the floor, 0.05..0.15
    p[quiet, 2] = rng.uniform(0.05, 0.15, quiet.sum())
    p[quiet, 3] = 0.1  # not pressed
    pressed = np.flatnonzero(quiet)[:5]
    p[pressed, 2:] = (0.9, 0.9)  # p/b/m frames are not the floor, however rounded
    clip = _samples("c", np.full(1000, 0.5), p)
    floor = fs.quiet_round([clip], shapes.HAND_SHAPES.press_closes_from)
    keep = quiet.copy()
    keep[pressed] = False
    assert floor == pytest.approx(np.percentile(p[keep, 2], fs.QUIET_ROUND_PCT))
    assert 0.13 < floor < 0.15
    x = fs.width_features(np.array([[0.3, 0.2, 0.1, 0.0], [0.3, 0.2, 0.6, 0.0]]), floor)
    assert x[0, 2] == 0 and x[1, 2] == pytest.approx(0.6 - floor)
    assert x[:, 0].tolist() == [0.3, 0.3] and x[0, 4] == pytest.approx(0.09)  # the others, and the squares, as given
    table = replace(shapes.HAND_SHAPES, round_from=floor)
    assert shapes.rig_weights(0.0, 0.0, floor, 0.0, shapes=table)["lip_round"] == 0
    assert shapes.rig_weights(0.0, 0.0, floor, 0.0, shapes=shapes.HAND_SHAPES)["lip_round"] > 0.1
    assert shapes.rig_weights(0.0, 0.0, 0.8, 0.0, shapes=table)["lip_round"] == pytest.approx(0.8 - floor, abs=1e-6)
    # the shipped table has a floor, and the shipped network's quiet output draws no rounding under it
    assert shapes.DEFAULT_SHAPES.round_from > 0.05
    assert shapes.rig_weights(0.03, 0.04, 0.1, 0.1)["lip_round"] == 0


def test_the_fitted_table_is_what_the_renderer_draws_with(tmp_path):
    from avatar.face import shapes

    table = json.loads(shapes.FITTED_FILE.read_text())
    assert table["fields"] and "GRID" in table["about"]
    for name, value in table["fields"].items():
        assert getattr(shapes.DEFAULT_SHAPES, name) == pytest.approx(value), name
    assert shapes.DEFAULT_SHAPES != shapes.HAND_SHAPES
    # one table per shipped network, each fitted to that network (its name in the table), and drawn for it
    from avatar.engine import DEFAULT_MODEL, LIVE_MODEL

    assert set(shapes.FITTED_FILES) == {Path(DEFAULT_MODEL).stem, Path(LIVE_MODEL).stem}
    for network, path in shapes.FITTED_FILES.items():
        table = json.loads(path.read_text())
        assert table["network"] == network
        for name, value in table["fields"].items():
            assert getattr(shapes.shapes_for(network), name) == pytest.approx(value), (network, name)
    assert shapes.shapes_for(Path(DEFAULT_MODEL).stem) is shapes.DEFAULT_SHAPES
    assert shapes.shapes_for("a_network_of_my_own") is shapes.DEFAULT_SHAPES  # no table of its own: the files one
    assert shapes.table_path("a_network_of_my_own") == shapes.FITTED_FILE
    live = shapes.shapes_for(Path(LIVE_MODEL).stem)
    assert live != shapes.DEFAULT_SHAPES and live.round_from < shapes.DEFAULT_SHAPES.round_from  # its own floor
    assert shapes.load_shapes(tmp_path / "absent.json") == shapes.HAND_SHAPES
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fields": {"jaw_gain": 1.0, "grin": 2.0}}))
    with pytest.raises(ValueError, match="grin"):
        shapes.load_shapes(bad)


GRID_CLIPS = sorted(REAL_VIDEO.glob("*.mpg"))


@needs_clips
@pytest.mark.parametrize("model, network", [("default", "lipsync_gru"), ("live", "lipsync_gru_live")])
def test_fit_shapes_reproduces_the_shipped_table_from_the_grid_clips(tmp_path, model, network):
    """Each shipped table is `avatar eval fit-shapes ../shared/data/video/*.mpg [--model live]` (GRID only: their
    licence)."""
    from avatar.face import shapes

    out = tmp_path / "fitted.json"
    run = subprocess.run([sys.executable, "-m", "avatar", "eval", "fit-shapes", *map(str, GRID_CLIPS),
                          "--model", model, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(out.read_text())["network"] == network
    fitted = json.loads(out.read_text())["fields"]
    shipped = json.loads(shapes.FITTED_FILES[network].read_text())["fields"]
    assert fitted.keys() == shipped.keys()
    for name in shipped:
        assert fitted[name] == pytest.approx(shipped[name], abs=0.01), name
