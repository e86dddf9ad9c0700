"""The person's own mouth width (avatar.face.video_avatar.calibrate): fitted on the video's speech, kept only where
it draws the person closer, absent without speech; the rows it pairs with real frames are the rows `avatar render`
draws. Synthetic people on the generic face template; real clips from ../shared/data/video (skipped when absent)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from avatar.face import shapes as shape_map
from avatar.face.landmarks import LIP_INNER, LIP_OUTER
from avatar.face.video_avatar import fileformat, source
from avatar.face.video_avatar.calibrate import (MIN_FRAMES, WIDTH_FIELDS, WidthModel, calibrated, drawn_widths,
                                                 fit_width, motion_width)
from avatar.face.video_avatar.contour import lip_basis

ROOT = Path(__file__).resolve().parent.parent
REAL_VIDEO = Path(os.environ.get("AVATAR_REAL_VIDEO", ROOT.parent / "shared" / "data" / "video"))
GRID_CLIP = REAL_VIDEO / "bbaf2n.mpg"
KIM_CLIP = REAL_VIDEO / "kim_7s_raw.mp4"
needs_clips = pytest.mark.skipif(not GRID_CLIP.is_file(),
                                 reason=f"the real talking clips are not here ({REAL_VIDEO}: shared/data/video)")
REST = np.load(ROOT / "assets" / "face_template.npy")[:, :2].astype(np.float64)  # eyes at (-0.5, 0), (0.5, 0)
SHARED = shape_map.shapes_for("lipsync_gru")


def speech_params(n: int, seed: int) -> np.ndarray:
    """(n, 4) parameter rows that move as speech does: syllables of jaw, some spread, some rounding, closures."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 25.0
    jaw = np.clip(0.35 + 0.35 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)) + 0.1 * rng.standard_normal(n), 0, 1)
    spread = np.clip(0.3 + 0.3 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(n), 0, 1)
    rnd = np.clip(0.2 + 0.25 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 6)), 0, 1)
    press = np.clip(rng.uniform(-1, 1, n) ** 9, 0, 1)
    return np.stack([jaw, spread, rnd, press], 1).astype(np.float32)


def person_width(params: np.ndarray, per_jaw: float, seed: int) -> np.ndarray:
    """A person whose width follows the jaw alone (per_jaw eye distances per unit jaw_open), with tracking noise."""
    rng = np.random.default_rng(seed)
    return 0.55 + per_jaw * params[:, 0] + 0.003 * rng.standard_normal(len(params))


