"""Playback of a video avatar: a FrameRenderer (render(params, t) -> RGB frame), like the photo renderer.

Each frame: the base loop's frame for t (ping-pong), and over its mouth the mouth synthesized for the parameters:
the target lip contour (avatar.face.video_avatar.contour: the photo renderer's mapping), the K library mouths
nearest to it (contour distance, with a bonus for the mouths shown last and for the real next frame, so the choice
does not flicker; weights eased over frames), each warped onto the target contour by a thin-plate spline (on a
coarse grid, cv2.remap), blended, shifted to the base frame's skin colour (measured on the mask's feather ring) and
composited through a feathered mask, all on the small canonical mouth crop. Everything else is computed at load.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from avatar.face.expressions import ExpressionState
from avatar.face.landmarks import FACE_OVAL, NOSE_TIP
from avatar.engine import DEFAULT_MODEL
from avatar.face.shapes import DEFAULT_SHAPES, ShapeMap, shapes_for
from avatar.face.video_avatar import fileformat
from avatar.face.video_avatar.build import compose, crop_from_canon
from avatar.face.video_avatar.calibrate import calibrated
from avatar.face.video_avatar.contour import LIP_POINTS, lip_basis, motion_weights, target_lips
from avatar.face.video_avatar.track import invert_similarity

K_NEAREST = 3  # library mouths blended per frame
INNER_WEIGHT = 2.0  # the inner lips count this much more than the outer ones in the distance
STICKY_BONUS = 0.006  # distance (eye distances) taken off the mouths shown last frame...
NEXT_FRAME_BONUS = 0.004  # ...and off the real frame that followed one of them (real motion continues)
EASE = 0.5  # each frame's weights move this share of the way to the new choice
MIN_WEIGHT = 0.04  # a blended mouth with less weight is dropped
DISTANCE_FLOOR = 0.004  # eye distances: weights ~ 1 / (distance + this)
GRID_STEP = 8  # crop pixels per thin-plate grid cell
BORDER_ANCHORS = 6  # fixed points along each side of the crop (the warp fades to nothing at the crop's edge)
MASK_CENTRE = (0.0, 0.09)  # the composite's ellipse, relative to the rest mouth centre, eye distances...
MASK_AXES = (0.62, 0.43)  # ...its half axes...
MASK_FEATHER = 0.07  # ...and the feather (Gaussian sigma)
OVAL_INSET = 0.1  # the composite also stays this far (eye distances) inside the base frame's face outline
SELF_BONUS = 0.02  # distance taken off the base frame's own mouth (it fits its face exactly; see README)
POSE_WEIGHT = 0.5  # distance per eye distance that the library frame's nose tip lies from the base frame's
RING = (0.08, 0.6)  # colour is matched on the mask's feather where it lies between these values


def pingpong(n: int, length: int) -> int:
    """Frame index n of a loop of `length` frames played forward then back (no jump at either end)."""
    if length <= 1:
        return 0
    period = 2 * (length - 1)
    j = n % period
    return j if j < length else period - j


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """U(r) = r² log r, from squared distances."""
    return np.where(d2 > 0, 0.5 * d2 * np.log(np.maximum(d2, 1e-12)), 0.0)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dx = a[:, 0, None] - b[None, :, 0]
    dy = a[:, 1, None] - b[None, :, 1]
    return dx * dx + dy * dy


def tps_solve(target: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Thin-plate spline coefficients ((K+3), 2m) mapping target points (K, 2) onto each of m source point sets
    (K, 2m): one system for every library mouth of a frame (it depends on the target alone)."""
    k = len(target)
    kernel = _tps_kernel(_squared_distances(target, target))
    p = np.hstack([np.ones((k, 1)), target])
    a = np.zeros((k + 3, k + 3))
    a[:k, :k] = kernel + 1e-6 * np.eye(k)
    a[:k, k:], a[k:, :k] = p, p.T
    b = np.zeros((k + 3, sources.shape[1]))
    b[:k] = sources
    return np.linalg.solve(a, b)


