"""`avatar make-avatar VIDEO -o NAME.avatar`: the base loop and the mouth library from a person's video.

- Base loop: the stretch of the video (BASE_SHARE of it, BASE_SECONDS at most) whose mouth is the quietest (least
  open, least moving) and whose head is slowest at both ends, played forward then back (ping-pong: no jump at the
  turn). Its frames are square crops around the face (fixed for the loop: the head's own motion stays).
- Mouth library: every frame's mouth region in the canonical frame (avatar.face.video_avatar.track), a crop
  CROP_PX_PER_IOD pixels per eye distance, with its inner and outer lip contour, opening, width, and how much teeth
  show (bright, colourless pixels inside the inner lips).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avatar.audio import delayed
from avatar.face.landmarks import LIP_INNER, LIP_OUTER, NOSE_TIP, pinned_solution, quiet_native_logs
from avatar.face.video_avatar import VideoInputError
from avatar.face.video_avatar import fileformat
from avatar.face.video_avatar.calibrate import calibrate
from avatar.face.video_avatar.source import iter_frames, probe, sound
from avatar.face.video_avatar.sync import find_sound_offset
from avatar.face.video_avatar.track import Track, invert_similarity, track_video

MIN_SECONDS = 3.0  # a shorter video holds too few mouth shapes (the CLI refuses it; evaluation may ask for less)
MAX_SECONDS = 60.0  # longer ones are cut here (the library would only grow)
BASE_SHARE = 0.5  # the base loop is at most this share of the video...
BASE_SECONDS = (1.0, 5.0)  # ...and this long (min, max)
END_SPEED_WEIGHT = 4.0  # cost of the head's speed (eye distances per second) at the loop's ends, per unit
MOUTH_MOTION_WEIGHT = 1.0  # cost of the mouth's opening changing inside the loop
CANVAS = 512  # the base frames' stored size (square)
CANVAS_SPAN_IOD = 3.4  # the square's side, in eye distances
CANVAS_CENTRE = (0.0, 0.55)  # the square's centre, canonical (eyes at y = 0, the mouth near y = 1)
CROP_PX_PER_IOD = 110  # the mouth library's resolution
CROP_BOX = (-0.85, 0.85, -0.5, 0.75)  # x0, x1, y0, y1 around the rest mouth's centre, eye distances
TEETH_LIGHTNESS = 0.5  # teeth: CIELAB L above this (0..1)...
TEETH_CHROMA = 22.0  # ...and chroma below this (colourless: enamel, not lips or tongue)
OPENING_POINTS = (13, 14)
WIDTH_POINTS = (61, 291)
QUIET_SHARE = 0.3  # the rest face: the median of the base loop's least-open frames (this share). Self-reenactment
# (avatar eval reenact, 13 clips): mean inner-lip distance 22.1, opening r 0.725 so; from the whole video's 15 %
# least-open frames 22.4 / 0.700 (closer on 6 clips, further on 6: kept as it was)


@dataclass
class BuildReport:
    path: Path
    frames: int
    fps: float
    seconds: float
    base_frames: int
    base_start_s: float
    library: int
    notes: list[str]
    calibration: dict | None = None  # network name -> {"fields", "evidence"} (avatar.face.video_avatar.calibrate);
    # None: not asked for
    sound_offset: dict | None = None  # avatar.face.video_avatar.sync.sound_offset: how far the file's sound was found
    # to trail its picture (None: not looked for)

    @property
    def mouth_note(self) -> str:
        """A sentence on the mouth's width: the person's own (fitted on their speech) or the shared one, and why;
        and where the file's sound was found out of step with its picture, by how much."""
        return self._width_note() + (f"; {self.sync_note}" if self.sync_note else "")

    @property
    def sync_note(self) -> str | None:
        """Where the file's sound was found out of step with its picture (the width fit paired them corrected)."""
        ms = (self.sound_offset or {}).get("offset_ms") or 0
        if not ms:
            return None
        return f"the file's sound {'trails' if ms > 0 else 'leads'} its picture by {abs(ms)} ms, corrected for the fit"

    def _width_note(self) -> str:
        if self.calibration is None:
            return "mouth width: the shared mapping (no calibration asked for)"
        kept = {name: e["evidence"] for name, e in self.calibration.items() if e.get("fields")}
        if kept:
            files = kept.get("lipsync_gru") or next(iter(kept.values()))
            return (f"mouth width fitted to the person's speech (follows it at r {files['width_r_person']:.2f} "
                    f"on the video, the shared mapping {files['width_r_shared']:.2f})")
        whys = {e["evidence"].get("why", "") for e in self.calibration.values()}
        why = "; ".join(sorted(w for w in whys if w)) or "the video has no sound"
        return f"mouth width: the shared mapping ({why})"


