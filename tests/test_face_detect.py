"""Face finding at any scale (avatar.face.detect + landmarks.detect_faces) and which turned faces animate
(avatar.face.pose). Group photos are composed at run time from the public-domain portraits in assets/ and
tests/data; the dev clips in ../shared/data/video/ are read at test time only (never stored)."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.bench import faces as bf
from avatar.face import NoFaceError, build_rig, load_photo
from avatar.face import detect
from avatar.face import landmarks as lm
from avatar.face.pose import FaceTurnedError, FaceTurnedWarning, head_pose, turn_warning

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "face"
VIDEO = ROOT.parent / "shared" / "data" / "video"
CLIPS_ABSENT = f"the dev clips are not here ({VIDEO})"
WIDTH_TOLERANCE = 0.2  # a found face's width between the ears within 20% of the width it was pasted at


@pytest.fixture(scope="module")
def portraits():
    return bf.portrait_faces()


def first_frame(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read {path}"
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def centre(points: np.ndarray) -> np.ndarray:
    return (points[bf.EAR_LEFT, :2] + points[bf.EAR_RIGHT, :2]) / 2


def match(found: list[np.ndarray], placed: list[bf.Placed], offset=(0, 0)) -> list[int]:
    """For each placed face, the index of the found face at its place and of its width (asserted to exist)."""
    out = []
    for p in placed:
        near = [i for i, f in enumerate(found)
                if np.hypot(*(centre(f) + offset - (p.cx, p.cy))) < 0.25 * p.width
                and abs(bf.face_width(f) - p.width) < WIDTH_TOLERANCE * p.width]
        assert near, f"the {p.width:.0f} px face at ({p.cx:.0f}, {p.cy:.0f}) was not found"
        out.append(near[0])
    return out


@pytest.mark.parametrize("widths, size", [
    ((400, 240, 150, 90, 60, 40), (1800, 720)),  # 40-400 px on one canvas
    ((60, 300, 40, 150, 90, 200), (1800, 720)),  # the same range, placed out of order
    (bf.BENCH_WIDTHS, bf.BENCH_SIZE),  # six faces 90-150 px on 1280x886, as in the group photo of issue 17
])
def test_group_photo_every_face_found_largest_first(portraits, widths, size):
    group, placed = bf.compose_group(portraits, widths, size)
    found = lm.detect_faces(group)
    assert len(found) == len(widths)
    order = match(found, placed)
    assert sorted(order) == list(range(len(widths)))
    by_size = sorted(range(len(widths)), key=lambda i: -widths[i])
    assert [order[i] for i in by_size] == list(range(len(widths))), "faces must come largest first"


def test_whole_photo_meshes_miss_small_faces_that_the_crops_find(portraits):
    """What the second stage adds: FaceMesh alone on the photo (the way faces were found before) sees none of them."""
    group, placed = bf.compose_group(portraits, (64, 56, 48, 40), (1280, 200))
    assert lm._whole_photo_meshes(group) == []
    assert len(match(lm.detect_faces(group), placed)) == 4


def test_tilted_faces_in_a_group_are_found(portraits):
    group, placed = bf.compose_group(portraits, (150, 100, 60, 40), (1280, 300))
    for p in placed:  # each face's patch turned 30 degrees in the image plane, about the face's centre
        side = int(round(p.width * bf.PATCH_FACTOR))
        x0, y0 = int(round(p.cx - side / 2)), int(round(p.cy - side / 2))
        m = cv2.getRotationMatrix2D((p.cx - x0, p.cy - y0), 30, 1.0)
        group[y0:y0 + side, x0:x0 + side] = cv2.warpAffine(group[y0:y0 + side, x0:x0 + side], m, (side, side),
                                                           borderMode=cv2.BORDER_REFLECT)
    assert sorted(match(lm.detect_faces(group), placed)) == [0, 1, 2, 3]


@pytest.mark.parametrize("width", [60, 100, 150])
def test_face_cut_by_the_photo_edge(portraits, width):
    group, placed = bf.compose_group(portraits, (width, 90, 80), (1280, 400))
    cut = int(placed[0].cx - 0.3 * width)  # the left ear and part of the cheek are outside the photo
    found = lm.detect_faces(group[:, cut:])
    match(found, placed, offset=(cut, 0))


def test_a_portrait_keeps_exactly_its_former_landmarks():
    """The single-large-face path is FaceMesh on the whole photo, as before the detector stage: the stored points of
    the default face (found that way) come back to float32 precision."""
    stored = np.load(DATA / "default_face_landmarks.npy")
    found = lm.detect_faces(load_photo(ROOT / "assets" / "default_face.jpg"))
    assert len(found) == 1
    np.testing.assert_allclose(found[0], stored, atol=1e-3)


@pytest.mark.skipif(not VIDEO.is_dir(), reason=CLIPS_ABSENT)
def test_dev_clips_first_frames():
    clips = sorted(VIDEO.glob("*.mp4")) + sorted(VIDEO.glob("*.mpg"))
    assert clips
    for clip in clips:
        frame = first_frame(clip)
        found = lm.detect_faces(frame)
        assert found, f"no face in {clip.name}'s first frame"
        before = lm._whole_photo_meshes(frame)
        if before:  # found before the detector stage: the same points now
            assert np.array_equal(found[0], before[0]), clip.name


@pytest.mark.skipif(not (VIDEO / "lp_s13.mp4").is_file(), reason=CLIPS_ABSENT)
def test_small_face_of_a_full_body_shot_is_found_and_rigged():
    frame = first_frame(VIDEO / "lp_s13.mp4")
    assert lm._whole_photo_meshes(frame) == []  # what made it "No face was found"
    found = lm.detect_faces(frame)
    assert len(found) == 1
    assert 40 < bf.face_width(found[0]) < 120
    x0, y0 = found[0][:, :2].min(0)
    x1, y1 = found[0][:, :2].max(0)
    assert 0 <= x0 < x1 < frame.shape[1] and 0 <= y0 < y1 < frame.shape[0] / 2  # a head, in the upper half
    rig = build_rig(frame, canvas=256)
    assert rig.image.shape == (256, 256, 3)


def test_photo_without_a_face_still_goes_to_manual_placement():
    for image in (load_photo(DATA / "cat.jpg"), np.full((600, 900, 3), 128, np.uint8)):
        assert lm.detect_faces(image) == []
        with pytest.raises(NoFaceError) as e:
            build_rig(image)
        assert type(e.value) is NoFaceError and e.value.image is not None


# --- the geometry of avatar.face.detect (no MediaPipe) ---

def test_tiles_cover_the_photo_at_every_level_with_overlap():
    w, h = 1280, 886
    assert detect.tile_sides(w, h) == [1280, 1024, 512]
    boxes = detect.tiles(w, h)
    assert boxes[0] == (0, 0, w, h)
    for side in (512, 1024):
        level = [b for b in boxes if b[2] - b[0] == side or b[3] - b[1] == side]
        covered = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in level:
            covered[y0:y1, x0:x1] = True
        assert covered.all()
    starts = detect.tile_starts(1280, 512)
    assert starts[0] == 0 and starts[-1] == 1280 - 512
    assert all(b - a <= 512 * (1 - detect.TILE_OVERLAP) + 1 for a, b in zip(starts, starts[1:]))
    assert detect.tile_sides(400, 300) == [400]


def test_merge_boxes_keeps_one_box_per_face_largest_first():
    a = detect.FaceBox(0, 0, 100, 100, 0.8)
    a2 = detect.FaceBox(5, 5, 105, 105, 0.9)
    b = detect.FaceBox(300, 0, 350, 50, 0.7)
    c = detect.FaceBox(500, 0, 700, 200, 0.6)
    assert detect.merge_boxes([a, b, a2, c]) == [c, a2, b]


@pytest.mark.parametrize("box", [detect.FaceBox(10.3, 20.7, 50.3, 60.7, 1),  # small: upscaled
                                 detect.FaceBox(100, 100, 300, 300, 1),  # crop of the photo's own pixels
                                 detect.FaceBox(-50, 10, 550, 610, 1)])  # large and off the edge: downscaled
def test_crop_and_back_are_inverse(box):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (700, 800, 3), np.uint8)
    m, side = detect.crop_transform(box)
    out = detect.crop(image, m, side)
    assert out.shape == (side, side, 3)
    assert detect.CROP_MIN_SIDE <= side <= detect.CROP_MAX_SIDE
    pts = np.column_stack([rng.uniform(0, side - 1, (20, 2)), rng.uniform(-5, 5, 20)])
    back = detect.to_photo(pts, m)
    forward = np.column_stack([back[:, :2] @ m[:, :2].T + m[:, 2], back[:, 2] * m[0, 0]])
    np.testing.assert_allclose(forward, pts, atol=1e-9)
    # a pixel inside the photo lands where the transform says (up to interpolation)
    x, y = 300.0, 330.0
    cx, cy = m[:, :2] @ (x, y) + m[:, 2]
    if 1 <= cx < side - 2 and 1 <= cy < side - 2 and m[0, 0] == 1.0:
        assert np.array_equal(out[int(cy), int(cx)], image[int(y), int(x)])


def test_crop_pads_a_face_cut_by_the_edge_with_the_border_pixels():
    image = np.zeros((200, 200, 3), np.uint8)
    image[:, 0] = 200  # the photo's first column
    m, side = detect.crop_transform(detect.FaceBox(-150, 0, 10, 160, 1))
    out = detect.crop(image, m, side)
    x_edge = int(round(m[0, 0] * 0 + m[0, 2]))
    assert out[side // 2, : max(1, x_edge - 2)].min() == 200  # left of the photo: its edge column repeated


# --- pose: which turned faces animate ---

def turned(points: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Points turned about the vertical axis through their centre (FaceMesh's z is depth in x's scale)."""
    a = np.radians(yaw_deg)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    c = points.mean(0)
    return (points - c) @ r.T + c


