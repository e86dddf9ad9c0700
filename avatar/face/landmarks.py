"""Face landmarks: MediaPipe FaceMesh (478 points, offline), index sets, and the generic template for manual placement.

Points are (x, y, z) in pixel-index coordinates of the image they were found on (pixel i spans i-0.5..i+0.5);
z is MediaPipe's relative depth in the same pixel scale, smaller = nearer the camera.
"Right"/"left" are the subject's: the right eye is on the image's left for a photo facing the camera.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Mapping

import cv2
import numpy as np
from google.protobuf import symbol_database

from avatar.face import detect
from avatar.paths import assets_dir

N_LANDMARKS = 478  # 468 mesh points + 2 x 5 iris points (refine_landmarks=True)
MAX_FACES = 10  # faces kept per photo, the largest (each found face costs one FaceMesh run on its crop)
MIN_DETECTION_CONFIDENCE = 0.5
SAME_FACE_IOU = 0.5  # meshes whose bounding boxes overlap more than this are one face found from two boxes
# What MediaPipe's C++ side (glog/absl, TensorFlow Lite) writes to fd 2 when a graph starts and first runs: info
# and warning lines ("W0000 00:00:1796171706.856112  14569 inference_feedback_manager.cc:114] ..."), which
# GLOG_minloglevel does not stop. Errors (E, F) and everything else still reach stderr.
NATIVE_LOG_LINE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+ +\d+ [^ ]+:\d+\] |INFO: Created TensorFlow Lite |"
                             rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")

# FaceMesh topology (mp.solutions.face_mesh.FACEMESH_* connection sets), as ordered contours.
LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
MOUTH_CORNERS = (61, 291)  # outer corners: right, left
MOUTH_INNER_CORNERS = (78, 308)
UPPER_LIP_TOP, UPPER_LIP_INNER, LOWER_LIP_INNER, LOWER_LIP_BOTTOM = 0, 13, 14, 17
CHIN, FOREHEAD, NOSE_TIP = 152, 10, 1
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_IRIS, LEFT_IRIS = (468, 469, 470, 471, 472), (473, 474, 475, 476, 477)

# Handles a person drags onto a photo where no face was found; each is the mean of these template points.
HANDLES = {
    "right_eye_outer": (33,), "right_eye_inner": (133,),
    "left_eye_inner": (362,), "left_eye_outer": (263,),
    "mouth_right": (61,), "mouth_left": (291,),
    "upper_lip": (0,), "lower_lip": (17,),
    "chin": (152,),
}
HANDLE_NAMES = tuple(HANDLES)
TEMPLATE_FILE = "face_template.npy"  # 478x3 float32, eye centres at (-0.5, 0) and (0.5, 0): see make_template


class NoFaceError(ValueError):
    """No face was found in a photo. ``image`` is the loaded RGB photo, so a UI can offer manual placement."""

    def __init__(self, message: str, image: np.ndarray | None = None):
        super().__init__(message)
        self.image = image


_mesh = None
_finder = None
_mediapipe_lock = threading.Lock()  # one photo at a time through MediaPipe's graphs (they are not re-entrant)


def _mediapipe():
    try:
        import mediapipe as mp  # ~0.7 s and its logging start: loaded when a face is first looked for
    except ImportError as e:  # pragma: no cover - mediapipe is a declared dependency
        raise RuntimeError("mediapipe 0.10.21 is needed to find faces (pip install mediapipe==0.10.21)") from e
    return mp


def _face_mesh():
    global _mesh
    if _mesh is None:
        mesh = pinned_solution(_mediapipe().solutions.face_mesh.FaceMesh)
        _mesh = mesh(static_image_mode=True, refine_landmarks=True, max_num_faces=MAX_FACES,
                     min_detection_confidence=MIN_DETECTION_CONFIDENCE)
    return _mesh


def _face_finder():
    """MediaPipe's full-range face detector (model_selection=1: faces at any distance, not only close ones)."""
    global _finder
    if _finder is None:
        finder = pinned_solution(_mediapipe().solutions.face_detection.FaceDetection)
        _finder = finder(model_selection=1, min_detection_confidence=MIN_DETECTION_CONFIDENCE)
    return _finder


