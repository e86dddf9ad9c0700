"""FaceMesh on every frame of the video (video mode: tracking from frame to frame), one person, one shot.

Every frame's points are also put in the avatar's canonical frame: the similarity (rotation, uniform scale, shift)
that best takes the frame's stable points (eye corners and the nose bridge, which the mouth never moves) onto
their mean, eye-aligned position (eye corners 33 and 263 at (-0.5, 0) and (0.5, 0), as the eval ruler aligns).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar.face.landmarks import N_LANDMARKS, pinned_solution, quiet_native_logs
from avatar.face.video_avatar import VideoInputError, VideoNoFaceError
from avatar.face.video_avatar.source import VideoInfo, iter_frames

EYE_POINTS = (33, 263)  # the ruler's eye corners (avatar.eval.video)
STABLE_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5)  # eye corners, nose bridge: they carry the skull
MIN_FACE_SHARE = 0.9  # a face must be tracked in this share of the frames
CUT_JUMP = 0.35  # the eyes' midpoint moving this many eye distances between frames is a cut (or a lost track)
CUT_SCALE = 0.2  # the eye distance changing by this share between frames is a cut
OTHER_FACE_SHARE = 0.4  # a second face at least this wide (share of the main one's width) is a second person
PEOPLE_SAMPLES = 5  # frames checked for other people
CUT_PICTURE = 25.0  # a cut in the picture: consecutive thumbnails differ by this much (mean, 0..255)...
CUT_PICTURE_RATIO = 6.0  # ...and this many times the clip's median change
THUMB = (32, 24)  # the thumbnails compared
SMALL_FACE_PX = 240  # a face FaceMesh misses in the whole frame is tried again enlarged to this width...
SMALL_FACE_MARGIN = 1.0  # ...in a crop this many face widths around the detected face
SMOOTH_SIGMA_FRAMES = 1.2  # the canonical transforms are smoothed over time this much (FaceMesh jitters)


@dataclass
class Track:
    points: np.ndarray  # (M, 478, 2) float32 delivered-frame pixels, NaN where no face
    found: np.ndarray  # (M,) bool
    canon: np.ndarray  # (M, 2, 3) float64 image -> canonical similarity (NaN where no face), smoothed
    template: np.ndarray  # (len(STABLE_POINTS), 2) canonical positions of the stable points

    def canonical(self, k: int, idx=slice(None)) -> np.ndarray:
        """Frame k's points (a subset by idx) in canonical coordinates."""
        m = self.canon[k]
        return self.points[k][idx] @ m[:, :2].T + m[:, 2]


def _face_mesh():
    import mediapipe as mp  # ~1 s to import: only a build needs it

    mesh = pinned_solution(mp.solutions.face_mesh.FaceMesh)
    return mesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5)


def _face_finder():
    import mediapipe as mp

    finder = pinned_solution(mp.solutions.face_detection.FaceDetection)
    return finder(model_selection=1, min_detection_confidence=0.6)  # full range: people further back too


def eye_similarity(points: np.ndarray) -> np.ndarray:
    """2x3 similarity taking points 33 and 263 to (-0.5, 0) and (0.5, 0)."""
    a, b = points[EYE_POINTS[0], :2], points[EYE_POINTS[1], :2]
    d = b - a
    scale = 1.0 / max(float(np.hypot(*d)), 1e-9)
    c, s = d * scale
    rot = np.array([[c, s], [-s, c]]) * scale
    return np.hstack([rot, (-(rot @ ((a + b) / 2)))[:, None]])


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (no reflection) taking src points (K, 2) onto dst (K, 2)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    # complex form: dst ≈ z * src, z = sum(conj(a) b) / sum |a|^2
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    z = np.sum(np.conj(za) * zb) / max(float(np.sum(np.abs(za) ** 2)), 1e-12)
    rot = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def invert_similarity(m: np.ndarray) -> np.ndarray:
    rot = m[:, :2]
    inv = np.linalg.inv(rot)
    return np.hstack([inv, (-(inv @ m[:, 2]))[:, None]])


