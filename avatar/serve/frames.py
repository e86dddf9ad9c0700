"""The browser source's frames on the wire: JPEG colour plus the person's alpha matte, sent once per face.

The face's matte is still while it talks (the renderer warps inside it: avatar.face.assemble.BackgroundFill), so
the page gets it once as an RGBA PNG and masks each JPEG frame with it ('destination-in' on its canvas): a 512²
frame costs ~1 ms to encode, where an RGBA PNG or WebP of it took 60-150 ms here (README: Browser source).

Each binary message is HEADER (little-endian) + payload:
    kind u8 (KIND_*), 3 pad bytes, seq u32, mask id u32 (0: opaque), width u16, height u16, sent f64
where sent is the wall clock (ms since 1970) the frame was ready in the app: the page compares it with its own
performance.timeOrigin + performance.now() when it paints, on the same machine's clock."""
from __future__ import annotations

import struct
import time

import cv2
import numpy as np

HEADER = struct.Struct("<BxxxIIHHd")
KIND_MASK = 1  # payload: RGBA PNG whose alpha is the matte
KIND_JPEG = 2  # payload: JPEG frame
KIND_RAW = 3  # payload: raw RGBA frame (the measured alternative: ?codec=raw)
JPEG_QUALITY = 90
CODECS = ("jpeg", "raw")


def wall_ms(monotonic_time: float) -> float:
    """A time.monotonic() instant on the wall clock, in ms since 1970 (what a browser's clock reads)."""
    return (time.time() - (time.monotonic() - monotonic_time)) * 1000.0


def header(kind: int, seq: int, mask_id: int, width: int, height: int, sent_ms: float) -> bytes:
    return HEADER.pack(kind, seq & 0xFFFFFFFF, mask_id, width, height, sent_ms)


def encode_jpeg(image: np.ndarray) -> bytes:
    """HxWx3 RGB uint8 -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    return data.tobytes()


def encode_mask(alpha: np.ndarray) -> bytes:
    """HxW uint8 alpha -> an RGBA PNG (white, that alpha): what the page masks frames with."""
    white = np.full(alpha.shape, 255, np.uint8)
    ok, data = cv2.imencode(".png", np.dstack([white, white, white, alpha]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("the matte could not be encoded as PNG")
    return data.tobytes()


def raw_rgba(image: np.ndarray, alpha: np.ndarray | None) -> bytes:
    a = np.full(image.shape[:2], 255, np.uint8) if alpha is None else alpha
    return np.dstack([image, a]).tobytes()


def person_alpha(renderer) -> np.ndarray | None:
    """Slow the first time for a photo shown on its own background (runs the person segmenter): the HxW uint8
    alpha of the person in the renderer's frames, None for a renderer without a face (the blank square: opaque).
    A background fill (colour, green screen) already holds its matte; otherwise the photo's is made here the
    same way (avatar.face.assemble.matte of person_mask)."""
    mask = getattr(renderer, "mask", None)
    if mask is None:
        rig = getattr(renderer, "rig", None)
        if rig is None:
            return None
        from avatar.face.assemble import matte, person_mask  # mediapipe: only for a photo's own background

        mask = matte(person_mask(rig.image))
    return (np.asarray(mask, np.float32)[..., 0] * 255 + 0.5).astype(np.uint8)