class _NativeLogFilter:
    """A context manager that keeps MediaPipe's native info/warning lines (NATIVE_LOG_LINE) off stderr.

    They are written by its C++ threads straight to file descriptor 2, so no Python logging setting reaches them:
    fd 2 is pointed at an unlinked temporary file while a MediaPipe graph is built or run, and on leaving, every
    line but those is copied to the real stderr (a Python traceback or an error line from any thread written
    meanwhile appears then, a moment late). fd 2 is process-wide: the redirect is shared by overlapping users
    (threads, nesting) and undone when the last one leaves."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: int | None = None
        self._capture = None

    def __enter__(self):
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                _flush_python_stderr()
                self._capture = tempfile.TemporaryFile()
                self._saved = os.dup(2)
                os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                _flush_python_stderr()
                os.dup2(self._saved, 2)
                os.close(self._saved)
                capture, self._capture, self._saved = self._capture, None, None
                with capture:
                    capture.seek(0)
                    kept = b"".join(line for line in capture if not NATIVE_LOG_LINE.match(line))
                if kept:
                    os.write(2, kept)
        return False


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):  # a closed or replaced sys.stderr has nothing of ours to flush
        sys.stderr.flush()


quiet_native_logs = _NativeLogFilter()  # `with quiet_native_logs:` around a MediaPipe call


def pinned_solution(solution):
    """A MediaPipe solution class whose models are read from mediapipe's own install folder only.

    Its graph names the models by relative paths ("mediapipe/modules/..."), which MediaPipe opens from the current
    folder, then ./bazel-bin, before its resource root: a file planted there would be parsed and run. The subclass
    rewrites every such path in the graph to an absolute one, in the graph config that SolutionBase's
    `_initialize_graph_interface` returns and builds the graph from (any solution: FaceMesh, SelfieSegmentation).
    Building and running it keep MediaPipe's native log lines off stderr (quiet_native_logs)."""
    mp = _mediapipe()
    root = os.path.dirname(os.path.dirname(os.path.abspath(mp.__file__)))  # the folder holding mediapipe/

    class Pinned(solution):
        def __init__(self, *args, **kwargs):  # builds and starts the graph
            with quiet_native_logs:
                super().__init__(*args, **kwargs)

        def process(self, *args, **kwargs):  # the first run of each graph logs its model set-up
            with quiet_native_logs:
                return super().process(*args, **kwargs)

        def _initialize_graph_interface(self, *args, **kwargs):
            config = super()._initialize_graph_interface(*args, **kwargs)
            _pin_model_paths(config, root)
            return config

    return Pinned


def _pin_model_paths(config, root: str) -> None:
    """Model paths in a CalculatorGraphConfig's node options made absolute under `root` (in place)."""
    for node in config.node:
        _absolute_models(node.options, root)
        for packed in node.node_options:  # proto3 options: google.protobuf.Any
            options = symbol_database.Default().GetSymbol(packed.type_url.split("/")[-1])()
            options.ParseFromString(packed.value)
            if _absolute_models(options, root):
                packed.value = options.SerializeToString()


def _absolute_models(message, root: str) -> bool:
    """Every "mediapipe/....tflite" string field in an options message (searched recursively) joined to `root`;
    True if any was."""
    changed = False
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in (value if field.label == field.LABEL_REPEATED else [value]):
                changed = _absolute_models(item, root) or changed
        elif (field.type == field.TYPE_STRING and field.label != field.LABEL_REPEATED
              and value.startswith("mediapipe/") and value.endswith(".tflite")):
            setattr(message, field.name, os.path.join(root, value))
            changed = True
    return changed


def detect_faces(image: np.ndarray) -> list[np.ndarray]:
    """All faces in an RGB uint8 image as (478, 3) float arrays, the largest first (empty list when none).

    FaceMesh on the whole photo (its own detector sees faces that fill much of it: a portrait's points stay exactly
    what they were before small faces were looked for); then the full-range detector finds face boxes at any scale
    (avatar.face.detect), and FaceMesh reads the enlarged crop of each box no whole-photo face covers."""
    # the whole search inside one quiet window: a graph's calculators open on its own threads after it is built,
    # so a line can land between the construction and the first run
    with _mediapipe_lock, quiet_native_logs:
        faces = _whole_photo_meshes(image)
        for box in detect.find_boxes(image, _detector_boxes):
            if not any(_covers(face, box) for face in faces):
                face = _mesh_in_box(image, box)
                if face is not None:
                    faces.append(face)
    return _distinct(faces)[:MAX_FACES]


