"""Photo loading: any common image file (or array) -> RGB uint8, upright, of bounded size; canvas cropping."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from avatar.face.landmarks import eye_centers

MAX_SIDE = 2048  # larger photos are downscaled: landmarks and rendering gain nothing from more pixels
MIN_SIDE = 32  # smaller than this cannot hold a usable face
MAX_FILE_PIXELS = 200_000_000  # refused by the header's size, before decoding: a decompression bomb (a 1 MB
# one-colour PNG can claim 20000x20000), yet every camera's photo fits (a 200 MP phone sensor is 16320x12240)
EXIF_ORIENTATION = 0x0112
# how to turn each EXIF orientation upright (what PIL.ImageOps.exif_transpose does, applied after shrinking)
UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
           7: "TRANSVERSE", 8: "ROTATE_90"}
BACKDROP_RGB = (236, 236, 236)  # transparent pixels are shown over this light grey
PORTRAIT_FACE_FRACTION = 0.42  # in the default portrait crop the face (brow to chin) is this much of the height
PORTRAIT_CENTER_SHIFT = 0.08  # crop centre sits this many crop-heights below the face centre (shows the neck)
# wide (16:9) frames: the head-room rules of a talking-head shot
WIDE_EYE_LINE = 1 / 3  # the eyes on the upper third line
WIDE_EYE_LINE_RANGE = (0.27, 0.42)  # the crop may slide to stay inside the photo while the eyes stay in this band
WIDE_CENTRE_SHIFT = 0.12  # ... and the face's centre within this share of the width from the middle
WIDE_MAX_FACE_FRACTION = 0.5  # the crop narrows to fit the photo only until the face is this share of its height
WIDE_MIN_HEADROOM = 0.12  # of the height between the frame's top and the mesh's top (the hairline): the hair
PAD_BLUR_SHRINK = 8  # padding: the enlarged photo is blurred at 1/8 scale (a 32 px blur costs a 4 px one)
PAD_BLUR_SIGMA = 4.0  # pixels at that scale
PAD_DIM = 0.8  # the padding a little darker than the photo, so the photo reads as the picture
PAD_FEATHER = 24  # output pixels over which the photo's own edge fades into the blurred padding

PhotoSource = Union[str, os.PathLike, bytes, np.ndarray]

# Pillow warns of a possible decompression bomb before _check_pixels refuses the same photo with a clearer message
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class PhotoError(ValueError):
    """A photo that cannot be used, with a sentence a user can act on."""


def load_photo(source: PhotoSource, max_side: int = MAX_SIDE) -> np.ndarray:
    """Read a photo (path, encoded bytes or array) as an upright RGB uint8 array, downscaled to max_side."""
    if isinstance(source, np.ndarray):
        image = _array_to_rgb(source, "the given array")
    elif isinstance(source, (bytes, bytearray)):
        image = _decode(bytes(source), "the given bytes", max_side)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise PhotoError(f"Photo not found: {path}")
        if path.is_dir():
            raise PhotoError(f"{path} is a folder, not a photo.")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise PhotoError(f"Cannot read {path}: {e.strerror or e}") from e
        image = _decode(data, path.name, max_side)
    else:
        raise PhotoError(f"A photo must be a file path, bytes or an image array, not {type(source).__name__}.")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise PhotoError(f"The photo is only {w}x{h} pixels; it needs at least {MIN_SIDE} on each side.")
    scale = max_side / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _decode(data: bytes, name: str, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode with Pillow: the size is checked from the header first, and big photos are shrunk while (JPEG) or
    right after decoding, before any conversion copies them, so memory stays near one decoded copy."""
    if not data:
        raise PhotoError(f"{name} is empty.")
    Image.MAX_IMAGE_PIXELS = MAX_FILE_PIXELS  # Pillow's own check stays as a backstop (it trips at twice this)
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            _check_pixels(im.size, name)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
                _check_pixels(im.size, name)
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale where that still gives max_side
                scale = max_side / max(im.size)
                if scale < 0.5:
                    im.draft(im.mode, (int(np.ceil(im.size[0] * scale)), int(np.ceil(im.size[1] * scale))))
            im.load()
            im = _shrink(im, max_side)
            if orientation in UPRIGHT:
                im = im.transpose(getattr(Image.Transpose, UPRIGHT[orientation]))
            return _pil_to_rgb(im, name)
    except PhotoError:
        raise
    except UnidentifiedImageError:
        pass  # maybe OpenCV can (e.g. some 16-bit TIFF variants); below
    except Image.DecompressionBombError as e:
        raise PhotoError(f"{name} is too large to open safely ({e}).") from e
    except (OSError, ValueError, SyntaxError) as e:
        fallback = _decode_cv2(data)
        if fallback is not None:
            return fallback
        raise PhotoError(f"{name} is damaged or in an unsupported variant of its format ({e}).") from e
    fallback = _decode_cv2(data)
    if fallback is not None:
        return fallback
    raise PhotoError(f"{name} is not an image this app can read (supported: JPEG, PNG, WebP, BMP, TIFF, GIF).")