def crop_geometry(rest_points: np.ndarray) -> dict:
    """The canonical mouth crop: its origin (canonical), size (px) and scale."""
    centre = rest_points[list(LIP_INNER)].mean(axis=0)
    x0, x1, y0, y1 = CROP_BOX
    w = int(round((x1 - x0) * CROP_PX_PER_IOD))
    h = int(round((y1 - y0) * CROP_PX_PER_IOD))
    return {"origin": [float(centre[0] + x0), float(centre[1] + y0)], "size": [w, h], "px_per_iod": CROP_PX_PER_IOD}


def crop_from_canon(crop: dict) -> np.ndarray:
    p = crop["px_per_iod"]
    ox, oy = crop["origin"]
    return np.array([[p, 0, -p * ox], [0, p, -p * oy]], np.float64)


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine a ∘ b."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def mouth_measures(track: Track) -> tuple[np.ndarray, np.ndarray]:
    """(opening, width) per frame in eye distances (NaN where no face)."""
    m = len(track.points)
    opening, width = np.full(m, np.nan), np.full(m, np.nan)
    for k in np.nonzero(track.found)[0]:
        p = track.canonical(k, list(OPENING_POINTS + WIDTH_POINTS))
        opening[k] = np.linalg.norm(p[0] - p[1])
        width[k] = np.linalg.norm(p[2] - p[3])
    return opening, width


def head_speed(track: Track, fps: float) -> np.ndarray:
    """How fast the head moves per frame: the canvas centre's image speed in eye distances per second."""
    m = len(track.points)
    centre = np.full((m, 2), np.nan)
    iod = np.full(m, np.nan)
    for k in np.nonzero(track.found)[0]:
        inv = invert_similarity(track.canon[k])
        centre[k] = inv[:, :2] @ np.array(CANVAS_CENTRE) + inv[:, 2]
        iod[k] = 1.0 / np.sqrt(abs(np.linalg.det(track.canon[k][:, :2])))
    speed = np.zeros(m)
    speed[1:] = np.linalg.norm(np.diff(centre, axis=0), axis=1) / iod[1:] * fps
    speed[0] = speed[1] if m > 1 else 0.0
    return speed


def choose_base(opening: np.ndarray, speed: np.ndarray, fps: float) -> tuple[int, int]:
    """(start, length) of the base loop: the quietest mouth and the slowest ends over a stretch with a face in every
    frame; shorter (down to BASE_SECONDS[0]) where no stretch that long has one throughout."""
    m = len(opening)
    lo, hi = BASE_SECONDS
    wanted = max(min(int(round(np.clip(BASE_SHARE * m / fps, lo, hi) * fps)), m), 2)
    for length in range(wanted, max(min(int(round(lo * fps)), wanted), 2) - 1, -1):
        best, best_cost = 0, np.inf
        for a in range(0, m - length + 1):
            o = opening[a:a + length]
            if not np.isfinite(o).all():
                continue
            ends = speed[a] + speed[a + length - 1]
            cost = o.mean() + MOUTH_MOTION_WEIGHT * np.abs(np.diff(o)).mean() + END_SPEED_WEIGHT * ends / fps
            if cost < best_cost:
                best, best_cost = a, cost
        if np.isfinite(best_cost):
            return best, length
    raise VideoInputError(f"the face is not followed through any {lo:g} s of the video (it is lost or mis-fitted too "
                          "often); film one person facing the camera, still enough to stay in the picture")


