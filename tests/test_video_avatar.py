"""The video avatar (avatar.face.video_avatar): make one from a real clip, reload it, render it; bad videos and
damaged files get a clear message and exit code. Real clips: ../shared/data/video (skipped with the reason when
absent); faceless, short, rotated and variable-rate videos are made here with PyAV."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avatar.face.render_base import FrameRenderer, mouth_params
from avatar.face.video_avatar import AvatarFileError, VideoInputError, VideoNoFaceError, fileformat
from avatar.face.video_avatar import source
from avatar.face.video_avatar.build import build
from avatar.face.video_avatar.renderer import VideoAvatarRenderer, open_video_avatar, pingpong

ROOT = Path(__file__).resolve().parent.parent
REAL_VIDEO = Path(os.environ.get("AVATAR_REAL_VIDEO", ROOT.parent / "shared" / "data" / "video"))
GRID_CLIP = REAL_VIDEO / "bbaf2n.mpg"  # "bin blue at f two now", 3 s, 25 fps, 360x288
OTHER_GRID_CLIP = REAL_VIDEO / "swiz3n.mpg"  # another GRID speaker
MS = Fraction(1, 1000)
needs_clips = pytest.mark.skipif(not GRID_CLIP.is_file(),
                                 reason=f"the real talking clips are not here ({REAL_VIDEO}: shared/data/video)")


def write_video(path: Path, frames, fps: int = 25, rotation: int = 0, times: list[float] | None = None) -> Path:
    """An H.264 MP4 of RGB frames; `rotation`: display-matrix rotation; `times`: each frame's own time (VFR)."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if times is not None:
            stream.codec_context.time_base = MS
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = int(round(times[k] * 1000)), MS
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def clip_frames(path: Path, n: int | None = None) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n or 10 ** 9), c.decode(video=0))]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "avatar", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def grid_avatar(tmp_path_factory) -> Path:
    if not GRID_CLIP.is_file():
        pytest.skip(f"the real talking clips are not here ({REAL_VIDEO}: shared/data/video)")
    out = tmp_path_factory.mktemp("avatar") / "grid.avatar"
    report = build(GRID_CLIP, out)
    assert report.frames == 75 and report.library == 75
    return out


# ---- pure pieces ----

def test_pingpong_plays_forward_then_back_without_a_jump():
    seq = [pingpong(n, 4) for n in range(10)]
    assert seq == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert max(abs(a - b) for a, b in zip(seq, seq[1:])) == 1
    assert pingpong(7, 1) == 0


def test_constant_rate_resamples_only_a_variable_rate():
    steady = np.arange(50) / 25.0
    fps, picks, variable = source.constant_rate(steady, 25.0)
    assert (fps, variable) == (25.0, False) and np.array_equal(picks, np.arange(50))
    jittery = np.cumsum(np.r_[0, np.tile([0.02, 0.06], 25)])  # 20 and 60 ms frames: 25 fps on average
    fps, picks, variable = source.constant_rate(jittery, 25.0)
    assert variable
    out_times = np.arange(len(picks)) / fps
    assert np.abs(jittery[picks] - out_times).max() <= 0.5 / fps + 0.03  # each output frame: the nearest source


# ---- the avatar from a real clip ----

@needs_clips
def test_avatar_reloads_with_its_parts(grid_avatar):
    data = fileformat.load(grid_avatar)
    assert data.meta["format"] == fileformat.FORMAT and data.meta["version"] == fileformat.VERSION
    n = len(data.crops)
    assert data.inner.shape == (n, 20, 2) and data.outer.shape == (n, 20, 2)
    assert len(data.base) == len(data.base_canon) >= 25  # at least a second of base loop
    assert data.base[0].shape == (512, 512, 3)
    # the library holds the clip's own mouth shapes: closed ones and clearly open ones
    assert data.opening.min() < 0.02 < 0.08 < data.opening.max()
    # the base loop is the quiet part: its mouths are less open than the clip's on average
    start, length = data.meta["base_frames"]
    base_open = data.opening[np.isin(data.frames, np.arange(start, start + length))]
    assert base_open.mean() < data.opening.mean()