def _whole_photo_meshes(image: np.ndarray) -> list[np.ndarray]:
    """FaceMesh on the photo scaled to at most detect.CROP_MAX_SIDE, in photo pixels."""
    h, w = image.shape[:2]
    scale = min(1.0, detect.CROP_MAX_SIDE / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                  interpolation=cv2.INTER_AREA)
    faces = _mesh_points(np.ascontiguousarray(small))
    for pts in faces:  # pixel-index coordinates of the copy -> of the photo, as the copy's edges are the photo's
        pts[:, :2] = (pts[:, :2] + 0.5) / scale - 0.5
        pts[:, 2] /= scale
    return faces


def _covers(face: np.ndarray, box: detect.FaceBox) -> bool:
    """Whether a found mesh is the face in a detector box (the box's centre lies inside the mesh)."""
    (x0, y0), (x1, y1) = face[:, :2].min(0), face[:, :2].max(0)
    cx, cy = box.center
    return x0 <= cx <= x1 and y0 <= cy <= y1


def _detector_boxes(image: np.ndarray) -> list[detect.FaceBox]:
    """The full-range detector's boxes on an RGB image, in its pixel-index coordinates."""
    h, w = image.shape[:2]
    boxes = []
    for d in _face_finder().process(image).detections or []:
        b = d.location_data.relative_bounding_box
        x0, y0 = b.xmin * w - 0.5, b.ymin * h - 0.5
        boxes.append(detect.FaceBox(x0, y0, x0 + b.width * w, y0 + b.height * h, float(d.score[0])))
    return boxes


def _mesh_points(image: np.ndarray) -> list[np.ndarray]:
    """FaceMesh's faces on an RGB image, in its pixel-index coordinates."""
    h, w = image.shape[:2]
    result = _face_mesh().process(image)
    faces = []
    for face in result.multi_face_landmarks or []:
        pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float64)
        pts[:, :2] -= 0.5  # normalised coordinates -> pixel-index coordinates
        faces.append(pts)
    return faces


def _mesh_in_box(image: np.ndarray, box: detect.FaceBox) -> np.ndarray | None:
    """FaceMesh on the crop around one detector box: the face nearest the box's centre, in photo pixels;
    None when FaceMesh sees no face there (the detector's box was not one)."""
    transform, side = detect.crop_transform(box)
    faces = _mesh_points(detect.crop(image, transform, side))
    if not faces:
        return None
    centre = np.array([side / 2, side / 2])
    nearest = min(faces, key=lambda p: np.linalg.norm(p[:, :2].mean(0) - centre))
    return detect.to_photo(nearest, transform)


def _extent(points: np.ndarray) -> detect.FaceBox:
    (x0, y0), (x1, y1) = points[:, :2].min(0), points[:, :2].max(0)
    return detect.FaceBox(x0, y0, x1, y1, 1.0)