def canvas_transform(track: Track, base_idx: np.ndarray) -> np.ndarray:
    """2x3 image -> base canvas: a square fixed in the picture (the head moves inside it), CANVAS_SPAN_IOD eye
    distances wide around the base loop's mean face."""
    centres, iods = [], []
    for k in base_idx:
        inv = invert_similarity(track.canon[k])
        centres.append(inv[:, :2] @ np.array(CANVAS_CENTRE) + inv[:, 2])
        iods.append(1.0 / np.sqrt(abs(np.linalg.det(track.canon[k][:, :2]))))
    s = CANVAS / (CANVAS_SPAN_IOD * float(np.mean(iods)))
    cx, cy = np.mean(centres, axis=0)
    return np.array([[s, 0, CANVAS / 2 - s * cx], [0, s, CANVAS / 2 - s * cy]])


def person_mattes(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Each base frame's matte of the person (uint8, 255 = person): MediaPipe's selfie segmentation hardened and
    feathered as the photo's green screen is (avatar.face.assemble.matte), so View → Background works here too."""
    import mediapipe as mp  # ~1 s to import: only a build needs it

    from avatar.face.assemble import matte  # (assemble opens avatars through this package: imported when used)

    segmenter = pinned_solution(mp.solutions.selfie_segmentation.SelfieSegmentation)
    out = []
    with quiet_native_logs, segmenter(model_selection=0) as seg:
        for frame in frames:
            mask = np.clip(seg.process(np.ascontiguousarray(frame)).segmentation_mask, 0.0, 1.0)
            out.append(np.round(matte(mask.astype(np.float32)[..., None])[..., 0] * 255).astype(np.uint8))
    return out


def teeth_share(crop: np.ndarray, inner_px: np.ndarray) -> float:
    """Share of the inner mouth (inside the inner lip contour, crop pixels) that shows teeth: light, colourless."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner_px).astype(np.int32)], 1)
    inside = crop[mask.astype(bool)]
    if len(inside) < 12:
        return 0.0
    lab = cv2.cvtColor(inside.reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    lightness = lab[:, 0] / 255.0
    chroma = np.hypot(lab[:, 1] - 128.0, lab[:, 2] - 128.0)
    return float(np.mean((lightness > TEETH_LIGHTNESS) & (chroma < TEETH_CHROMA)))


def build(video: str | Path, out: str | Path, min_seconds: float = MIN_SECONDS, stop: int | None = None,
          progress=None, cancelled=None, calibrate_mouth: bool = True,
          av_offset_ms: float | None = None) -> BuildReport:
    """Make the avatar file `out` from `video` (its first `stop` frames when given: evaluation builds from part of a
    clip). progress(done, total, stage); cancelled() -> True stops with InterruptedError. calibrate_mouth: fit the
    person's own mouth width to the video's speech (avatar.face.video_avatar.calibrate), pairing sound and picture
    `av_offset_ms` apart (a badly muxed file's sound delay; None: found from the video, avatar.face.video_avatar
    .sync)."""
    info = probe(video)
    if stop is not None:
        info.picks = info.picks[:stop]
    if len(info.picks) > MAX_SECONDS * info.fps:
        info.picks = info.picks[:int(MAX_SECONDS * info.fps)]
        info.notes.append(f"only the first {MAX_SECONDS:.0f} s used")
    if info.seconds < min_seconds - 0.5 / info.fps:
        raise VideoInputError(f"{info.path.name}: the video is {info.seconds:.1f} s long; an avatar needs at least "
                              f"{min_seconds:g} s of the person talking")
    m = len(info.picks)
    track = track_video(info, progress=(lambda d, t: progress(d, 2 * t, "tracking")) if progress else None,
                        cancelled=cancelled)
    opening, width = mouth_measures(track)
    start, length = choose_base(opening, head_speed(track, info.fps), info.fps)
    base_idx = np.arange(start, start + length)
    quiet = base_idx[opening[base_idx] <= np.percentile(opening[base_idx], 100 * QUIET_SHARE)]
    rest_points = np.median(np.stack([track.canonical(k) for k in quiet]), axis=0)
    mouth_calibration, found = {}, None
    if calibrate_mouth:
        audio = sound(info, av_offset_ms or 0.0)
        if audio is not None and len(audio) and av_offset_ms is None:
            found = find_sound_offset(audio, opening, info.fps)
            audio = delayed(audio, -found["offset_ms"] / 1000.0)  # moved that much earlier (0: as it is)
        mouth_calibration = calibrate(audio, width, info.fps, rest_points)
    crop = crop_geometry(rest_points)
    to_crop = crop_from_canon(crop)
    cw, ch = crop["size"]
    canvas_from_image = canvas_transform(track, base_idx)
    s = canvas_from_image[0, 0]
    image_from_canvas = invert_similarity(canvas_from_image)
    base_set = set(base_idx.tolist())
    base, base_canon, base_points, crops, inner, outer, lib_frames, teeth, pose = [], [], [], [], [], [], [], [], []
    for k, image in iter_frames(info, stop=m):
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        if progress is not None:
            progress(m + k + 1, 2 * m, "cropping")
        if not track.found[k]:
            continue
        if k in base_set:
            base.append(cv2.warpAffine(image, canvas_from_image, (CANVAS, CANVAS), flags=cv2.INTER_AREA
                                       if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
            base_canon.append(compose(track.canon[k], image_from_canvas))
            base_points.append(track.canonical(k))
        mouth = cv2.warpAffine(image, compose(to_crop, track.canon[k]), (cw, ch), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        ci, co = track.canonical(k, list(LIP_INNER)), track.canonical(k, list(LIP_OUTER))
        crops.append(mouth)
        inner.append(ci), outer.append(co), lib_frames.append(k)
        pose.append(track.canonical(k, [NOSE_TIP])[0])
        teeth.append(teeth_share(mouth, ci @ to_crop[:, :2].T + to_crop[:, 2]))
    lib_frames = np.array(lib_frames)
    if cancelled is not None and cancelled():
        raise InterruptedError("cancelled")
    base_jpeg, base_offsets = fileformat.encode_images(base)
    matte_png, matte_offsets = fileformat.encode_images(person_mattes(base), ".png")
    lib_jpeg, lib_offsets = fileformat.encode_images(crops)
    arrays = {
        "base_jpeg": base_jpeg, "base_offsets": base_offsets, "base_canon": np.array(base_canon, np.float32),
        "lib_jpeg": lib_jpeg, "lib_offsets": lib_offsets,
        "lib_inner": np.array(inner, np.float32), "lib_outer": np.array(outer, np.float32),
        "lib_opening": opening[lib_frames].astype(np.float32), "lib_width": width[lib_frames].astype(np.float32),
        "lib_teeth": np.array(teeth, np.float32), "lib_pose": np.array(pose, np.float32),
        "base_points": np.array(base_points, np.float32), "lib_frames": lib_frames.astype(np.int32),
        "rest_points": rest_points.astype(np.float32), "template": track.template.astype(np.float32),
        "base_matte_png": matte_png, "base_matte_offsets": matte_offsets,
    }
    meta = {"fps": info.fps, "canvas": CANVAS, "crop": crop, "base_frames": [int(start), int(length)],
            "source": {"name": info.path.name, "frames": m, "seconds": round(info.seconds, 3),
                       "size": list(info.size), "notes": info.notes},
            "mouth_calibration": mouth_calibration, "sound_offset": found}
    fileformat.save(out, arrays, meta)
    return BuildReport(Path(out), m, info.fps, info.seconds, length, start / info.fps, len(crops), info.notes,
                       mouth_calibration if calibrate_mouth else None, found)