def _points(frame: np.ndarray) -> np.ndarray:
    """FaceMesh's points on a rendered frame."""
    from avatar.face.landmarks import detect_faces

    faces = detect_faces(frame)
    assert faces, "no face found in the rendered frame"
    return faces[0][:, :2]


def _mouth_opening(frame: np.ndarray) -> float:
    """|13-14| / eye distance, FaceMesh on a rendered frame."""
    p = _points(frame)
    return float(np.linalg.norm(p[13] - p[14]) / np.linalg.norm(p[33] - p[263]))


@needs_clips
def test_rendered_mouth_follows_the_parameters_and_the_head_moves(grid_avatar):
    renderer = open_video_avatar(grid_avatar)
    assert isinstance(renderer, FrameRenderer)
    assert renderer.wait_ready(30)
    closed = [renderer.render(mouth_params(), 0.0) for _ in range(4)][-1]  # the selection eases over frames
    opened = [renderer.render(mouth_params(jaw_open=0.8), 0.0) for _ in range(6)][-1]
    assert closed.shape == (512, 512, 3) and closed.dtype == np.uint8 and closed.flags.c_contiguous
    diff = np.abs(opened.astype(int) - closed.astype(int)).sum(axis=2)
    y0, y1, x0, x1 = renderer.mouth_box(0)
    inside = diff[y0:y1, x0:x1]
    outside = diff.copy()
    outside[y0:y1, x0:x1] = 0
    assert inside.mean() > 3.0 and outside.max() == 0  # only the mouth region changed
    assert _mouth_opening(opened) > _mouth_opening(closed) + 0.05
    # the base loop plays: the frame half a second on differs away from the mouth (real head motion, blinks)
    later = renderer.render(mouth_params(), 0.5)
    away = np.abs(later.astype(int) - closed.astype(int)).sum(axis=2)
    away[y0:y1, x0:x1] = 0
    assert away.mean() > 0.5


@needs_clips
def test_green_screen_keeps_the_person_and_fills_the_rest(grid_avatar):
    from avatar.face.assemble import open_renderer

    green = open_renderer(grid_avatar, background=(0, 255, 0))
    plain = open_renderer(grid_avatar)
    a, b = green.render(mouth_params(jaw_open=0.5), 0.4), plain.render(mouth_params(jaw_open=0.5), 0.4)
    corner = a[:40, :40].reshape(-1, 3)
    assert (corner == (0, 255, 0)).all(axis=1).mean() > 0.95  # the GRID backdrop (blue) became green
    assert not (b[:40, :40].reshape(-1, 3) == (0, 255, 0)).all(axis=1).any()
    y0, y1, x0, x1 = green.mouth_box(green.base_index(0.4))
    dy, dx = (y1 - y0) // 4, (x1 - x0) // 4  # the mouth and the skin around it (the box's corners reach the collar)
    lips_a, lips_b = a[y0 + dy:y1 - dy, x0 + dx:x1 - dx], b[y0 + dy:y1 - dy, x0 + dx:x1 - dx]
    assert np.abs(lips_a.astype(int) - lips_b.astype(int)).mean() < 1.0  # the face is the same


@needs_clips
def test_the_expression_menu_moves_the_mouth_corners(grid_avatar):
    renderer = open_video_avatar(grid_avatar, liveliness={"enabled": False})  # one base frame: only the mouth moves
    neutral = [renderer.render(mouth_params(), 0.0) for _ in range(6)][-1]
    renderer.set_expression("smile", ease=False)
    smile = [renderer.render(mouth_params(), 0.1 * k) for k in range(6)][-1]
    assert renderer.expression == "smile"
    p_neutral, p_smile = _points(neutral), _points(smile)
    width = lambda p: np.linalg.norm(p[61] - p[291]) / np.linalg.norm(p[33] - p[263])  # noqa: E731
    assert width(p_smile) > width(p_neutral) + 0.01  # a smile pulls the corners out


