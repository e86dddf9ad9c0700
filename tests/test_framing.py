"""Output framing: the square portrait crop and 16:9 video frames (avatar.face.photo), through build_rig and
`avatar render --size WxH`."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.face import build_rig, load_photo
from avatar.face import landmarks as lm
from avatar.face.photo import (PAD_DIM, PORTRAIT_FACE_FRACTION, WIDE_CENTRE_SHIFT, WIDE_EYE_LINE,
                               WIDE_MAX_FACE_FRACTION, _warp, crop_affine,
                               portrait_crop_box)
from tests.conftest import decode_mp4, tone_bursts, write_wav
from tests.test_app_render_cli import render
from tests.test_face_picker import window  # noqa: F401 (the main window with the real renderer)

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "assets" / "default_face.jpg"
STORED = Path(__file__).parent / "data" / "face" / "default_face_landmarks.npy"  # FaceMesh on FACE
EYE_LINE_TOLERANCE = 0.04  # of the frame height: "about a third down"
CENTRE_TOLERANCE = 0.04  # of the frame width


@pytest.fixture(scope="module")
def face():
    return load_photo(FACE), np.load(STORED).astype(np.float64)


def eye_line(points: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """(eye height as a share of the frame's height from the top, the eyes' midpoint as a share of its width)."""
    r, l = lm.eye_centers(points)
    mid = (r + l) / 2
    return (mid[1] + 0.5) / height, (mid[0] + 0.5) / width


def test_square_stays_the_portrait_crop(face):
    image, points = face
    rig = build_rig(image, canvas=512, landmarks=points)
    assert rig.image.shape == (512, 512, 3)
    face_h = np.ptp(rig.landmarks[:, 1])
    assert face_h / 512 == pytest.approx(PORTRAIT_FACE_FRACTION, abs=0.01)
    # the whole canvas is photo: the portrait crop never reaches past the photo, so nothing is padded
    cx, cy, crop_h = portrait_crop_box(points, image.shape[:2], 1.0)
    assert crop_h <= min(image.shape[:2])


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_wide_frames_put_the_eyes_a_third_down_and_the_face_in_the_middle(face, size):
    image, points = face
    rig = build_rig(image, canvas=size, landmarks=points)
    assert rig.image.shape == (size[1], size[0], 3)
    down, across = eye_line(rig.landmarks, *size)
    assert down == pytest.approx(WIDE_EYE_LINE, abs=EYE_LINE_TOLERANCE)
    assert across == pytest.approx(0.5, abs=CENTRE_TOLERANCE)
    # headroom: the hairline well below the top edge, the chin in the upper two thirds
    assert rig.landmarks[:, 1].min() > 0.12 * size[1]
    assert rig.landmarks[lm.CHIN, 1] < 0.7 * size[1]


def test_a_large_photo_is_framed_without_padding(face):
    """Photo room all round the face: the 16:9 frame is cut from the photo at the portrait's face size."""
    image, points = face
    big = cv2.copyMakeBorder(image, 400, 400, 900, 900, cv2.BORDER_REFLECT_101)
    moved = points + np.array([900.0, 400.0, 0.0])
    cx, cy, crop_h = portrait_crop_box(moved, big.shape[:2], 16 / 9)
    face_h = max(np.ptp(moved[:, 1]), np.ptp(moved[:, 0]) * 1.1)
    assert face_h / crop_h == pytest.approx(PORTRAIT_FACE_FRACTION, rel=1e-6)
    assert cx - crop_h * 16 / 18 >= -0.5 and cy - crop_h / 2 >= -0.5  # inside the photo
    assert cx + crop_h * 16 / 18 <= big.shape[1] - 0.5 and cy + crop_h / 2 <= big.shape[0] - 0.5
    rig = build_rig(big, canvas=(1280, 720), landmarks=moved)
    down, across = eye_line(rig.landmarks, 1280, 720)
    assert down == pytest.approx(WIDE_EYE_LINE, abs=0.01) and across == pytest.approx(0.5, abs=0.01)


def test_a_face_at_the_photo_edge_slides_the_crop_only_within_the_rules(face):
    """A face near the photo's left edge: the crop slides right to stay inside the photo (the face moves left of
    the middle) by at most WIDE_CENTRE_SHIFT of the width; the rest is padded."""
    image, points = face
    wide = cv2.copyMakeBorder(image, 300, 300, 0, 1800, cv2.BORDER_REFLECT_101)
    moved = points + np.array([0.0, 300.0, 0.0])
    rig = build_rig(wide, canvas=(1280, 720), landmarks=moved)
    down, across = eye_line(rig.landmarks, 1280, 720)
    assert 0.5 - WIDE_CENTRE_SHIFT - 0.005 <= across < 0.5 - 0.05
    assert down == pytest.approx(WIDE_EYE_LINE, abs=EYE_LINE_TOLERANCE)