def tps_apply(coef: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The splines at points (G, 2) -> (G, 2m)."""
    kernel = _tps_kernel(_squared_distances(points, target))
    k = len(target)
    return kernel @ coef[:k] + coef[k] + points @ coef[k + 1:]


def ellipse_mask(size: tuple[int, int], centre: np.ndarray, axes: np.ndarray, feather: float) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (((xx - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2 <= 1.0).astype(np.float32)
    return cv2.GaussianBlur(inside, (0, 0), feather)


def out_geometry(size, canvas: int) -> tuple[int, int, np.ndarray]:
    """(width, height, 2x3 output-from-stored-canvas affine) for an output size N or (W, H): the stored square
    scaled to fit and centred (the rest padded with its edge)."""
    w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    s = min(w, h) / canvas
    return w, h, np.array([[s, 0, (w - s * canvas) / 2], [0, s, (h - s * canvas) / 2]])


class VideoAvatarRenderer:
    """render(params, t) -> (H, W, 3) uint8 RGB (an avatar.face.render_base.FrameRenderer)."""

    name = "video-avatar"

    def __init__(self, data: fileformat.AvatarData, size=512, loop: bool = True,
                 background: tuple[int, int, int] | None = None):
        self.data = data
        self.fps = float(data.meta["fps"])
        self.loop = loop  # False: the base loop holds its first frame (only the mouth moves)
        self.expressions = ExpressionState()  # the expression menu: its smile / frown move the mouth's corners
        # the parameters -> motions table: the network's (once told, use_network), with the person's own width
        # where the video's speech calibrated it (avatar.face.video_avatar.calibrate)
        calibration = data.meta.get("mouth_calibration")
        self.calibration = calibration if isinstance(calibration, dict) else {}  # a damaged record: none
        self.shapes = self.person_shapes(Path(DEFAULT_MODEL).stem, DEFAULT_SHAPES)
        crop = data.meta["crop"]
        self.crop_size = tuple(crop["size"])
        cw, ch = self.crop_size
        to_crop = crop_from_canon(crop)
        self.to_crop = to_crop
        p = crop["px_per_iod"]
        # geometry in crop pixels
        rest = data.rest_points[list(LIP_POINTS)]
        self.rest_lips = rest
        self.basis = lip_basis(data.rest_points)
        lib = np.concatenate([data.inner, data.outer], axis=1).astype(np.float64)  # (N, 40, 2)
        self.lib = lib
        self.lib_px = lib @ to_crop[:, :2].T + to_crop[:, 2]
        self.point_weight = np.r_[np.full(20, INNER_WEIGHT), np.ones(20)] / (20 * INNER_WEIGHT + 20)
        centre = rest[:20].mean(axis=0)
        mc = (centre + np.array(MASK_CENTRE)) @ to_crop[:, :2].T + to_crop[:, 2]
        self.mask = ellipse_mask(self.crop_size, mc, np.array(MASK_AXES) * p, MASK_FEATHER * p)
        ring = (self.mask > RING[0]) & (self.mask < RING[1])
        self.crops = np.ascontiguousarray(data.crops)
        ring_u8 = ring.astype(np.uint8)
        self.lib_ring = np.array([cv2.mean(c, ring_u8)[:3] for c in self.crops], np.float32)  # (N, 3)
        xs = np.linspace(0, cw - 1, BORDER_ANCHORS)
        ys = np.linspace(0, ch - 1, BORDER_ANCHORS)
        self.anchors = np.array([(x, 0) for x in xs] + [(x, ch - 1) for x in xs]
                                + [(0, y) for y in ys[1:-1]] + [(cw - 1, y) for y in ys[1:-1]], np.float64)
        gx = np.linspace(0, cw - 1, int(np.ceil((cw - 1) / GRID_STEP)) + 1)
        gy = np.linspace(0, ch - 1, int(np.ceil((ch - 1) / GRID_STEP)) + 1)
        self.grid_shape = (len(gy), len(gx))
        self.grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        # the base loop at the output size, and where the crop lands in each frame
        w, h, out_from_canvas = out_geometry(size, int(data.meta["canvas"]))
        self._size = (w, h)
        self._out_from_canvas = out_from_canvas
        # a background colour (View → Background: green for a keyer) where the file holds the person's mattes
        self.background = None
        if background is not None and data.base_mattes is not None:
            self.background = np.ascontiguousarray(np.broadcast_to(np.array(background, np.uint8), (h, w, 3)))
        self._ring = ring_u8
        self.base_pose = data.base_points[:, NOSE_TIP]
        start, length = data.meta["base_frames"]
        own = np.searchsorted(data.frames, np.arange(start, start + length))
        self.base_own = np.where((own < len(data.frames)) & (data.frames[np.minimum(own, len(data.frames) - 1)]
                                                             == np.arange(start, start + length)), own, -1)
        self.picks: dict[int, float] = {}  # library index -> weight shown last frame
        self._last = None  # (base index, target key) -> the last composite, reused when nothing changed
        # each base frame, ready to composite into: (frame, box, crop -> box warp, (mask, 1 - mask), skin colour):
        # frame 0 now (it checks the file), the others on a background thread in playback order (or when first shown)
        self._ready: list = [None] * len(data.base)
        self._lock = threading.Lock()
        self._base(0)
        # not a daemon: one killed inside OpenCV at interpreter exit aborts the process; it ends within a second
        self._preparer = threading.Thread(target=self._prepare_all, name="avatar-base-frames", daemon=False)
        self._preparer.start()

    def mouth_box(self, b: int = 0) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the output pixels base frame b's mouth composite may change; the rest is the video's."""
        return self._base(b)[1]

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every base frame is prepared (benchmarks, tests); True when they are."""
        self._preparer.join(timeout)
        return not self._preparer.is_alive()

    def _prepare_all(self) -> None:
        for b in range(len(self._ready)):
            try:
                self._base(b)
            except fileformat.AvatarFileError:
                continue  # shown as the first frame instead (_base)

    def _base(self, b: int):
        ready = self._ready[b]
        if ready is not None:
            return ready
        with self._lock:
            if self._ready[b] is None:
                try:
                    self._ready[b] = self._prepare(b)
                except fileformat.AvatarFileError:
                    if b == 0:
                        raise
                    self._ready[b] = self._base(0)  # a damaged frame: the first one in its place
            return self._ready[b]

    def _prepare(self, b: int):
        frame = self.data.base[b]
        c_from_canvas = compose(self.to_crop, self.data.base_canon[b])
        (w, h), (cw, ch) = self._size, self.crop_size
        out_from_canvas = self._out_from_canvas
        out = cv2.warpAffine(frame, out_from_canvas, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE) if (w, h) != frame.shape[1::-1] else frame
        out_from_crop = compose(out_from_canvas, invert_similarity(c_from_canvas))
        corners = np.array([[0, 0], [cw, 0], [0, ch], [cw, ch]], np.float64) @ out_from_crop[:, :2].T \
            + out_from_crop[:, 2]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int), [w, h])
        shifted = out_from_crop.copy()
        shifted[:, 2] -= (x0, y0)
        mask = cv2.warpAffine(self.mask * self.inside_face(self.data.base_points[b]), shifted, (x1 - x0, y1 - y0),
                              flags=cv2.INTER_LINEAR)
        base_crop = cv2.warpAffine(frame, c_from_canvas, (cw, ch), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
        ring = np.array(cv2.mean(base_crop, self._ring)[:3], np.float32)
        mask = np.ascontiguousarray(mask)
        person = None
        if self.background is not None:  # kept as uint8 (a quarter of the memory), made weights per frame
            person = self.data.base_mattes[b]
            if (w, h) != person.shape[1::-1]:
                person = cv2.warpAffine(person, out_from_canvas, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(out), (y0, y1, x0, x1), shifted, (mask, 1.0 - mask), ring, person

    def inside_face(self, points: np.ndarray) -> np.ndarray:
        """1 inside a base frame's face outline (OVAL_INSET in from it), feathered; crop pixels."""
        p = float(self.data.meta["crop"]["px_per_iod"])
        oval = points[list(FACE_OVAL)]
        centre = oval.mean(axis=0)
        reach = np.linalg.norm(oval - centre, axis=1, keepdims=True)
        oval = centre + (oval - centre) * np.maximum(reach - OVAL_INSET, 0) / np.maximum(reach, 1e-9)  # inset
        oval = oval @ self.to_crop[:, :2].T + self.to_crop[:, 2]
        cw, ch = self.crop_size
        inside = np.zeros((ch, cw), np.float32)
        cv2.fillPoly(inside, [np.round(oval * 4).astype(np.int32)], 1.0, shift=2)
        return cv2.GaussianBlur(inside, (0, 0), MASK_FEATHER * p)

    # --- the FrameRenderer interface and what the app asks of a face ---
    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def person_shapes(self, model_name: str, shared: ShapeMap) -> ShapeMap:
        """The shared table of a network with this person's calibration for it (none: the shared one)."""
        entry = self.calibration.get(model_name)
        return calibrated(shared, entry.get("fields") if isinstance(entry, dict) else None)

    def use_network(self, model_name: str) -> None:
        """As the photo renderer's: the table fitted to that network maps its parameters, from the next frame on
        (with the person's own width for that network, where the avatar holds it)."""
        self.shapes = self.person_shapes(model_name, shapes_for(model_name))

    def set_expression(self, name: str, ease: bool = True) -> None:
        """As the photo renderer's: the mouth takes the expression's smile or frown (the rest of the face is the
        video's own); any thread."""
        self.expressions.request(name, ease)

    @property
    def expression(self) -> str:
        return self.expressions.name

    def base_index(self, t: float) -> int:
        if not self.loop:
            return 0
        return pingpong(int(np.floor(max(t, 0.0) * self.fps + 1e-6)), len(self._ready))

    def render(self, params: np.ndarray, t: float = 0.0) -> np.ndarray:
        target = target_lips(self.rest_lips, self.basis, motion_weights(params, self.expressions.extras(t), self.shapes))
        return self.render_target(target, self.base_index(t))

    # --- the pieces ---
    def choose(self, target: np.ndarray, b: int = 0) -> dict[int, float]:
        """The library mouths to blend (index -> weight) for a target contour over base frame b, eased from last
        frame's choice."""
        diff = self.lib - target[None]
        d = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2) @ self.point_weight
        turn = self.data.pose - self.base_pose[b]
        d += POSE_WEIGHT * np.sqrt(turn[:, 0] ** 2 + turn[:, 1] ** 2)
        if SELF_BONUS and self.base_own[b] >= 0:
            d[self.base_own[b]] -= SELF_BONUS
        for i in self.picks:
            d[i] -= STICKY_BONUS
            if i + 1 < len(d) and self.data.frames[i + 1] == self.data.frames[i] + 1:
                d[i + 1] -= NEXT_FRAME_BONUS
        near = np.argpartition(d, K_NEAREST)[:K_NEAREST] if len(d) > K_NEAREST else np.arange(len(d))
        w = 1.0 / (np.maximum(d[near], 0.0) + DISTANCE_FLOOR)
        new = dict(zip(near.tolist(), (w / w.sum()).tolist()))
        mixed = {i: (1 - EASE) * self.picks.get(i, 0.0) + EASE * new.get(i, 0.0) for i in set(self.picks) | set(new)}
        mixed = {i: v for i, v in sorted(mixed.items(), key=lambda kv: -kv[1])[:K_NEAREST + 1] if v >= MIN_WEIGHT}
        total = sum(mixed.values())
        self.picks = {i: v / total for i, v in mixed.items()}
        return self.picks

    def mouth(self, target: np.ndarray, picks: dict[int, float]) -> np.ndarray:
        """The blended mouth crop (float32 RGB) for the target contour from the picked library mouths."""
        tgt = target @ self.to_crop[:, :2].T + self.to_crop[:, 2]
        ctrl = np.vstack([tgt, self.anchors])
        gh, gw = self.grid_shape
        cw, ch = self.crop_size
        acc = np.zeros((ch, cw, 3), np.float32)
        items = list(picks.items())
        sources = np.hstack([np.vstack([self.lib_px[i], self.anchors]) for i, _ in items])
        coef = tps_solve(ctrl, sources)
        maps = tps_apply(coef, ctrl, self.grid).reshape(gh, gw, -1).astype(np.float32)
        for j, (i, wt) in enumerate(items):
            m = cv2.resize(maps[..., 2 * j:2 * j + 2], (cw, ch), interpolation=cv2.INTER_LINEAR)
            warped = cv2.remap(self.crops[i], m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            acc += np.float32(wt) * warped
        return acc

    def render_target(self, target: np.ndarray, b: int) -> np.ndarray:
        picks = self.choose(target, b)
        key = (b, tuple(sorted((i, round(w, 3)) for i, w in picks.items())), target.round(4).tobytes())
        if self._last is not None and self._last[0] == key:
            return self._last[1].copy()  # nothing moved: the same frame (a copy: callers may draw on theirs)
        frame, (y0, y1, x0, x1), warp, (mask, keep), skin, person = self._base(b)
        mouth = self.mouth(target, picks)
        lib_ring = sum(w * self.lib_ring[i] for i, w in picks.items())
        mouth += (skin - lib_ring).astype(np.float32)  # the base frame's skin colour
        mouth = np.clip(mouth + 0.5, 0, 255).astype(np.uint8)
        frame = frame.copy()
        placed = cv2.warpAffine(mouth, warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        frame[y0:y1, x0:x1] = cv2.blendLinear(placed, frame[y0:y1, x0:x1], mask, keep)
        if person is not None:
            weight = person.astype(np.float32) * np.float32(1 / 255)
            frame = cv2.blendLinear(frame, self.background, weight, 1.0 - weight)
        self._last = (key, frame)
        return frame.copy()  # the kept one stays as drawn, whatever the caller does with its own


def open_video_avatar(path: str | Path, size=512, liveliness: dict | None = None,
                      background: tuple[int, int, int] | None = None) -> VideoAvatarRenderer:
    """The renderer for an avatar file (raises avatar.face.video_avatar.AvatarFileError with the reason).
    liveliness {"enabled": False}: the base loop holds still (only the mouth moves); background: an RGB colour
    behind the person (the file's mattes; an avatar made without them shows its own background)."""
    switches = liveliness or {}
    loop = bool(switches.get("enabled", True))
    cv2.setNumThreads(1)  # as the photo renderer: one OpenCV thread beside the audio and encoder threads
    return VideoAvatarRenderer(fileformat.load(path), size=size, loop=loop, background=background)