@needs_clips
def test_the_video_avatar_draws_each_network_with_the_table_fitted_to_it(grid_avatar):
    from avatar.face import shapes
    from avatar.face.video_avatar.calibrate import calibrated

    params = mouth_params(jaw_open=0.6, lip_round=0.3)
    person = fileformat.read_meta(grid_avatar)["mouth_calibration"]

    def drawn(network=None):  # a fresh renderer each time: the mouth's choice eases over the frames before
        renderer = open_video_avatar(grid_avatar, liveliness={"enabled": False})
        # until told: the files network's table, with this person's width for it
        assert renderer.shapes == calibrated(shapes.DEFAULT_SHAPES, person["lipsync_gru"]["fields"])
        if network:
            renderer.use_network(network)
            assert renderer.shapes == calibrated(shapes.shapes_for(network), person[network]["fields"])
            assert renderer.shapes != calibrated(shapes.DEFAULT_SHAPES, person["lipsync_gru"]["fields"])
        return [renderer.render(params, 0.0) for _ in range(6)][-1], renderer.mouth_box(0)

    (files, (y0, y1, x0, x1)), (again, _), (live, _) = drawn(), drawn(), drawn("lipsync_gru_live")
    assert np.array_equal(again, files)
    assert np.abs(live[y0:y1, x0:x1].astype(int) - files[y0:y1, x0:x1]).max() > 10  # another target lip contour


@pytest.mark.parametrize("record", [[1, 2], "junk", {"lipsync_gru": "junk"}, {"lipsync_gru": {"fields": [3]}},
                                    {"lipsync_gru": {"fields": {"spread_per_jaw_open": "wide"}}}])