def test_a_photo_too_small_for_the_frame_is_padded_with_its_blurred_enlargement(face):
    """A tight 230x300 crop of the face, to 1920x1080: upscaled, the face kept at its framing (no larger than
    WIDE_MAX_FACE_FRACTION of the height), and the canvas beyond the photo filled with the photo enlarged to cover
    it, blurred and dimmed: not smeared edge pixels, not black, not a failure."""
    image, points = face
    x0, y0 = 140, 120
    small = np.ascontiguousarray(image[y0:y0 + 300, x0:x0 + 230])
    moved = points - np.array([x0, y0, 0.0])
    rig = build_rig(small, canvas=(1920, 1080), landmarks=moved)
    frame = rig.image
    assert frame.shape == (1080, 1920, 3)
    down, across = eye_line(rig.landmarks, 1920, 1080)
    assert down == pytest.approx(WIDE_EYE_LINE, abs=EYE_LINE_TOLERANCE)
    assert across == pytest.approx(0.5, abs=CENTRE_TOLERANCE)
    assert np.ptp(rig.landmarks[:, 1]) / 1080 <= WIDE_MAX_FACE_FRACTION + 0.01
    cx, cy, crop_h = portrait_crop_box(moved, small.shape[:2], 16 / 9)
    m = crop_affine((cx, cy), crop_h, (1920, 1080))
    left_edge = int(np.floor(m[0, 0] * -0.5 + m[0, 2]))  # where the photo starts on the canvas
    right_edge = int(np.ceil(m[0, 0] * (small.shape[1] - 0.5) + m[0, 2]))
    top_edge = int(np.ceil(m[1, 1] * -0.5 + m[1, 2]))
    bottom_edge = int(np.floor(m[1, 1] * (small.shape[0] - 0.5) + m[1, 2]))
    assert left_edge > 200  # this photo needs padding at the sides
    pad = frame[:, :left_edge - 30].astype(np.float64)  # beyond the feathered seam
    replicated = _warp(small, m, (1920, 1080), cv2.BORDER_REPLICATE)
    # not the photo's edge column smeared sideways (what BORDER_REPLICATE gives)...
    assert np.abs(pad - replicated[:, :left_edge - 30]).mean() > 5
    # ...but the photo's colours without sharp detail, a little darker than the photo
    assert np.abs(cv2.Laplacian(frame[:, :left_edge - 30], cv2.CV_64F)).mean() < 1.0
    assert np.abs(pad.mean((0, 1)) - PAD_DIM * small.reshape(-1, 3).mean(0)).max() < 30
    # the photo itself is untouched by the padding
    inside = (slice(max(0, top_edge) + 40, min(1080, bottom_edge) - 40), slice(left_edge + 40, right_edge - 40))
    np.testing.assert_array_equal(frame[inside], replicated[inside])


def test_render_cli_writes_a_16_9_video_with_the_eyes_a_third_down(tmp_path):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.3], 1.0), 16000)
    out = tmp_path / "wide.mp4"
    r = render(["--face", str(FACE), "--audio", str(tmp_path / "speech.wav"), "-o", str(out), "--size", "1280x720",
                "--fps", "10", "--backend", "onnxruntime", "--no-liveliness", "-q"], tmp_path)
    assert r.returncode == 0, r.stderr
    info = decode_mp4(out)
    assert info["frames"][0].shape == (720, 1280, 3) and len(info["frames"]) == 10
    found = lm.detect_faces(info["frames"][0])  # found again in the video, as a viewer sees it
    assert len(found) == 1
    down, across = eye_line(found[0], 1280, 720)
    assert down == pytest.approx(WIDE_EYE_LINE, abs=EYE_LINE_TOLERANCE)
    assert across == pytest.approx(0.5, abs=CENTRE_TOLERANCE)


@pytest.mark.parametrize("size, words", [("1280x9", "between 64 and 2048"), ("1280x720x2", "WIDTHxHEIGHT"),
                                         ("wide", "whole number")])
def test_render_cli_refuses_bad_sizes(tmp_path, size, words):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.1], 0.5), 16000)
    r = render(["--face", str(FACE), "--audio", str(tmp_path / "speech.wav"), "-o", str(tmp_path / "o.mp4"),
                "--size", size, "--backend", "onnxruntime", "-q"], tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


def test_the_window_renders_and_records_16_9_when_chosen(qtbot, tmp_path, window):
    """Settings → Render size → 1280 × 720 (16:9): the view's frames and a recording are 1280x720, the eyes a third
    down; the choice is kept."""
    from PySide6.QtWidgets import QMenu

    from avatar.gui.settings import load_preferences

    c = window.controller
    window.open_photo(str(FACE))
    qtbot.waitUntil(lambda: c.renderer is not None, timeout=30000)
    menu = next(m for m in window.findChildren(QMenu) if m.title() == "Render size")
    wide = next(a for a in menu.actions() if a.text() == "1280 × 720 (16:9)")
    wide.trigger()
    qtbot.waitUntil(lambda: c.latest_frame is not None and c.latest_frame.image.shape == (720, 1280, 3),
                    timeout=30000)
    assert (load_preferences().size, load_preferences().frame) == (720, "16:9")
    down, across = eye_line(c.renderer.rig.landmarks, 1280, 720)
    assert down == pytest.approx(WIDE_EYE_LINE, abs=EYE_LINE_TOLERANCE)
    assert window.start_recording()
    qtbot.wait(1200)
    path = window.stop_recording(wait=True)
    info = decode_mp4(path)
    assert info["frames"][0].shape == (720, 1280, 3)
