"""Where the faces are: boxes at any scale from a face detector run over a photo and over overlapping tiles of it,
merged, and the enlarged (upscaled when small) crop around each box that FaceMesh then reads.

Pure geometry: the MediaPipe objects live in avatar.face.landmarks, which passes its detector in as a function.
Coordinates are pixel-index coordinates of the photo (pixel i spans i-0.5..i+0.5), as in avatar.face.landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

SMALLEST_TILE = 512  # finest tiles: a 40 px face is 15 px of the full-range detector's 192 px input (found from ~11)
TILE_OVERLAP = 0.25  # of a tile's side: faces too small for the next coarser level (< ~90 px there) fit whole in one
SAME_FACE_IOU = 0.3  # boxes overlapping more than this are one face (the more confident box is kept)
PAINT_SAMPLE = 8  # the fill colour is the photo's mean over every 8th pixel each way
MAX_TILE_RUNS = 3  # a tile is searched again, its new faces painted out, at most this often
CROP_FACTOR = 2.4  # a crop's side in detector-box sides: FaceMesh's own short-range detector wants the face to fill
# about half the crop, with the forehead, chin and ears inside
CROP_MIN_SIDE = 384  # smaller crops are upscaled to this: FaceMesh's detector looks at 128 px, its mesh at 192 px
CROP_MAX_SIDE = 1280  # larger crops are downscaled (FaceMesh gains nothing from more pixels; detection was capped
# at this size before crops existed)


@dataclass(frozen=True)
class FaceBox:
    """A detector's face box in photo pixels (x0, y0 top-left, x1, y1 bottom-right) and its confidence."""
    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def side(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


# a detector: RGB uint8 image -> boxes in that image's pixels
Detector = Callable[[np.ndarray], Sequence[FaceBox]]


def tile_sides(width: int, height: int, smallest: int = SMALLEST_TILE) -> list[int]:
    """Tile sides from the whole photo (its longer side) down, halving, to `smallest`."""
    longest = max(width, height)
    sides = []
    side = smallest
    while side < longest:
        sides.append(side)
        side *= 2
    return [longest] + sides[::-1]


def tile_starts(length: int, side: int, overlap: float = TILE_OVERLAP) -> list[int]:
    """Offsets of tiles of `side` covering 0..length with at least `overlap` * side shared by neighbours."""
    if side >= length:
        return [0]
    stride = side * (1.0 - overlap)
    count = int(np.ceil((length - side) / stride)) + 1
    return [int(round(v)) for v in np.linspace(0, length - side, count)]


def tiles(width: int, height: int, smallest: int = SMALLEST_TILE) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of every tile at every level, coarsest first (the whole photo)."""
    out = []
    for side in tile_sides(width, height, smallest):
        for y0 in tile_starts(height, side):
            for x0 in tile_starts(width, side):
                out.append((x0, y0, min(width, x0 + side), min(height, y0 + side)))
    return out


def iou(a: FaceBox, b: FaceBox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter)


def merge_boxes(boxes: Sequence[FaceBox], same_face_iou: float = SAME_FACE_IOU) -> list[FaceBox]:
    """One box per face (non-maximum suppression: the most confident of overlapping boxes), largest first."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(iou(box, k) <= same_face_iou for k in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: -b.side)


def find_boxes(image: np.ndarray, detector: Detector, smallest: int = SMALLEST_TILE) -> list[FaceBox]:
    """Face boxes in an RGB photo at any scale, largest first: the detector over every tile (see `tiles`), coarse
    to fine, with the faces already found painted out of each tile, and each tile run again while it finds new ones.

    Painting out is needed because the full-range detector misses a small face beside a large one in the same
    image (a 60 px face next to a 300 px one in a 512 px tile), and finds it once the large one is gone."""
    h, w = image.shape[:2]
    fill = image[::PAINT_SAMPLE, ::PAINT_SAMPLE].reshape(-1, image.shape[2]).mean(0).astype(np.uint8)
    found: list[FaceBox] = []
    for x0, y0, x1, y1 in tiles(w, h, smallest):
        for _ in range(MAX_TILE_RUNS):
            tile = _painted_out(image[y0:y1, x0:x1], found, x0, y0, fill)
            new = [FaceBox(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score) for b in detector(tile)]
            new = [b for b in new if all(iou(b, f) <= SAME_FACE_IOU for f in found)]
            if not new:
                break
            found += merge_boxes(new)
    return merge_boxes(found)


def _painted_out(tile: np.ndarray, boxes: Sequence[FaceBox], x0: int, y0: int, fill: np.ndarray) -> np.ndarray:
    """A contiguous copy of the tile with every box (photo coordinates) in it filled with `fill`."""
    out = np.ascontiguousarray(tile)
    h, w = out.shape[:2]
    copied = not np.may_share_memory(out, tile)  # a strided tile was copied already; never paint the photo
    for b in boxes:
        bx0, by0 = max(0, int(b.x0 - x0)), max(0, int(b.y0 - y0))
        bx1, by1 = min(w, int(np.ceil(b.x1 - x0)) + 1), min(h, int(np.ceil(b.y1 - y0)) + 1)
        if bx0 < bx1 and by0 < by1:
            if not copied:
                out, copied = out.copy(), True
            out[by0:by1, bx0:bx1] = fill
    return out


def crop_transform(box: FaceBox, factor: float = CROP_FACTOR, min_side: int = CROP_MIN_SIDE,
                   max_side: int = CROP_MAX_SIDE) -> tuple[np.ndarray, int]:
    """The 2x3 affine (photo pixel-index coordinates -> crop's) of the square crop around `box`, and the crop's side.

    The crop is `factor` box sides wide, centred on the box, scaled to between min_side and max_side pixels;
    unscaled crops start on a whole pixel, so their pixels are the photo's own."""
    cx, cy = box.center
    side = box.side * factor
    scale = min_side / side if side < min_side else min(1.0, max_side / side)
    out = int(round(side * scale))
    if scale == 1.0:
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        return np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), out
    # pixel edges map to pixel edges: (x_crop + 0.5) = scale * (x + 0.5 - left)
    left, top = cx - side / 2, cy - side / 2
    return np.array([[scale, 0.0, scale * (0.5 - left) - 0.5], [0.0, scale, scale * (0.5 - top) - 0.5]]), out