@pytest.fixture(scope="module")
def frontal():
    return np.load(DATA / "default_face_landmarks.npy").astype(np.float64)


def test_head_pose_of_real_points_turned_by_known_angles(frontal):
    base = head_pose(frontal)
    assert abs(base.yaw) < 5 and abs(base.roll) < 5
    for yaw in (-60, -30, 15, 40, 70):
        assert head_pose(turned(frontal, yaw)).yaw == pytest.approx(base.yaw + yaw, abs=1.0)
    a = np.radians(10)  # tilted clockwise in the image (y points down)
    tilt = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    c = frontal.mean(0)
    assert head_pose((frontal - c) @ tilt.T + c).roll == pytest.approx(base.roll + 10, abs=1.0)


def test_turned_faces_warn_or_refuse(frontal):
    assert turn_warning(frontal) is None
    assert turn_warning(turned(frontal, 15)) is None
    message = turn_warning(turned(frontal, -35))
    assert "35°" in message and "stretch" in message
    with pytest.raises(FaceTurnedError, match="60°.*cannot be animated"):
        turn_warning(turned(frontal, 60))


def test_build_rig_refuses_a_profile_and_warns_on_three_quarter(monkeypatch, frontal):
    image = load_photo(ROOT / "assets" / "default_face.jpg")
    monkeypatch.setattr(lm, "detect_faces", lambda img: [turned(frontal, 65)])
    with pytest.raises(FaceTurnedError) as e:
        build_rig(image)
    assert isinstance(e.value, NoFaceError) and e.value.image is None  # a message, not manual placement
    monkeypatch.setattr(lm, "detect_faces", lambda img: [turned(frontal, 35)])
    with pytest.warns(FaceTurnedWarning, match="35°"):
        rig = build_rig(image, canvas=256)
    assert "35°" in rig.turn_warning  # for a caller in another thread (warning filters are process-wide)
    monkeypatch.setattr(lm, "detect_faces", lambda img: [frontal])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FaceTurnedWarning)
        assert build_rig(image, canvas=256).turn_warning is None
    # hand-placed points (a frontal template stretched to fit) are taken as they are
    assert build_rig(image, canvas=256, landmarks=turned(frontal, 65)).turn_warning is None