def _check_pixels(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w * h > MAX_FILE_PIXELS:
        raise PhotoError(f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); photos of up to "
                         f"{MAX_FILE_PIXELS / 1e6:.0f} megapixels can be opened. Scale it down first.")


def _shrink(im, max_side: int):
    """A decoded image over max_side scaled down by Pillow at once (box filter: area averaging, as load_photo's
    own INTER_AREA), so the conversions after it work on the small copy. Palette and 1-bit images (which Pillow
    would resize by nearest neighbour), modes it cannot resize, and shapes that would end up under MIN_SIDE are
    left to load_photo as before."""
    w, h = im.size
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # what load_photo's resize gives
    if scale >= 1 or min(size) < MIN_SIDE or im.mode in ("1", "P", "PA"):
        return im
    try:
        return im.resize(size, Image.Resampling.BOX)
    except ValueError:
        return im


def _decode_cv2(data: bytes) -> np.ndarray | None:
    buf = np.frombuffer(data, np.uint8)
    try:
        im = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        return None
    if im is None:
        return None
    if im.ndim == 3 and im.shape[2] == 3:
        im = im[..., ::-1]
    elif im.ndim == 3 and im.shape[2] == 4:
        im = im[..., [2, 1, 0, 3]]
    return _array_to_rgb(im, "the photo")


def _pil_to_rgb(im, name: str) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return _array_to_rgb(np.asarray(im), name)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(im), name)  # high-bit-depth grey: scaled by its own range below
    if mode in ("P", "PA"):
        return _array_to_rgb(np.asarray(im.convert("RGBA")), name)
    # CMYK, YCbCr, LAB, HSV, 1: Pillow's own conversions are right for these
    return _array_to_rgb(np.asarray(im.convert("RGB")), name)


def _array_to_rgb(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise PhotoError(f"{name} has shape {a.shape}; expected HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA).")
    a = _to_uint8(a, name)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        back = np.array(BACKDROP_RGB, np.float32)
        a = (a[..., :3].astype(np.float32) * alpha + back * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32))
        hi = float(a.max()) if a.size else 1.0
        scale = 255.0 if hi <= 1.0 + 1e-6 else 255.0 / hi
        return np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        hi = int(a.max()) if a.size else 255
        if hi <= 255:
            return np.clip(a, 0, 255).astype(np.uint8)
        bits = 16 if hi < 65536 else 32
        return np.clip(a.astype(np.float64) / (2**bits - 1) * 255 + 0.5, 0, 255).astype(np.uint8)
    raise PhotoError(f"{name} has pixel type {a.dtype}, which is not an image type.")


def portrait_crop_box(points: np.ndarray, image_shape: tuple[int, int],
                      aspect: float = 1.0) -> tuple[float, float, float]:
    """A crop (centre x, centre y, height) framing the face: a portrait for square and tall frames (kept inside the
    photo), the head-room rules of video for wide ones (wide_crop_box)."""
    if aspect > 1.0:
        return wide_crop_box(points, image_shape, aspect)
    h, w = image_shape
    x0, y0 = points[:, 0].min(), points[:, 1].min()
    x1, y1 = points[:, 0].max(), points[:, 1].max()
    face_h = _face_height(points)
    crop_h = face_h / PORTRAIT_FACE_FRACTION
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + PORTRAIT_CENTER_SHIFT * crop_h
    crop_h = min(crop_h, h, w / aspect)  # never larger than the photo: no invented borders
    crop_w = crop_h * aspect
    cx = float(np.clip(cx, crop_w / 2 - 0.5, w - crop_w / 2 - 0.5))
    cy = float(np.clip(cy, crop_h / 2 - 0.5, h - crop_h / 2 - 0.5))
    return cx, cy, float(crop_h)


def _face_height(points: np.ndarray) -> float:
    """Brow to chin, or the width's share of it for a face wider than tall (a turned or squashed mesh)."""
    return float(max(np.ptp(points[:, 1]), np.ptp(points[:, 0]) * 1.1, 8.0))


def wide_crop_box(points: np.ndarray, image_shape: tuple[int, int], aspect: float) -> tuple[float, float, float]:
    """A wide video frame (16:9) around a face, as camera operators frame a talking head: the face as large as in
    the portrait crop, the eyes a third down from the top, the face centred across, room kept above the head.

    Where the photo ends inside that frame the crop slides back into it, but only while the eyes stay within
    WIDE_EYE_LINE_RANGE and the face within WIDE_CENTRE_SHIFT of the middle; it is narrowed (the face made larger)
    only down to WIDE_MAX_FACE_FRACTION. What still lies outside the photo is padded by warp_to_canvas."""
    h, w = image_shape
    face_h = _face_height(points)
    top = float(points[:, 1].min())  # the mesh's top: the hairline
    eye_y = float(np.mean([c[1] for c in eye_centers(points)]))
    face_cx = float(points[:, 0].min() + points[:, 0].max()) / 2
    fits = min(h, w / aspect)  # the tallest crop of this aspect inside the photo
    crop_h = min(face_h / PORTRAIT_FACE_FRACTION, max(fits, face_h / WIDE_MAX_FACE_FRACTION))
    crop_w = crop_h * aspect
    # the eye line's band, its top raised where the head would come too near the frame's top edge
    lo = max(WIDE_EYE_LINE_RANGE[0], (eye_y - top) / crop_h + WIDE_MIN_HEADROOM)
    hi = max(WIDE_EYE_LINE_RANGE[1], lo)
    ideal = max(WIDE_EYE_LINE, lo)
    # the crop's centre y for an eye line at fraction f of the height: eye_y - f * crop_h + crop_h / 2
    cy = _slide(eye_y + (0.5 - ideal) * crop_h, (ideal - lo) * crop_h, (hi - ideal) * crop_h, crop_h, h)
    shift = WIDE_CENTRE_SHIFT * crop_w
    cx = _slide(face_cx, shift, shift, crop_w, w)
    return cx, cy, float(crop_h)