def _smooth_series(x: np.ndarray, ok: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 over the found frames only (a normalized convolution)."""
    if sigma <= 0:
        return x
    r = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    flat = np.where(ok[:, None], x.reshape(len(x), -1), 0.0)
    weight = np.convolve(ok.astype(float), kernel, mode="same")
    out = np.stack([np.convolve(flat[:, j], kernel, mode="same") for j in range(flat.shape[1])], axis=1)
    out = out / np.maximum(weight, 1e-9)[:, None]
    return np.where(ok[:, None], out, np.nan).reshape(x.shape)


def _jumps(points: np.ndarray, a: int, b: int) -> bool:
    """Whether the face moves or resizes from frame a to frame b more than a continuous shot allows."""
    ea, eb = points[a, list(EYE_POINTS)], points[b, list(EYE_POINTS)]
    iod_a, iod_b = float(np.linalg.norm(ea[1] - ea[0])), float(np.linalg.norm(eb[1] - eb[0]))
    step = float(np.linalg.norm(eb.mean(0) - ea.mean(0))) / max(iod_a, 1e-6)
    return step > CUT_JUMP * abs(b - a) or abs(iod_b / max(iod_a, 1e-6) - 1) > CUT_SCALE


def drop_glitches(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """`found` without the frames where FaceMesh's points jump away and straight back (one bad fit, as on fast
    motion): those frames hold no usable mouth, and they are no cut."""
    found = found.copy()
    for k in range(1, len(found) - 1):
        if found[k - 1] and found[k] and found[k + 1] and not _jumps(points, k - 1, k + 1) and (
                _jumps(points, k - 1, k) or _jumps(points, k, k + 1)):
            found[k] = False
    return found


def find_cut(points: np.ndarray, found: np.ndarray) -> int | None:
    """The first frame whose face jumps from the previous one (a cut in the video), or None."""
    idx = np.nonzero(found)[0]
    for a, b in zip(idx[:-1], idx[1:]):
        if b - a > 3:  # the face was lost for a while: judged by the share of frames without one
            continue
        if _jumps(points, a, b):
            return int(b)
    return None


def find_picture_cut(thumbs: np.ndarray) -> int | None:
    """The first frame whose whole picture changes at once (a cut between shots), or None."""
    if len(thumbs) < 3:
        return None
    change = np.abs(np.diff(thumbs.astype(np.float32), axis=0)).mean(axis=(1, 2))
    typical = max(float(np.median(change)), 1.0)
    jumps = np.nonzero((change > CUT_PICTURE) & (change > CUT_PICTURE_RATIO * typical))[0]
    return int(jumps[0]) + 1 if len(jumps) else None


def face_boxes(finder, image: np.ndarray) -> list[tuple[float, float, float, float]]:
    """The full-range face detector's faces in a frame: (x, y, width, height) pixels, the widest first."""
    result = finder.process(image)
    h, w = image.shape[:2]
    boxes = [d.location_data.relative_bounding_box for d in (result.detections or [])]
    return sorted(((b.xmin * w, b.ymin * h, b.width * w, b.height * h) for b in boxes), key=lambda b: -b[2])


def second_person(boxes) -> bool:
    """A second face nearly as wide as the largest."""
    return len(boxes) > 1 and boxes[1][2] >= OTHER_FACE_SHARE * boxes[0][2]


def small_face_crop(boxes, size: tuple[int, int]) -> tuple[int, int, int, int, float]:
    """(x0, y0, x1, y1, scale): the picture around the detected faces (SMALL_FACE_MARGIN face widths on each side),
    enlarged so the face is SMALL_FACE_PX wide: FaceMesh's own detector misses faces that fill little of the frame."""
    w, h = size
    fw = max(b[2] for b in boxes)
    x0 = int(max(min(b[0] for b in boxes) - SMALL_FACE_MARGIN * fw, 0))
    y0 = int(max(min(b[1] for b in boxes) - SMALL_FACE_MARGIN * fw, 0))
    x1 = int(min(max(b[0] + b[2] for b in boxes) + SMALL_FACE_MARGIN * fw, w))
    y1 = int(min(max(b[1] + b[3] for b in boxes) + SMALL_FACE_MARGIN * fw, h))
    return x0, y0, x1, y1, max(SMALL_FACE_PX / max(fw, 1.0), 1.0)


