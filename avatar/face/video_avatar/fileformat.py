"""The avatar file: a NumPy .npz archive (arrays only, read with allow_pickle=False) holding the base loop and the
mouth library as JPEG bytes plus their geometry, and a JSON metadata record with the format's name and version."""
from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avatar.face.video_avatar import AvatarFileError

FORMAT = "talking-avatar/video-avatar"
VERSION = 1
JPEG_QUALITY = 93
DECODE_THREADS = 2  # the file's JPEGs decode on this many threads (the load must stay under a second)
ARRAYS = {  # name: (dtype kind, number of dimensions); the geometry every renderer needs
    "base_jpeg": ("u", 1), "base_offsets": ("i", 1), "base_canon": ("f", 3),
    "lib_jpeg": ("u", 1), "lib_offsets": ("i", 1), "lib_inner": ("f", 3), "lib_outer": ("f", 3),
    "lib_opening": ("f", 1), "lib_width": ("f", 1), "lib_teeth": ("f", 1), "lib_frames": ("i", 1),
    "rest_points": ("f", 2), "template": ("f", 2), "lib_pose": ("f", 2), "base_points": ("f", 3),
}
OPTIONAL = {"base_matte_png": ("u", 1), "base_matte_offsets": ("i", 1)}  # the base frames' person mattes
META_KEYS = ("format", "version", "fps", "canvas", "crop", "base_frames", "source")


@dataclass
class AvatarData:
    meta: dict
    base: "LazyImages"  # the base loop's frames, RGB uint8 (canvas x canvas), decoded on demand
    base_canon: np.ndarray  # (B, 2, 3) canvas pixels -> canonical
    crops: np.ndarray  # (N, h, w, 3) uint8 RGB: each library mouth in the canonical crop
    inner: np.ndarray  # (N, 20, 2) canonical inner-lip contour (avatar.face.landmarks.LIP_INNER order)
    outer: np.ndarray  # (N, 20, 2) outer lip (LIP_OUTER order)
    opening: np.ndarray  # (N,) |13-14|, eye distances
    width: np.ndarray  # (N,) |61-291|
    teeth: np.ndarray  # (N,) share of the inner mouth that shows teeth
    frames: np.ndarray  # (N,) the video frame each library mouth came from
    rest_points: np.ndarray  # (478, 2) canonical points of the rest (quiet) face
    template: np.ndarray  # stable points' canonical positions
    pose: np.ndarray  # (N, 2) canonical nose tip of each library mouth's frame (how the head is turned)
    base_points: np.ndarray  # (B, 478, 2) canonical points of each base frame
    base_mattes: "LazyImages | None" = None  # each base frame's person matte (uint8, canvas x canvas), if stored


def encode_images(images: list[np.ndarray], kind: str = ".jpg") -> tuple[np.ndarray, np.ndarray]:
    """RGB images (JPEG) or one-channel ones (kind ".png": lossless) -> (bytes concatenated, offsets (n+1,))."""
    blobs = []
    for image in images:
        if kind == ".png":
            ok, buf = cv2.imencode(".png", image)
        else:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        blobs.append(buf.reshape(-1))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return (np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)), offsets


def decode_images(blob: np.ndarray, offsets: np.ndarray, what: str, path) -> list[np.ndarray]:
    """The images of encode_images, decoded on DECODE_THREADS threads (OpenCV lets go of the GIL)."""
    spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
    if any(not 0 <= a < b <= len(blob) for a, b in spans):
        raise AvatarFileError(f"{path}: damaged avatar file ({what} out of range)")

    def one(span):
        image = cv2.imdecode(blob[span[0]:span[1]], cv2.IMREAD_COLOR)
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        out = list(pool.map(one, spans))
    if any(image is None for image in out):
        raise AvatarFileError(f"{path}: damaged avatar file (a {what} image does not decode)")
    return out