def _distinct(faces: list[np.ndarray]) -> list[np.ndarray]:
    """One mesh per face (two boxes can lead to one face), the largest first (by the mesh's width x height)."""
    faces = sorted(faces, key=lambda p: -np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
    kept: list[np.ndarray] = []
    for face in faces:
        if all(detect.iou(_extent(face), _extent(k)) <= SAME_FACE_IOU for k in kept):
            kept.append(face)
    return kept


def eye_centers(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    right = points[list(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER), :2].mean(0)
    left = points[list(LEFT_EYE_UPPER + LEFT_EYE_LOWER), :2].mean(0)
    return right, left


def normalize(points: np.ndarray) -> np.ndarray:
    """Similarity-normalise a face: eye centres to (-0.5, 0) and (0.5, 0); z scaled alike."""
    r, l = eye_centers(points)
    d = l - r
    scale = 1.0 / np.hypot(*d)
    c, s = d * scale
    rot = np.array([[c, s], [-s, c]])
    out = np.empty((len(points), 3))
    out[:, :2] = (points[:, :2] - (r + l) / 2) @ rot.T * scale
    out[:, 2] = (points[:, 2] - points[:, 2].mean()) * scale
    return out


def make_template(faces: list[np.ndarray]) -> np.ndarray:
    """A generic, left-right symmetric face from real detections (how assets/face_template.npy was made)."""
    mean = np.mean([normalize(f) for f in faces], axis=0)
    mirrored = mean * np.array([-1.0, 1.0, 1.0])
    # each point's mirror partner is the nearest point of the mirrored mesh (FaceMesh topology is symmetric)
    dist = np.linalg.norm(mean[:, None, :2] - mirrored[None, :, :2], axis=2)
    partner = dist.argmin(axis=1)
    return ((mean + mirrored[partner]) / 2).astype(np.float32)


def load_template() -> np.ndarray:
    path = assets_dir() / TEMPLATE_FILE
    return np.load(path, allow_pickle=False).astype(np.float64)


def template_handles(template: np.ndarray | None = None) -> dict[str, np.ndarray]:
    t = load_template() if template is None else template
    return {name: t[list(idx), :2].mean(0) for name, idx in HANDLES.items()}


def default_handles(image_shape: tuple[int, int]) -> dict[str, tuple[float, float]]:
    """Starting handle positions for manual placement: the template centred in the image, a third of its width."""
    h, w = image_shape[:2]
    t = template_handles()
    pts = np.array(list(t.values()))
    scale = 0.45 * min(w, h) / max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]))
    center = pts.mean(0)
    return {k: (float(w / 2 + (v[0] - center[0]) * scale), float(h / 2 + (v[1] - center[1]) * scale))
            for k, v in t.items()}


def fit_template(handles: Mapping[str, tuple[float, float]], template: np.ndarray | None = None) -> np.ndarray:
    """478 landmarks (x, y, z) fitted to hand-placed handles (names from HANDLE_NAMES; at least 3, e.g. eyes and chin).

    A least-squares affine map places the template; a smooth radial-basis correction then moves it so that every
    handle lands exactly where it was put (drawings may have bigger eyes or a smaller mouth than the template).
    """
    t = load_template() if template is None else template
    ref = template_handles(t)
    names = [n for n in handles if n in ref]
    unknown = sorted(set(handles) - set(ref))
    if unknown:
        raise ValueError(f"Unknown handle names {unknown}; expected some of {list(HANDLE_NAMES)}.")
    if len(names) < 3:
        raise ValueError("Place at least three handles (for example both eyes and the chin).")
    src = np.array([ref[n] for n in names])
    dst = np.array([handles[n] for n in names], np.float64)
    if not np.all(np.isfinite(dst)):
        raise ValueError("Handle positions must be finite numbers.")
    a = np.hstack([src, np.ones((len(src), 1))])
    affine, *_ = np.linalg.lstsq(a, dst, rcond=None)  # (3, 2)
    if abs(np.linalg.det(affine[:2])) < 1e-9:
        raise ValueError("The handles are on one line; place them where the eyes, mouth and chin are.")
    out = np.empty((len(t), 3))
    out[:, :2] = np.hstack([t[:, :2], np.ones((len(t), 1))]) @ affine
    scale = np.sqrt(abs(np.linalg.det(affine[:2])))
    out[:, 2] = t[:, 2] * scale
    residual = dst - a @ affine
    if len(names) > 3:
        # Gaussian RBF interpolation of the residuals, in template units (eye distance 1)
        sigma = 0.35
        k = np.exp(-np.sum((src[:, None] - src[None]) ** 2, -1) / (2 * sigma**2))
        coef = np.linalg.solve(k + 1e-6 * np.eye(len(src)), residual)
        kt = np.exp(-np.sum((t[:, None, :2] - src[None]) ** 2, -1) / (2 * sigma**2))
        out[:, :2] += kt @ coef
    return out


def face_boxes(image: np.ndarray) -> list[detect.FaceBox]:
    """The full-range detector's face boxes in an RGB photo at any scale, the largest first, FaceMesh or not: where
    manual placement starts when FaceMesh could not read a face (a drawing, a mask, a blurred face)."""
    with _mediapipe_lock:
        return detect.find_boxes(image, _detector_boxes)