def test_a_damaged_mouth_calibration_record_draws_with_the_shared_mapping(grid_avatar, tmp_path, record):
    from avatar.face import shapes

    with np.load(grid_avatar, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta_json"}
    meta = {k: v for k, v in fileformat.read_meta(grid_avatar).items() if k not in ("format", "version")}
    damaged = tmp_path / "damaged.avatar"
    fileformat.save(damaged, arrays, {**meta, "mouth_calibration": record})
    renderer = open_video_avatar(damaged, liveliness={"enabled": False})
    assert renderer.shapes == shapes.DEFAULT_SHAPES
    renderer.use_network("lipsync_gru_live")
    assert renderer.shapes == shapes.shapes_for("lipsync_gru_live")
    assert renderer.render(mouth_params(jaw_open=0.5), 0.0).shape == (512, 512, 3)


@needs_clips
def test_open_renderer_and_render_cli_take_an_avatar_file(grid_avatar, tmp_path):
    from avatar.face.assemble import open_renderer

    r = open_renderer(grid_avatar, size=(640, 360), liveliness={"enabled": False})
    assert isinstance(r, VideoAvatarRenderer)
    frame = r.render(mouth_params(jaw_open=0.5), 3.0)
    assert frame.shape == (360, 640, 3)
    # liveliness off: the base loop holds its first frame
    y0, y1, x0, x1 = r.mouth_box(0)
    still, later = r.render(mouth_params(), 0.0), r.render(mouth_params(), 1.3)
    still[y0:y1, x0:x1] = later[y0:y1, x0:x1] = 0  # (the mouth's choice eases over frames)
    assert np.array_equal(still, later)
    out = tmp_path / "talk.mp4"
    done = run_cli("render", "--face", str(grid_avatar), "--audio", str(GRID_CLIP), "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    frames = clip_frames(out)
    assert len(frames) >= 85 and frames[0].shape == (512, 512, 3)  # 3 s at 30 fps


# ---- damaged and foreign files ----

@needs_clips
def test_damaged_avatar_file_is_refused_with_the_reason(grid_avatar, tmp_path):
    raw = grid_avatar.read_bytes()
    truncated = tmp_path / "cut.avatar"
    truncated.write_bytes(raw[: len(raw) // 2])
    flipped = tmp_path / "flipped.avatar"
    damaged = bytearray(raw)
    for k in range(len(raw) // 3, len(raw) // 3 + 4000, 7):
        damaged[k] ^= 0xFF
    flipped.write_bytes(bytes(damaged))
    for path in (truncated, flipped):
        with pytest.raises(AvatarFileError, match="avatar file"):
            fileformat.load(path)
    done = run_cli("render", "--face", str(truncated), "--audio", str(GRID_CLIP), "-o", str(tmp_path / "o.mp4"))
    assert done.returncode == 3 and "avatar file" in done.stderr and "Traceback" not in done.stderr


def test_foreign_files_are_not_avatars(tmp_path):
    noise = tmp_path / "noise.avatar"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    other = tmp_path / "other.avatar"
    with open(other, "wb") as f:
        np.savez(f, weights=np.zeros(3))
    for path in (noise, other, tmp_path / "missing.avatar"):
        with pytest.raises(AvatarFileError):
            fileformat.load(path)
    newer = tmp_path / "newer.avatar"
    fileformat.save(newer, {}, {"version": fileformat.VERSION + 1})
    with pytest.raises(AvatarFileError, match="newer"):
        fileformat.load(newer)
    with zipfile.ZipFile(newer) as z:  # arrays only: nothing in the file is a pickle
        assert all(name.endswith(".npy") for name in z.namelist())


# ---- bad videos ----

def _noise_frames(n: int, size=(120, 160)) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_a_faceless_video_is_refused(tmp_path):
    video = write_video(tmp_path / "noise.mp4", _noise_frames(100))  # 4 s of coloured noise
    with pytest.raises(VideoNoFaceError, match="no face"):
        build(video, tmp_path / "x.avatar")
    done = run_cli("make-avatar", str(video), "-o", str(tmp_path / "x.avatar"), "-q")
    assert done.returncode == 4 and "no face" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.avatar").exists()


def test_a_too_short_video_is_refused_before_any_tracking(tmp_path):
    video = write_video(tmp_path / "short.mp4", _noise_frames(40))  # 1.6 s
    with pytest.raises(VideoInputError, match=r"1\.6 s long"):
        build(video, tmp_path / "x.avatar")
    done = run_cli("make-avatar", str(video), "-o", str(tmp_path / "x.avatar"), "-q")
    assert done.returncode == 3 and "at least 3 s" in done.stderr
    not_video = tmp_path / "text.mp4"
    not_video.write_text("hello")
    done = run_cli("make-avatar", str(not_video), "-o", str(tmp_path / "x.avatar"), "-q")
    assert done.returncode == 3 and "not a readable video" in done.stderr
    done = run_cli("make-avatar", str(video), "-o", str(tmp_path / "x.npz"), "-q")
    assert done.returncode == 2 and ".avatar" in done.stderr


def test_a_variable_frame_rate_video_is_resampled(tmp_path):
    times = np.cumsum(np.r_[0, np.tile([0.02, 0.06], 40)])  # 80 frames over 3.2 s
    video = write_video(tmp_path / "vfr.mp4", _noise_frames(len(times)), times=list(times))
    info = source.probe(video)
    assert any("variable frame rate" in note for note in info.notes)
    assert abs(info.seconds - 3.2) < 0.1
    delivered = list(source.iter_frames(info))
    assert [k for k, _ in delivered] == list(range(len(info.picks)))


@needs_clips
def test_a_rotated_phone_video_is_turned_upright(tmp_path):
    upright = clip_frames(GRID_CLIP, 10)
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # filmed sideways...
    video = write_video(tmp_path / "phone.mp4", stored, rotation=90)  # ...with the phone's rotation metadata
    info = source.probe(video)
    assert info.rotation == 90 and info.size == (360, 288)
    k, first = next(source.iter_frames(info))
    assert first.shape == upright[0].shape
    assert np.abs(first.astype(int) - upright[0].astype(int)).mean() < 8  # the same picture (codec loss only)


def test_4k_is_scaled_down(tmp_path):
    video = write_video(tmp_path / "big.mp4", _noise_frames(3, size=(2160, 3840)))
    info = source.probe(video)
    assert info.size == (source.MAX_SIDE, 720) and any("scaled down" in n for n in info.notes)
    assert next(source.iter_frames(info))[1].shape == (720, source.MAX_SIDE, 3)


@needs_clips
def test_a_cut_and_a_second_person_are_refused(tmp_path):
    a, b = clip_frames(GRID_CLIP, 50), clip_frames(OTHER_GRID_CLIP, 50)
    cut = write_video(tmp_path / "cut.mp4", a + b)  # another speaker from 2 s on
    with pytest.raises(VideoInputError, match="cuts"):
        build(cut, tmp_path / "x.avatar")
    pair = write_video(tmp_path / "pair.mp4", [np.hstack([f, g]) for f, g in zip(a + a[::-1], b + b[::-1])])
    with pytest.raises(VideoInputError, match="more than one person"):
        build(pair, tmp_path / "x.avatar")


# ---- the self-reenactment figures ----

def test_psnr_and_ssim_rank_a_closer_image_higher():
    from avatar.eval.reenact import psnr, ssim

    rng = np.random.default_rng(2)
    image = (np.add.outer(np.arange(60), np.arange(80)) % 256).astype(np.uint8)[..., None].repeat(3, 2)
    slight = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(image + rng.normal(0, 30, image.shape), 0, 255).astype(np.uint8)
    assert psnr(image, image) == float("inf") and ssim(image, image) == pytest.approx(1.0)
    assert psnr(image, slight) > psnr(image, heavy) + 10
    assert ssim(image, slight) > ssim(image, heavy) + 0.2


@needs_clips
def test_reenact_command_on_one_clip(tmp_path):
    done = run_cli("eval", "reenact", str(GRID_CLIP), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads((tmp_path / "reenact.json").read_text())["clips"][0]
    assert report["build_frames"] == 45  # 60 % of 75 frames
    for who in ("video_avatar", "photo"):
        fig = report[who]
        assert fig["frames"] == 30
        assert 18 < fig["psnr_db"] < 60 and 0.5 < fig["ssim"] <= 1.0
        # both follow the real mouth and beat a mouth that never moves
        assert fig["opening_r"] > 0.5
        assert fig["inner_lip_distance"] < report["frozen_inner_lip_distance"]
        assert 0.3 < fig["flicker_ratio"] < 3.0  # the mouth changes from frame to frame about as a real one does
        assert -1 <= fig["width_r"] <= 1 and fig["width_amplitude_ratio"] > 0
    # the width was fitted on the first 60 % (his speech) for both networks, and kept only where it drew him closer
    for evidence in (report["calibration"][name] for name in ("lipsync_gru", "lipsync_gru_live")):
        assert evidence["frames"] == 45
        if evidence["kept"]:
            assert evidence["width_r_person"] > evidence["width_r_shared"]
        else:
            assert evidence["why"]
    assert (tmp_path / "bbaf2n_reenact.png").is_file() and "| bbaf2n.mpg |" in (tmp_path / "reenact.md").read_text()


@needs_clips
def test_a_small_face_in_a_wide_shot_is_followed_in_an_enlarged_crop(tmp_path):
    """FaceMesh on the whole frame misses a face this small; the detector finds it, and FaceMesh follows it in an
    enlarged crop around it."""
    import cv2

    frames = [cv2.resize(np.pad(f, ((400, 400), (600, 600), (0, 0)), mode="edge"), (1560, 1088))[::4, ::4].copy()
              for f in clip_frames(GRID_CLIP)]  # 390x272, the GRID face shrunk to about 30 px wide
    video = write_video(tmp_path / "far.mp4", frames)
    from avatar.face.video_avatar.source import probe
    from avatar.face.video_avatar.track import mesh_pass

    whole = mesh_pass(probe(video))
    assert np.isfinite(whole[:, 0, 0]).mean() < 0.9  # the first pass alone would refuse it
    report = build(video, tmp_path / "far.avatar")
    data = fileformat.load(tmp_path / "far.avatar")
    assert report.library >= 70 and data.opening.max() > 0.06  # the speaker's mouth opens in the library


def test_a_one_frame_misfit_is_dropped_but_a_lasting_jump_is_a_cut():
    from avatar.face.video_avatar.track import drop_glitches, find_cut

    points = np.zeros((10, 478, 2), np.float32)
    points[:, 33], points[:, 263] = (100.0, 100.0), (150.0, 100.0)  # eyes 50 px apart, still
    glitch = points.copy()
    glitch[4, 263] = (130.0, 100.0)  # one frame's fit shrinks the face by 40 %, the next is back
    found = np.ones(10, bool)
    kept = drop_glitches(glitch, found)
    assert kept.tolist() == [k != 4 for k in range(10)] and find_cut(glitch, kept) is None
    moved = points.copy()
    moved[6:] += (80.0, 0.0)  # from frame 6 on the face is elsewhere: a cut
    assert drop_glitches(moved, found).all() and find_cut(moved, found) == 6