def r(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("per_jaw", [-0.06, 0.06])
def test_a_person_who_narrows_or_widens_as_they_open_is_learnt_and_holds_on_new_speech(per_jaw):
    fit_on = speech_params(750, seed=1)  # 30 s of the person's video
    fields, evidence = fit_width(person_width(fit_on, per_jaw, 2), fit_on, SHARED, REST)
    assert fields is not None and evidence["kept"], evidence
    assert evidence["width_r_person"] > evidence["width_r_shared"] + 0.1
    # new speech of the same person: the calibrated mapping draws their width, the shared one does not
    heard = speech_params(200, seed=3)
    real = person_width(heard, per_jaw, 4)
    lips, basis = REST[list(LIP_INNER + LIP_OUTER)], lip_basis(REST)
    shared = r(drawn_widths(heard, SHARED, lips, basis), real)
    person = r(drawn_widths(heard, calibrated(SHARED, fields), lips, basis), real)
    assert person > 0.6 and person > shared + 0.3, (shared, person)
    drawn = drawn_widths(heard, calibrated(SHARED, fields), lips, basis)
    assert np.sign(np.polyfit(heard[:, 0], drawn, 1)[0]) == np.sign(per_jaw)  # it widens / narrows with the jaw


def test_a_short_video_moves_the_mapping_less_than_a_long_one():
    def moved(n):
        params = speech_params(n, seed=5)
        fields, _ = fit_width(person_width(params, -0.06, 6), params, SHARED, REST)
        return sum(abs(v - getattr(SHARED, k)) for k, v in fields.items())

    assert moved(MIN_FRAMES + 5) < moved(600)


def test_no_calibration_without_speech_or_enough_frames():
    params = speech_params(100, seed=7)
    width = person_width(params, -0.06, 8)
    quiet = params.copy()
    quiet[:, 0] = 0.02  # the network heard no speech: the jaw never opens
    fields, evidence = fit_width(width, quiet, SHARED, REST)
    assert fields is None and not evidence["kept"] and "speech" in evidence["why"]
    fields, evidence = fit_width(width[:MIN_FRAMES - 1], params[:MIN_FRAMES - 1], SHARED, REST)
    assert fields is None and "frames" in evidence["why"]
    lost = width.copy()
    lost[MIN_FRAMES // 2:] = np.nan  # the face was lost for most of the video
    fields, evidence = fit_width(lost, params, SHARED, REST)
    assert fields is None and evidence["frames"] == MIN_FRAMES // 2


def test_the_width_model_is_the_drawn_width_for_any_spread_and_rounding_fields():
    params = speech_params(80, seed=9)
    model = WidthModel(params, SHARED, REST)
    lips, basis = REST[list(LIP_INNER + LIP_OUTER)], lip_basis(REST)
    rng = np.random.default_rng(10)
    for _ in range(3):
        theta = rng.uniform(-1, 2, len(WIDTH_FIELDS))
        shapes = shape_map.ShapeMap(**{**SHARED.__dict__, **dict(zip(WIDTH_FIELDS, theta.tolist()))})
        np.testing.assert_allclose(model.widths(theta), drawn_widths(params, shapes, lips, basis), atol=2e-5)


def test_the_width_models_slopes_are_its_derivatives():
    params = speech_params(80, seed=11)
    model = WidthModel(params, SHARED, REST)
    theta = np.array([getattr(SHARED, f) for f in WIDTH_FIELDS]) + 0.05
    _, slopes = model.widths_and_slopes(theta)
    h = 1e-6
    numeric = np.stack([(model.widths(theta + h * e) - model.widths(theta - h * e)) / (2 * h)
                        for e in np.eye(len(theta))], axis=1)
    np.testing.assert_allclose(slopes, numeric, atol=1e-4)  # (no frame sits on a clipping edge at this theta)
    assert np.abs(slopes).max() > 0.01


def test_the_spread_and_rounding_motions_widen_and_narrow_the_target_contour():
    basis = lip_basis(REST)
    assert motion_width(basis, "lip_spread") > 0.02 and motion_width(basis, "lip_round") < -0.02


def test_a_damaged_calibration_record_is_ignored_field_by_field():
    fields = {"spread_per_jaw_open": 0.5, "round_per_lip_round": math.nan, "jaw_gain": True, "bogus_field": 1.0,
              "round_per_jaw_open": "wide"}
    out = calibrated(SHARED, fields)
    assert out.spread_per_jaw_open == 0.5
    assert (out.round_per_lip_round, out.jaw_gain, out.round_per_jaw_open) == (
        SHARED.round_per_lip_round, SHARED.jaw_gain, SHARED.round_per_jaw_open)
    assert calibrated(SHARED, None) is SHARED and calibrated(SHARED, "junk") is SHARED


@needs_clips
def test_frame_params_are_the_rows_render_offline_draws(tmp_path):
    from avatar.engine import create_engine
    from avatar.eval.video import read_clip
    from avatar.live.offline import frame_params, render_offline

    class Recorder:
        def __init__(self):
            self.rows = []

        def render(self, params, t=0.0):
            self.rows.append(np.array(params, np.float32))
            return np.zeros((16, 16, 3), np.uint8)

    audio = read_clip(GRID_CLIP).audio  # a GRID sentence
    engine = create_engine("onnxruntime")
    recorder = Recorder()
    render_offline(audio, engine, recorder, tmp_path / "rows.mp4", fps=25)
    rows = frame_params(audio, engine, len(recorder.rows), 25)
    assert len(rows) == len(recorder.rows) == 75
    np.testing.assert_array_equal(rows, np.array(recorder.rows))
    assert np.ptp(rows[:, 0]) > 0.3  # the sentence opens the jaw: the rows are not a resting mouth


@needs_clips
@pytest.mark.parametrize("clip", [GRID_CLIP, KIM_CLIP], ids=["grid_mpg", "kim_mp4"])
def test_the_videos_sound_is_on_its_frames_clock_as_the_ruler_reads_it(clip):
    from avatar.eval.video import read_clip

    for offset in (0.0, 120.0):
        ours = source.sound(source.probe(clip), offset)
        ruler = read_clip(clip, offset).audio
        n = min(len(ours), len(ruler))
        assert n > 16000 * 2.5 and abs(len(ours) - len(ruler)) <= 1
        np.testing.assert_array_equal(ours[:n], ruler[:n])


@needs_clips
def test_a_video_without_sound_keeps_the_shared_mapping(tmp_path):
    import av

    from avatar.face.video_avatar.build import build

    silent = tmp_path / "silent.mp4"
    with av.open(str(GRID_CLIP)) as c, av.open(str(silent), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 360, 288, "yuv420p"
        for frame in c.decode(video=0):
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in stream.encode(image):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert source.sound(source.probe(silent)) is None
    build(silent, tmp_path / "silent.avatar")
    assert fileformat.read_meta(tmp_path / "silent.avatar")["mouth_calibration"] == {}