def mesh_pass(info: VideoInfo, crop=None, on_frame=None, progress=None, cancelled=None) -> np.ndarray:
    """(M, 478, 2) FaceMesh points of every frame (NaN where none), in frame pixels; `crop` (small_face_crop):
    FaceMesh runs on that part of each frame, enlarged. on_frame(k, image) sees every frame first."""
    m = len(info.picks)
    points = np.full((m, N_LANDMARKS, 2), np.nan, np.float32)
    with quiet_native_logs, _face_mesh() as mesh:
        for k, image in iter_frames(info):
            if cancelled is not None and cancelled():
                raise InterruptedError("cancelled")
            if on_frame is not None:
                on_frame(k, image)
            view, (x0, y0, s) = image, (0, 0, 1.0)
            if crop is not None:
                x0, y0, x1, y1, s = crop
                view = cv2.resize(image[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
            result = mesh.process(np.ascontiguousarray(view))
            if result.multi_face_landmarks:
                vh, vw = view.shape[:2]
                pts = np.array([(p.x * vw - 0.5, p.y * vh - 0.5) for p in result.multi_face_landmarks[0].landmark])
                points[k] = (pts + 0.5) / s - 0.5 + (x0, y0)
            if progress is not None:
                progress(k + 1, m)
    return points


def track_video(info: VideoInfo, progress=None, cancelled=None) -> Track:
    """FaceMesh on every frame; raises VideoNoFaceError / VideoInputError (several people, a cut)."""
    m = len(info.picks)
    thumbs = np.zeros((m, THUMB[1], THUMB[0]), np.uint8)
    people_at = set(np.linspace(0, m - 1, PEOPLE_SAMPLES).astype(int).tolist())  # frames checked for others
    seen, detected = [], []

    with _face_finder() as finder:
        def look(k, image):
            thumbs[k] = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), THUMB, interpolation=cv2.INTER_AREA)
            if k in people_at:
                boxes = face_boxes(finder, image)
                detected.extend(boxes[:1])
                if second_person(boxes):
                    seen.append(k / info.fps)

        points = mesh_pass(info, on_frame=look, progress=progress, cancelled=cancelled)
    found = np.isfinite(points[:, 0, 0])
    if found.mean() < MIN_FACE_SHARE and detected and not seen:  # a face the detector sees: too small for FaceMesh
        points = mesh_pass(info, crop=small_face_crop(detected, info.size), progress=progress, cancelled=cancelled)
        found = np.isfinite(points[:, 0, 0])
    if not found.any():
        if detected:
            raise VideoNoFaceError(f"{info.path.name}: the face is too small to follow (about "
                                   f"{max(b[2] for b in detected):.0f} px wide); film closer")
        raise VideoNoFaceError(f"{info.path.name}: no face found in the video; film one person facing the camera")
    if found.mean() < MIN_FACE_SHARE:
        lost = np.nonzero(~found)[0]
        raise VideoNoFaceError(f"{info.path.name}: the face is lost in {100 * (1 - found.mean()):.0f} % of the "
                               f"frames (from {lost[0] / info.fps:.2f} s); keep the whole face in the picture")
    found = drop_glitches(points, found)
    cut = find_picture_cut(thumbs)
    cut = find_cut(points, found) if cut is None else cut
    if cut is not None:
        raise VideoInputError(f"{info.path.name}: the video cuts (or the face jumps) at {cut / info.fps:.2f} s; "
                              "use one continuous shot")
    if seen:
        raise VideoInputError(f"{info.path.name}: more than one person is in the picture (at {seen[0]:.2f} s); "
                              "film one person alone")
    return canonical_track(points, found)


def canonical_track(points: np.ndarray, found: np.ndarray) -> Track:
    stable = list(STABLE_POINTS)
    idx = np.nonzero(found)[0]
    aligned = []
    for k in idx:
        e = eye_similarity(points[k])
        aligned.append(points[k][stable] @ e[:, :2].T + e[:, 2])
    template = np.mean(aligned, axis=0)
    canon = np.full((len(points), 2, 3), np.nan)
    for k in idx:
        canon[k] = fit_similarity(points[k][stable].astype(np.float64), template)
    canon = _smooth_series(canon, found, SMOOTH_SIGMA_FRAMES)
    return Track(points, found, canon, template)