def _slide(ideal: float, down: float, up: float, extent: float, limit: float) -> float:
    """A crop's centre along one axis: `ideal`, moved by at most `down` below it or `up` above it towards the
    position that keeps a crop of `extent` inside the photo's 0..limit; `ideal` when the photo is shorter than the
    crop (it is padded either way, so the face keeps its place)."""
    lo, hi = extent / 2 - 0.5, limit - extent / 2 - 0.5  # pixel-index coordinates: the photo spans -0.5..limit-0.5
    inside = float(np.clip(ideal, lo, hi)) if lo <= hi else ideal
    return float(np.clip(inside, ideal - down, ideal + up))


def crop_affine(center: tuple[float, float], crop_h: float, out_size: tuple[int, int]) -> np.ndarray:
    """2x3 affine that maps photo pixels to output pixels for a crop of height crop_h around center."""
    out_w, out_h = out_size
    s = out_h / crop_h
    cx, cy = center
    # pixel-index coordinates: the crop centre lands on the output centre
    return np.array([[s, 0, (out_w - 1) / 2 - s * cx], [0, s, (out_h - 1) / 2 - s * cy]], np.float64)


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    out = points.astype(np.float64).copy()
    out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
    if out.shape[1] > 2:
        out[:, 2] = points[:, 2] * m[0, 0]  # depth scales with the image
    return out


def warp_to_canvas(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The photo warped by `m` onto an out_size (w, h) canvas. Where the canvas reaches past the photo (a wide frame
    around a face in a tall or tight photo) it is padded as phone video apps pad a tall clip: the photo enlarged to
    cover the canvas, blurred and dimmed, behind it; the photo's own edge fades into it over PAD_FEATHER pixels (no
    smeared edge rows, no hard border, no mirrored second face)."""
    frame = _warp(image, m, out_size, cv2.BORDER_REPLICATE)
    outside = _outside_distance(m, image.shape[:2], out_size)
    if outside.max() < 1.0:  # within a pixel of the photo (rounding): nothing to pad
        return frame
    alpha = np.clip(outside / PAD_FEATHER, 0.0, 1.0)[..., None]
    return (frame * (1.0 - alpha) + _backdrop(image, out_size) * alpha + 0.5).astype(np.uint8)


def _backdrop(image: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) float32: the photo scaled to cover the canvas (centred), blurred and dimmed by PAD_DIM."""
    w, h = out_size
    sw, sh = max(1, w // PAD_BLUR_SHRINK), max(1, h // PAD_BLUR_SHRINK)
    ih, iw = image.shape[:2]
    s = max(sw / iw, sh / ih)
    cover = cv2.resize(image, (max(sw, round(iw * s)), max(sh, round(ih * s))), interpolation=cv2.INTER_AREA)
    y0, x0 = (cover.shape[0] - sh) // 2, (cover.shape[1] - sw) // 2
    small = cv2.GaussianBlur(cover[y0:y0 + sh, x0:x0 + sw], (0, 0), PAD_BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) * PAD_DIM


def _outside_distance(m: np.ndarray, image_shape: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32: how many output pixels each canvas pixel lies beyond the photo's edge (0 inside it)."""
    ih, iw = image_shape
    w, h = out_size
    s, tx, ty = m[0, 0], m[0, 2], m[1, 2]
    left, right = s * -0.5 + tx, s * (iw - 0.5) + tx  # the photo's edges (pixel-index coordinates) on the canvas
    top, bottom = s * -0.5 + ty, s * (ih - 0.5) + ty
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    dx = np.maximum(np.maximum(left - xs, xs - right), 0.0)
    dy = np.maximum(np.maximum(top - ys, ys - bottom), 0.0)
    return np.maximum(dx[None, :], dy[:, None])


def _warp(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int], border: int) -> np.ndarray:
    shrink = 1.0 / m[0, 0]
    if shrink > 1.5:  # area-average first: a plain bilinear downscale aliases hair and fabric
        small = cv2.resize(image, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_AREA)
        sx = image.shape[1] / small.shape[1]
        sy = image.shape[0] / small.shape[0]
        pre = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        m = (np.vstack([m, [0, 0, 1]]) @ pre)[:2]
        image = small
    return cv2.warpAffine(image, m, out_size, flags=cv2.INTER_LINEAR, borderMode=border)
