"""A mouth that looks like a real mouth (issue 14), measured on re-detected landmarks of rendered frames:
an open-mouthed photo is closed at rest, blinks close the eye, teeth are white-balanced from the sclera,
rounding narrows and spreading widens the mouth.

The dev faces are the shipped default face (Grace Hopper, matplotlib's sample photo), scikit-image's astronaut
(smiling with teeth) and first frames of real clips read from ../shared/data/video at run time (skipped where
that folder is absent; nothing made from them is stored).
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.face import LivelinessConfig, build_rig, create_renderer, detect_faces
from avatar.face import landmarks as lm

OFF = LivelinessConfig(enabled=False)
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FACE = ROOT / "assets" / "default_face.jpg"
ASTRONAUT = Path(__file__).parent / "data" / "face" / "astronaut.jpg"
VIDEO = ROOT.parent / "shared" / "data" / "video"
OPEN_MOUTH_CLIPS = ("kim_7s_raw.mp4", "lp_d3.mp4")  # first frames with the lips apart
EYE_CLIPS = ("bbaf2n.mpg", "kim_7s_raw.mp4", "lp_d20.mp4", "lp_d9.mp4", "lp_d19.mp4")  # d9, d19: glasses
UPPER_LIP_IN, LOWER_LIP_IN = 13, 14


def first_frame(name: str) -> np.ndarray:
    path = VIDEO / name
    if not path.exists():
        pytest.skip(f"real clip {path} is absent (the shared video folder is not on this machine)")
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"OpenCV cannot decode {path}")
    return np.ascontiguousarray(frame[..., ::-1])


def photo(name: str):
    return {"default": DEFAULT_FACE, "astronaut": ASTRONAUT}.get(name) or first_frame(name)


def detect(frame: np.ndarray) -> np.ndarray:
    faces = detect_faces(frame)
    assert faces, "the detector lost the face"
    return faces[0]


def opening(points: np.ndarray) -> float:
    """Inner-lip opening |13-14| in inter-ocular distances (eye-aligned like avatar.face.landmarks.normalize)."""
    n = lm.normalize(points)
    return float(np.linalg.norm(n[UPPER_LIP_IN, :2] - n[LOWER_LIP_IN, :2]))


@pytest.mark.parametrize("name", ("astronaut",) + OPEN_MOUTH_CLIPS)
def test_open_mouthed_photo_is_closed_at_rest(name):
    source = photo(name)
    rig = build_rig(source, canvas=512)
    original = detect(rig.image if not rig.closed_at_rest else _uncl(source))
    assert opening(original) > 0.05, "the photo's mouth is open (else this test means nothing)"
    assert rig.closed_at_rest
    rest = detect(create_renderer(rig, "cpu", OFF).render({}, 0.0))
    assert opening(rest) < 0.02, opening(rest)
    # the lips keep their own texture and the photo's teeth are gone: inside the re-detected outer lip contour,
    # no bright, colourless (teeth) pixels remain
    frame = create_renderer(rig, "cpu", OFF).render({}, 0.0)
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(rest[list(lm.LIP_OUTER), :2]).astype(np.int32)], 1)
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(float)
    inside = lab[mask > 0]
    lip_chroma = np.hypot(inside[:, 1] - 128, inside[:, 2] - 128)
    teeth_like = (inside[:, 0] > np.percentile(inside[:, 0], 50) + 25) & (lip_chroma < np.median(lip_chroma) * 0.5)
    assert teeth_like.mean() < 0.02, teeth_like.mean()


def _uncl(source):
    """The photo's own portrait crop (before the rest pose closed it), for comparison."""
    from avatar.face.photo import apply_affine, crop_affine, load_photo, portrait_crop_box, warp_to_canvas

    image = load_photo(source)
    points = detect(image)
    cx, cy, crop_h = portrait_crop_box(points, image.shape[:2], aspect=1.0)
    return warp_to_canvas(image, crop_affine((cx, cy), crop_h, (512, 512)), (512, 512))


def test_closed_mouthed_photo_is_left_as_it_is():
    rig = build_rig(DEFAULT_FACE, canvas=512)
    assert not rig.closed_at_rest
    assert np.array_equal(rig.image, _uncl(DEFAULT_FACE))


def test_rest_closure_moves_landmarks_onto_the_meeting_line():
    from avatar.face.rest import close_mouth, lips_apart

    image = _uncl(ASTRONAUT)
    points = detect(image)
    assert lips_apart(points)
    closed, moved = close_mouth(image, points)
    n = lm.normalize(moved)  # eye-aligned: x along the eye line, inter-ocular distance 1
    up, lo = n[list(lm.LIP_INNER_UPPER), :2], n[list(lm.LIP_INNER_LOWER), :2]
    up, lo = up[np.argsort(up[:, 0])], lo[np.argsort(lo[:, 0])]
    assert np.abs(up[:, 1] - np.interp(up[:, 0], lo[:, 0], lo[:, 1])).max() < 0.01  # the lips meet all along
    iod = np.linalg.norm(np.subtract(*lm.eye_centers(points)))
    far = np.linalg.norm(points[:, :2] - points[lm.MOUTH_CORNERS, :2].mean(0), axis=1) > 1.5 * iod
    assert np.array_equal(moved[far], points[far])  # the eyes and the brows stay where they were
    assert not lips_apart(moved)
