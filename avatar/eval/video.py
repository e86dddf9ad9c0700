"""`avatar eval video CLIP...`: the lip-sync and the renderer held against real people on camera.

For each real talking clip (its own speech as the audio, its first frame as the photo):

1. **Motion.** The network's 100 Hz `jaw_open` / `lip_spread` against the real inner-lip opening |13-14| and
   mouth width |61-291|, measured by FaceMesh on every real frame: Pearson r at lag 0 and at the best lag within
   ±120 ms (10 ms steps), beside a loudness envelope scored the same way.
2. **The whole chain.** `avatar render` of the first frame with the clip's audio at the clip's frame rate;
   FaceMesh on the rendered frames, paired with the real ones by time: r of rendered vs real opening and width,
   amplitude ratios, inner-lip contour distance beside a frozen mouth, inner-mouth colour (CIELAB ΔE), and a
   montage picture (real mouth | rendered mouth).

Every frame's points are aligned by the similarity that takes FaceMesh points 33 and 263 (the eye corners) to
(-0.5, 0) and (0.5, 0): distances are in inter-ocular units (×1000 where the report says so). These definitions
are the issue's, kept exact so figures compare across sessions.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from avatar.audio import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE, AudioError, delayed, load_audio
from avatar.engine import EngineError, create_engine, default_model_path, live_model_path
from avatar.face.assemble import open_renderer
from avatar.face.landmarks import LIP_INNER, pinned_solution
from avatar.face.shapes import table_path
from avatar.lipsync import track_audio
from avatar.live.offline import render_offline
from avatar.stats import pearson

# ---- the ruler's definitions ----
EYE_POINTS = (33, 263)  # mapped to (-0.5, 0) and (0.5, 0): inter-ocular distance 1
OPENING_POINTS = (13, 14)  # inner lips at the middle: upper, lower
WIDTH_POINTS = (61, 291)  # outer mouth corners
MAX_LAG_MS = 120
LAG_STEP_MS = 10
LAGS_MS = np.arange(-MAX_LAG_MS, MAX_LAG_MS + 1, LAG_STEP_MS)
# Outside the ruler: a hint for clips whose sound is out of step with their picture by more than its window (d20's
# trails by 300 ms; every audio-driven figure then reads as a miss). The jaw track is searched over +-WIDE_LAG_MS;
# a best r outside the window that beats the window's best by OFFSET_HINT_GAIN is reported (GRID: none, the
# largest gain 0.09; d20: +290 ms, r 0.72 against 0.23)
WIDE_LAG_MS = 600
OFFSET_HINT_GAIN = 0.15
# loudness envelope: RMS dB of 25 ms windows every 10 ms, floored at the clip's peak - 50 dB, 50 ms moving average
ENVELOPE_WINDOW = int(0.025 * SAMPLE_RATE)
ENVELOPE_FLOOR_DB = 50.0
ENVELOPE_SMOOTH_FRAMES = 5  # 50 ms at 100 frames/s
OPEN_SHARE = 0.2  # inner-mouth colour is compared on the 20 % most open real frames
MIN_MOUTH_PIXELS = 12  # a mouth with fewer pixels inside its inner lips is closed: no colour to compare
CONTOUR_SCALE = 1000.0  # contour distances are reported in inter-ocular units x 1000
PROFILE_BINS = 5  # the inner mouth's lightness across the slit: bins of |u| over 0..1, u the position along the
# inner corners' line (78-308) over its half length (0: the middle, 1: a corner). Real openings are lit in the
# middle and dark toward the corners; the ΔE of the mean colour cannot see where the light is
# montage: eye-aligned mouth crops, real beside rendered
MONTAGE_ROWS = 6
MONTAGE_PX_PER_UNIT = 220  # pixels per inter-ocular distance
MONTAGE_HALF_WIDTH, MONTAGE_HALF_HEIGHT = 0.55, 0.32  # crop around the mouth centre, inter-ocular units


class ClipError(ValueError):
    """A clip that cannot be measured, with a sentence a person can act on."""


@dataclass
class Clip:
    """A decoded clip: frames on their own clock, audio on the same clock at 16 kHz mono."""
    path: Path
    fps: float
    frame_times: np.ndarray  # (N,) seconds from the first frame
    first_frame: np.ndarray  # RGB uint8
    audio: np.ndarray  # float32, sample 0 = the first frame's time


@dataclass
class MouthMeasure:
    """Per-frame mouth measurements of one frame sequence (NaN where no face was found)."""
    opening: np.ndarray  # (N,) |13-14|
    width: np.ndarray  # (N,) |61-291|
    inner: np.ndarray  # (N, 20, 2) inner-lip contour, eye-aligned, centroid removed
    inner_lab: np.ndarray  # (N, 3) mean CIELAB colour inside the inner lips (NaN when closed)
    inner_profile: np.ndarray  # (N, PROFILE_BINS) mean L* of those pixels by |u| (NaN: none there)
    crops: dict = field(default_factory=dict)  # frame index -> eye-aligned mouth crop (RGB), montage frames only
    centre: np.ndarray | None = None  # (N, 2) the inner lips' centroid, eye-aligned (NaN where no face)


# ---- pure pieces ----

def eye_similarity(points: np.ndarray) -> np.ndarray:
    """2x3 affine (rotation, uniform scale, shift) taking points 33 and 263 to (-0.5, 0) and (0.5, 0)."""
    a, b = points[EYE_POINTS[0], :2], points[EYE_POINTS[1], :2]
    d = b - a
    scale = 1.0 / max(np.hypot(*d), 1e-9)
    c, s = d * scale
    rot = np.array([[c, s], [-s, c]]) * scale
    return np.hstack([rot, (-(rot @ ((a + b) / 2)))[:, None]])


def align(points: np.ndarray) -> np.ndarray:
    m = eye_similarity(points)
    return points[:, :2] @ m[:, :2].T + m[:, 2]


def track_times(n_rows: int) -> np.ndarray:
    """Time each 100 Hz row describes: row i is the hop [i*160, (i+1)*160), its centre (i + 0.5) * 10 ms."""
    return (np.arange(n_rows) + 0.5) / FRAMES_PER_SECOND


def rs_by_lag(track: np.ndarray, real: np.ndarray, frame_times: np.ndarray, lags_ms: np.ndarray) -> np.ndarray:
    """r(real(t), track(t + lag)) for each lag (ms): the 100 Hz track read at the frames' times, shifted."""
    times = track_times(len(track))
    return np.array([pearson(np.interp(frame_times + lag / 1000.0, times, track), real) for lag in lags_ms])