class LazyImages:
    """The base loop's frames, decoded when first asked for (the largest part of the file: a renderer decodes them
    in the background after a fast load). Sequence of RGB uint8 images; a frame that does not decode raises
    AvatarFileError."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, what: str, path, gray: bool = False):
        spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
        if any(not 0 <= a < b <= len(blob) for a, b in spans):
            raise AvatarFileError(f"{path}: damaged avatar file ({what} out of range)")
        self.blob, self.spans, self.what, self.path, self.gray = blob, spans, what, path, gray

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, k: int) -> np.ndarray:
        a, b = self.spans[k]
        image = cv2.imdecode(self.blob[a:b], cv2.IMREAD_GRAYSCALE if self.gray else cv2.IMREAD_COLOR)
        if image is None:
            raise AvatarFileError(f"{self.path}: damaged avatar file ({self.what} {k} does not decode)")
        return image if self.gray else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def save(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write atomically (a temporary file renamed over the target)."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    record = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta_json=record, **arrays)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interruption leaves no half-written file behind
        raise


def read_meta(path: str | Path) -> dict:
    """The metadata record alone (fast: the arrays stay unread)."""
    with _open(path) as z:
        return _meta(z, path)


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise AvatarFileError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise AvatarFileError(f"{path}: not an avatar file (make one with `avatar make-avatar VIDEO -o "
                              f"{path.stem}.avatar`) ({type(e).__name__})") from e


def _meta(z, path) -> dict:
    if "meta_json" not in z.files:
        raise AvatarFileError(f"{path}: not an avatar file (no metadata record)")
    try:
        meta = json.loads(bytes(z["meta_json"]).decode())
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as e:
        raise AvatarFileError(f"{path}: damaged avatar file (unreadable metadata)") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise AvatarFileError(f"{path}: not an avatar file (format {found!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise AvatarFileError(f"{path}: avatar format version {meta.get('version')} is newer than this app reads "
                              f"({VERSION}); update the app")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise AvatarFileError(f"{path}: damaged avatar file (metadata lacks {', '.join(missing)})")
    return meta


def load(path: str | Path) -> AvatarData:
    """Read an avatar file; AvatarFileError (with the reason) for a foreign, damaged or newer one."""
    with _open(path) as z:
        meta = _meta(z, path)
        try:
            arrays = {}
            for name, (kind, ndim) in ARRAYS.items():
                if name not in z.files:
                    raise AvatarFileError(f"{path}: damaged avatar file (no {name})")
                a = z[name]
                if a.dtype.kind != kind or a.ndim != ndim:
                    raise AvatarFileError(f"{path}: damaged avatar file ({name} is {a.dtype} {a.shape})")
                arrays[name] = a
            optional = {name: z[name] for name in OPTIONAL if name in z.files}
            if any(a.dtype.kind != OPTIONAL[k][0] or a.ndim != OPTIONAL[k][1] for k, a in optional.items()):
                raise AvatarFileError(f"{path}: damaged avatar file (a matte array of the wrong kind)")
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            if isinstance(e, AvatarFileError):
                raise
            raise AvatarFileError(f"{path}: damaged avatar file ({type(e).__name__}: {e})") from e
    base = LazyImages(arrays["base_jpeg"], arrays["base_offsets"], "base frame", path)
    mattes = None
    if optional.get("base_matte_png") is not None and optional.get("base_matte_offsets") is not None:
        mattes = LazyImages(optional["base_matte_png"], optional["base_matte_offsets"], "matte", path, gray=True)
        if len(mattes) != len(base):
            raise AvatarFileError(f"{path}: damaged avatar file (its parts disagree in length)")
    crops = decode_images(arrays["lib_jpeg"], arrays["lib_offsets"], "mouth", path)
    n, b = len(crops), len(base)
    if not b or not n or arrays["base_canon"].shape != (b, 2, 3) or any(
            len(arrays[k]) != n for k in ("lib_inner", "lib_outer", "lib_opening", "lib_width", "lib_teeth",
                                          "lib_pose")) or len(arrays["base_points"]) != b:
        raise AvatarFileError(f"{path}: damaged avatar file (its parts disagree in length)")
    if len({c.shape for c in crops}) != 1 or base[0].shape != (meta["canvas"], meta["canvas"], 3):
        raise AvatarFileError(f"{path}: damaged avatar file (images of different sizes)")
    finite = all(np.isfinite(arrays[k]).all() for k in ("base_canon", "lib_inner", "lib_outer", "rest_points",
                                                         "lib_pose", "base_points"))
    if not finite:
        raise AvatarFileError(f"{path}: damaged avatar file (non-finite geometry)")
    return AvatarData(meta, base, arrays["base_canon"].astype(np.float64), np.stack(crops),
                      arrays["lib_inner"].astype(np.float32), arrays["lib_outer"].astype(np.float32),
                      arrays["lib_opening"].astype(np.float32), arrays["lib_width"].astype(np.float32),
                      arrays["lib_teeth"].astype(np.float32), arrays["lib_frames"],
                      arrays["rest_points"].astype(np.float64), arrays["template"].astype(np.float64),
                      arrays["lib_pose"].astype(np.float64), arrays["base_points"].astype(np.float64), mattes)