@pytest.mark.skipif(not (VIDEO / "lp_s32.mp4").is_file(), reason=CLIPS_ABSENT)
def test_a_real_three_quarter_face_warns():
    frame = first_frame(VIDEO / "lp_s32.mp4")  # a woman looking off to the image's left
    points = lm.detect_faces(frame)[0]
    assert 20 < head_pose(points).yaw < 35
    with pytest.warns(FaceTurnedWarning):
        assert build_rig(frame, canvas=256).turn_warning


def test_bench_faces_cli_reports_the_group_photo(capsys):
    import json

    from avatar import cli

    assert cli.main(["bench", "faces", "--runs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["photo"] == "1280x886" and report["faces found"] == report["faces placed"] == 6
    assert 0 < report["finding median s"] < report["finding + rig build median s"]


def test_a_detector_model_planted_in_the_current_folder_is_not_loaded(tmp_path):
    """The full-range detector goes through landmarks.pinned_solution like FaceMesh: junk planted where MediaPipe
    would look first (the current folder, ./bazel-bin) is not read, and small faces are still found."""
    import os
    import subprocess
    import sys

    for base in (tmp_path, tmp_path / "bazel-bin"):
        for name in ("face_detection_full_range_sparse.tflite", "face_detection_full_range_cpu.binarypb"):
            junk = base / "mediapipe" / "modules" / "face_detection" / name
            junk.parent.mkdir(parents=True, exist_ok=True)
            junk.write_bytes(b"TFL3 planted junk, not a model")
    code = ("from avatar.bench import faces as bf\nfrom avatar.face.landmarks import detect_faces\n"
            "group, placed = bf.compose_group(bf.portrait_faces(), (64, 48), (600, 200))\n"
            "print('faces', len(detect_faces(group)))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "faces 2", r.stdout