def lagged_r(track: np.ndarray, real: np.ndarray, frame_times: np.ndarray) -> dict:
    """r(real(t), track(t + lag)) for each lag in LAGS_MS: r at lag 0, the best r and its lag (ms).

    A positive best lag means the audio-driven track matches the picture later than the picture: the audio trails."""
    rs = rs_by_lag(track, real, frame_times, LAGS_MS)
    best = int(np.nanargmax(rs)) if np.isfinite(rs).any() else MAX_LAG_MS // LAG_STEP_MS
    return {"r0": float(rs[len(LAGS_MS) // 2]), "best_r": float(rs[best]), "best_lag_ms": int(LAGS_MS[best])}


def offset_hint(track: np.ndarray, real: np.ndarray, frame_times: np.ndarray) -> dict | None:
    """{"lag_ms", "r", "window_r"} where `track` follows `real` best within +-WIDE_LAG_MS, when that lies outside
    the ruler's +-MAX_LAG_MS and beats the window's best r by OFFSET_HINT_GAIN (the clip's sound is likely out of
    step with its picture: a positive lag, its sound trails); None otherwise. No figure of the ruler uses it."""
    lags = np.arange(-WIDE_LAG_MS, WIDE_LAG_MS + 1, LAG_STEP_MS)
    rs = rs_by_lag(track, real, frame_times, lags)
    if not np.isfinite(rs).any():
        return None
    inside = np.abs(lags) <= MAX_LAG_MS
    best, window = int(np.nanargmax(rs)), float(np.nanmax(rs[inside])) if np.isfinite(rs[inside]).any() else -1.0
    if inside[best] or rs[best] < window + OFFSET_HINT_GAIN:
        return None
    return {"lag_ms": int(lags[best]), "r": float(rs[best]), "window_r": window}


def loudness_envelope(audio: np.ndarray) -> np.ndarray:
    """100 Hz loudness: RMS dB of the 25 ms window centred on each 10 ms hop, floored at peak - 50 dB, 50 ms mean."""
    n = len(audio) // HOP_LENGTH
    centres = (np.arange(n) + 0.5) * HOP_LENGTH
    padded = np.pad(audio.astype(np.float64), (ENVELOPE_WINDOW, ENVELOPE_WINDOW))
    starts = (centres - ENVELOPE_WINDOW / 2).astype(int) + ENVELOPE_WINDOW
    csum = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    power = (csum[starts + ENVELOPE_WINDOW] - csum[starts]) / ENVELOPE_WINDOW
    db = 10 * np.log10(power + 1e-12)
    db = np.maximum(db, db.max(initial=-120.0) - ENVELOPE_FLOOR_DB)
    kernel = np.ones(ENVELOPE_SMOOTH_FRAMES) / ENVELOPE_SMOOTH_FRAMES
    return np.convolve(np.pad(db, ENVELOPE_SMOOTH_FRAMES // 2, mode="edge"), kernel, mode="valid")


def amplitude(x: np.ndarray) -> float:
    """Range of motion: p95 - p5."""
    x = x[np.isfinite(x)]
    return float(np.percentile(x, 95) - np.percentile(x, 5)) if len(x) else float("nan")


def contour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame: mean distance between corresponding centred inner-lip points (inter-ocular units)."""
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1)


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference of two CIELAB colours (L 0..100)."""
    return np.linalg.norm(lab_a - lab_b, axis=-1)


# ---- reading and measuring ----

def read_clip(path: str | Path, av_offset_ms: float = 0.0) -> Clip:
    """The clip's audio on the video clock (frames are decoded again on demand by `iter_frames`).

    `av_offset_ms`: how far the file's sound trails its picture, where that is known (a badly muxed file); the
    sound is moved that much earlier, so every figure sees the clip as it was filmed."""
    path = Path(path)
    if not path.is_file():
        raise ClipError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: the file has no video track")
            video = container.streams.video[0]
            if not container.streams.audio:
                raise ClipError(f"{path}: the file has no audio track")
            fps = float(video.average_rate or video.guessed_rate or 25)
            audio_stream = container.streams.audio[0]
            audio_start = float(audio_stream.start_time * audio_stream.time_base) if audio_stream.start_time else 0.0
            times, first = [], None
            for frame in container.decode(video):
                times.append(float(frame.time))
                if first is None:
                    first = frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise ClipError(f"{path}: not a readable video ({e})") from e
    if first is None:
        raise ClipError(f"{path}: the video has no frames")
    try:
        audio = load_audio(path)
    except AudioError as e:
        raise ClipError(str(e)) from e
    t0 = times[0]
    # sample 0 of the audio track plays at audio_start; move it onto the clock whose zero is the first frame
    audio = delayed(audio, audio_start - t0 - av_offset_ms / 1000.0)
    return Clip(path, fps, np.array(times) - t0, first, audio.astype(np.float32))


def iter_frames(path: Path):
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def _face_mesh_video():
    """FaceMesh in video mode (tracking from frame to frame), as the issue's ruler specifies."""
    import mediapipe as mp  # 3 s to import: bad arguments and unreadable clips are reported before it loads

    # pinned: its models from mediapipe's own folder, never from ./mediapipe/modules of the folder the ruler runs
    # in (and MediaPipe's native log lines kept off stderr)
    mesh = pinned_solution(mp.solutions.face_mesh.FaceMesh)
    return mesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5)


def _mouth_crop(image: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Eye-aligned crop around `centre` (aligned coordinates), MONTAGE_PX_PER_UNIT pixels per inter-ocular unit."""
    m = np.vstack([eye_similarity(points), [0, 0, 1]])
    w, h = int(2 * MONTAGE_HALF_WIDTH * MONTAGE_PX_PER_UNIT), int(2 * MONTAGE_HALF_HEIGHT * MONTAGE_PX_PER_UNIT)
    to_crop = np.array([[MONTAGE_PX_PER_UNIT, 0, w / 2 - MONTAGE_PX_PER_UNIT * centre[0]],
                        [0, MONTAGE_PX_PER_UNIT, h / 2 - MONTAGE_PX_PER_UNIT * centre[1]], [0, 0, 1]])
    return cv2.warpAffine(image, (to_crop @ m)[:2], (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _inner_mouth_lab(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean CIELAB inside the inner lips (3,), mean L* by lateral position (PROFILE_BINS,)); NaN when closed."""
    polygon = np.round(points[list(LIP_INNER), :2]).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [polygon], 1)
    ys, xs = np.nonzero(mask)
    if len(xs) < MIN_MOUTH_PIXELS:
        return np.full(3, np.nan), np.full(PROFILE_BINS, np.nan)
    lab = cv2.cvtColor(image[ys, xs].reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    return lab.mean(axis=0), lateral_profile(np.stack([xs, ys], 1), lab[:, 0], points[78, :2], points[308, :2])


def lateral_profile(pixels: np.ndarray, lightness: np.ndarray, corner_a: np.ndarray, corner_b: np.ndarray
                    ) -> np.ndarray:
    """Mean lightness of pixels (K, 2) by |u| in PROFILE_BINS bins, u their position along the corners' line over
    its half length (NaN for an empty bin)."""
    centre, half = (corner_a + corner_b) / 2, np.linalg.norm(corner_b - corner_a) / 2
    along = (corner_b - corner_a) / max(2 * half, 1e-9)
    u = np.abs((pixels - centre) @ along) / max(half, 1e-9)
    bins = np.minimum((u * PROFILE_BINS).astype(int), PROFILE_BINS - 1)
    total = np.bincount(bins, lightness, PROFILE_BINS)
    count = np.bincount(bins, minlength=PROFILE_BINS)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mesh_points(result, w: int, h: int) -> np.ndarray:
    """(478, 3) pixel points of a FaceMesh result's first face (pixel centres at .5, z in x's scale)."""
    return np.array([(p.x * w - 0.5, p.y * h - 0.5, p.z * w) for p in result.multi_face_landmarks[0].landmark])


def opening_and_width(aligned: np.ndarray) -> tuple[float, float]:
    """The mouth's opening |13-14| and width |61-291| of eye-aligned points (inter-ocular units)."""
    return (float(np.linalg.norm(aligned[OPENING_POINTS[0]] - aligned[OPENING_POINTS[1]])),
            float(np.linalg.norm(aligned[WIDTH_POINTS[0]] - aligned[WIDTH_POINTS[1]])))


def model_path(choice: str) -> str:
    """The model file for --model default | live | a path."""
    return {"default": str(default_model_path()), "live": str(live_model_path())}.get(choice, choice)


def measure_mouths(frames, crop_at: set[int] | None = None, crop_centre: np.ndarray | None = None) -> MouthMeasure:
    """FaceMesh (video mode) on every frame; mouth opening, width, inner contour and inner colour per frame.
    Crops centre on each frame's inner lips, or on `crop_centre` (aligned coordinates) for all frames alike."""
    opening, width, inner, lab, profile, crops, centres = [], [], [], [], [], {}, []
    with _face_mesh_video() as mesh:
        for k, image in enumerate(frames):
            h, w = image.shape[:2]
            result = mesh.process(np.ascontiguousarray(image))
            if not result.multi_face_landmarks:
                opening.append(np.nan), width.append(np.nan), lab.append(np.full(3, np.nan))
                profile.append(np.full(PROFILE_BINS, np.nan))
                inner.append(np.full((len(LIP_INNER), 2), np.nan)), centres.append(np.full(2, np.nan))
                continue
            pts = mesh_points(result, w, h)
            a = align(pts)
            o, wd = opening_and_width(a)
            opening.append(o), width.append(wd)
            contour = a[list(LIP_INNER)]
            inner.append(contour - contour.mean(axis=0)), centres.append(contour.mean(axis=0))
            colour, across = _inner_mouth_lab(image, pts)
            lab.append(colour), profile.append(across)
            if crop_at is not None and k in crop_at:
                centre = a[list(LIP_INNER)].mean(axis=0) if crop_centre is None else crop_centre
                crops[k] = _mouth_crop(image, pts, centre)
    return MouthMeasure(np.array(opening), np.array(width), np.array(inner), np.array(lab),
                        np.array(profile).reshape(-1, PROFILE_BINS), crops, np.array(centres).reshape(-1, 2))


def render_clip(clip: Clip, workdir: Path, engine) -> Path:
    """`avatar render`'s path: the first frame as the photo, the clip's audio, the clip's frame rate."""
    photo = workdir / "first_frame.png"
    cv2.imwrite(str(photo), cv2.cvtColor(clip.first_frame, cv2.COLOR_RGB2BGR))
    renderer = open_renderer(photo)
    out = workdir / "rendered.mp4"
    render_offline(clip.audio, engine, renderer, out, fps=max(1, round(clip.fps)))
    return out


def montage_frames(opening: np.ndarray, n: int = MONTAGE_ROWS) -> list[int]:
    """Frames to show: the most open real frame of each of n equal stretches of the clip."""
    bounds = np.linspace(0, len(opening), n + 1).astype(int)
    picks = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = opening[a:b]
        if b > a and np.isfinite(part).any():
            picks.append(a + int(np.nanargmax(part)))
    return picks


def save_montage(path: Path, real: dict, rendered: dict, frames: list[int], fps: float) -> None:
    rows = []
    for k in frames:
        if k not in real or k not in rendered:
            continue
        row = np.hstack([real[k], np.full((real[k].shape[0], 4, 3), 255, np.uint8), rendered[k]])
        cv2.putText(row, f"{k / fps:.2f} s", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    if rows:
        sheet = np.vstack([np.vstack([r, np.full((4, r.shape[1], 3), 255, np.uint8)]) for r in rows])
        cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


# ---- one clip ----

@dataclass
class ClipReport:
    clip: str
    frames: int
    fps: float
    av_offset_ms: float  # the file's own sound-behind-picture offset that was corrected (0: none)
    faces_found: float  # share of real frames with a face
    jaw_open: dict  # lagged r against the real opening
    loudness: dict  # the loudness envelope, scored the same way
    lip_spread: dict  # lagged r against the real width
    chain: dict | None = None  # rendered vs real (None with --no-render)
    offset_hint: dict | None = None  # offset_hint of the jaw track: a likely A/V offset beyond the window


def evaluate_clip(path: str | Path, engine, out_dir: Path | None = None, render: bool = True,
                  av_offset_ms: float = 0.0) -> ClipReport:
    clip = read_clip(path, av_offset_ms)
    track = track_audio([clip.audio], engine, source=path)
    n = len(clip.frame_times)
    # the montage's frames are chosen after the pass (the most open ones), so every real frame keeps its small crop
    real = measure_mouths(iter_frames(clip.path), crop_at=set(range(n)) if (render and out_dir) else None)
    times = clip.frame_times
    report = ClipReport(
        clip=Path(path).name, frames=n, fps=clip.fps, av_offset_ms=av_offset_ms, faces_found=float(np.isfinite(real.opening).mean()),
        jaw_open=lagged_r(track.params[:, 0], real.opening, times),
        loudness=lagged_r(loudness_envelope(clip.audio), real.opening, times),
        lip_spread=lagged_r(track.params[:, 1], real.width, times),
        offset_hint=offset_hint(track.params[:, 0], real.opening, times))
    if render:
        report.chain = _chain(clip, real, engine, out_dir)
    return report


def _mean_lab(lab: np.ndarray) -> list[float] | None:
    """Mean of per-frame CIELAB colours over the frames that have one (None: none has)."""
    ok = np.isfinite(lab).all(axis=1)
    return np.round(lab[ok].mean(axis=0), 2).tolist() if ok.any() else None


def _mean_profile(profile: np.ndarray) -> list[float] | None:
    """Per-bin mean of per-frame lightness profiles over the frames with pixels in that bin (None: a bin has none)."""
    seen = np.isfinite(profile)
    if not seen.any(axis=0).all():
        return None
    return np.round(np.nansum(np.where(seen, profile, 0), axis=0) / seen.sum(axis=0), 2).tolist()


def profile_error(real: list[float] | None, rendered: list[float] | None) -> float:
    """Mean |real - rendered| L* over the lateral profile's bins (NaN when either is missing)."""
    if real is None or rendered is None:
        return float("nan")
    return float(np.mean(np.abs(np.asarray(real) - np.asarray(rendered))))


def _chain(clip: Clip, real: MouthMeasure, engine, out_dir: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="avatar-eval-") as tmp:
        video = render_clip(clip, Path(tmp), engine)
        picks = montage_frames(real.opening) if out_dir is not None else []
        rendered = measure_mouths(iter_frames(video), crop_at=set(picks))
    n = min(len(real.opening), len(rendered.opening))
    ro, rw, ri, rl = real.opening[:n], real.width[:n], real.inner[:n], real.inner_lab[:n]
    po, pw, pi, pl = rendered.opening[:n], rendered.width[:n], rendered.inner[:n], rendered.inner_lab[:n]
    first = next((c for c in real.inner if np.isfinite(c).all()), None)
    frozen = contour_distance(ri, first[None]) if first is not None else np.full(n, np.nan)
    moving = contour_distance(ri, pi)
    open_cut = np.nanpercentile(ro, 100 * (1 - OPEN_SHARE))
    most_open = np.isfinite(ro) & (ro >= open_cut)
    de = delta_e(rl[most_open], pl[most_open])
    chain = {
        "opening_r": pearson(po, ro), "width_r": pearson(pw, rw),
        "opening_amplitude_ratio": amplitude(po) / amplitude(ro),
        "width_amplitude_ratio": amplitude(pw) / amplitude(rw),
        "inner_lip_distance": float(np.nanmean(moving) * CONTOUR_SCALE),
        "frozen_inner_lip_distance": float(np.nanmean(frozen) * CONTOUR_SCALE),
        "inner_mouth_delta_e": float(np.nanmean(de)) if np.isfinite(de).any() else float("nan"),
        "delta_e_frames": int(np.isfinite(de).sum()), "rendered_faces_found": float(np.isfinite(po).mean()),
        # what the ΔE compares: the mean CIELAB (L, a, b) inside the inner lips on those frames, real and rendered
        # (which of lightness, red-green or yellow-blue is off)
        "inner_mouth_lab_real": _mean_lab(rl[most_open]), "inner_mouth_lab_rendered": _mean_lab(pl[most_open]),
        # and where the light is across the slit: mean L* by |u| (PROFILE_BINS, middle to corners) on those frames
        "inner_mouth_profile_real": _mean_profile(real.inner_profile[:n][most_open]),
        "inner_mouth_profile_rendered": _mean_profile(rendered.inner_profile[:n][most_open]),
    }
    chain["inner_mouth_profile_error"] = profile_error(chain["inner_mouth_profile_real"],
                                                       chain["inner_mouth_profile_rendered"])
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_montage(out_dir / f"{Path(clip.path).stem}_montage.png", real.crops, rendered.crops, picks, clip.fps)
    return chain


# ---- many clips ----

SUMMARY_KEYS = (("jaw_open", "r0"), ("jaw_open", "best_r"), ("jaw_open", "best_lag_ms"), ("loudness", "r0"),
                ("loudness", "best_r"), ("lip_spread", "r0"), ("lip_spread", "best_r"))
CHAIN_KEYS = ("opening_r", "width_r", "opening_amplitude_ratio", "width_amplitude_ratio", "inner_lip_distance",
              "frozen_inner_lip_distance", "inner_mouth_delta_e")


def _fmt(x) -> str:
    if isinstance(x, int):
        return f"{x:+d}"
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def report_table(reports: list[ClipReport]) -> str:
    head = ["clip", "A/V offset ms", "jaw r lag 0", "jaw best r", "lag ms", "loudness r lag 0", "loudness best r", "spread r lag 0",
            "spread best r"]
    chain = any(r.chain for r in reports)
    if chain:
        head += ["rendered open r", "rendered width r", "open amp ratio", "width amp ratio", "inner-lip dist",
                 "frozen dist", "inner-mouth ΔE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        d = asdict(r)
        cells = [r.clip, f"{r.av_offset_ms:g}"] + [_fmt(d[a][b]) for a, b in SUMMARY_KEYS]
        if chain:
            cells += [_fmt(r.chain[k]) if r.chain else "" for k in CHAIN_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    if len(reports) > 1:
        mean = group_mean(reports)
        cells = [f"mean of {len(reports)}", ""] + [_fmt(mean[f"{a}.{b}"]) if b != "best_lag_ms" else ""
                                                  for a, b in SUMMARY_KEYS]
        if chain:
            cells += [_fmt(mean[k]) for k in CHAIN_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_mean(reports: list[ClipReport]) -> dict:
    """Mean of each per-clip figure over the clips."""
    out = {}
    for a, b in SUMMARY_KEYS:
        out[f"{a}.{b}"] = float(np.nanmean([asdict(r)[a][b] for r in reports]))
    for k in CHAIN_KEYS:
        vals = [r.chain[k] for r in reports if r.chain]
        out[k] = float(np.nanmean(vals)) if vals else float("nan")
    return out


def parse_offsets(items: list[str] | None) -> dict[str, float]:
    """`NAME=MS` pairs (a clip's file name and how far its sound trails its picture) -> {name: ms}."""
    out = {}
    for item in items or []:
        name, _, ms = item.rpartition("=")
        try:
            value = float(ms)
        except ValueError:
            value = float("nan")
        if not name or not math.isfinite(value):
            raise ValueError(f"--av-offset takes CLIP=MS (e.g. kim_7s_raw.mp4=120), got {item!r}")
        out[name] = value
    return out


def command_setup(args, command: str):
    """(offsets, engine, out folder or None) of a ruler command's arguments; an int exit code (2: bad offsets,
    1: no engine) when they cannot be used, the reason printed."""
    try:
        offsets = parse_offsets(args.av_offset)
    except ValueError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 2
    try:
        engine = create_engine(args.backend, model_path(args.model))
    except (EngineError, ValueError) as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 1
    return offsets, engine, (Path(args.out) if args.out else None)


def run(args) -> int:
    setup = command_setup(args, "avatar eval video")
    if isinstance(setup, int):
        return setup
    offsets, engine, out_dir = setup
    model = model_path(args.model)
    reports = []
    for clip in args.clips:
        try:
            offset = offsets.get(Path(clip).name, 0.0)
            reports.append(evaluate_clip(clip, engine, out_dir, render=not args.no_render, av_offset_ms=offset))
        except ClipError as e:
            print(f"avatar eval video: {e}", file=sys.stderr)
            return 3
        print(report_table(reports[-1:]).splitlines()[-1], file=sys.stderr)
        hint = reports[-1].offset_hint
        if hint:
            name = reports[-1].clip
            print(f"avatar eval video: {name}: the mouth follows the sound best {hint['lag_ms']:+d} ms off (r "
                  f"{hint['r']:.2f}, {hint['window_r']:.2f} within +-{MAX_LAG_MS} ms): its sound may be out of step "
                  f"with its picture; to measure it aligned: --av-offset {name}={hint['lag_ms'] + offset:g}",
                  file=sys.stderr)
    table = table_path(engine.model_name).name  # which fitted mapping drew the rendered mouths
    text = f"model: {Path(model).name} (mouth table: {table})\n\n" + report_table(reports)
    print(text)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.md").write_text(text + "\n")
        (out_dir / "report.json").write_text(json.dumps({"model": model, "shapes_table": table,
                                                         "clips": [asdict(r) for r in reports]}, indent=1))
    return 0