def crop(image: np.ndarray, transform: np.ndarray, side: int) -> np.ndarray:
    """The crop `transform` describes; parts outside the photo (a face cut by its edge) repeat its border pixels."""
    scale = transform[0, 0]
    if scale == 1.0:  # a plain sub-array, padded where it leaves the photo
        x0, y0 = int(-transform[0, 2]), int(-transform[1, 2])
        h, w = image.shape[:2]
        inner = image[max(0, y0):max(0, min(h, y0 + side)), max(0, x0):max(0, min(w, x0 + side))]
        if inner.size == 0:
            return np.zeros((side, side, 3), np.uint8)
        pad = (max(0, -y0), side - inner.shape[0] - max(0, -y0), max(0, -x0), side - inner.shape[1] - max(0, -x0))
        return np.ascontiguousarray(cv2.copyMakeBorder(inner, *pad, cv2.BORDER_REPLICATE) if any(pad) else inner)
    if scale < 1:  # shrink the whole photo by area averaging (warpAffine cannot), then cut the crop from it
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / w, small.shape[0] / h  # resize maps x to (x + 0.5) * sx - 0.5
        m = np.array([[scale / sx, 0.0, scale * (0.5 / sx - 0.5) + transform[0, 2]],
                      [0.0, scale / sy, scale * (0.5 / sy - 0.5) + transform[1, 2]]])
        return cv2.warpAffine(small, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(image, transform, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_photo(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Landmarks (x, y, z) found on a crop mapped back to photo pixels (z scales with x and y)."""
    scale = transform[0, 0]
    out = np.array(points, np.float64, copy=True)
    out[:, 0] = (out[:, 0] - transform[0, 2]) / scale
    out[:, 1] = (out[:, 1] - transform[1, 2]) / scale
    out[:, 2] /= scale
    return out
