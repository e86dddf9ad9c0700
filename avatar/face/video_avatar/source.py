"""Reading a person's video for an avatar: frames upright (a phone's rotation metadata applied), at a constant
rate (a variable-rate file resampled to its median rate), no larger than MAX_SIDE (4K is scaled down)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from avatar.face.video_avatar import VideoInputError

MAX_SIDE = 1280  # frames are scaled down to this longer side (FaceMesh needs no more; 4K would cost memory)
VFR_SPREAD = 0.25  # frame intervals whose p5..p95 spread exceeds this share of the median: variable frame rate
MIN_FPS, MAX_FPS = 10.0, 120.0


@dataclass
class VideoInfo:
    path: Path
    fps: float  # the constant rate the frames are delivered at
    source_times: np.ndarray  # (N,) each source frame's time from the first, seconds
    picks: np.ndarray  # (M,) source frame index delivered as output frame k (VFR: nearest in time; else arange)
    size: tuple[int, int]  # (width, height) delivered, upright and scaled
    rotation: int  # degrees the file asks the picture to be turned (0, 90, 180, 270)
    scale: float  # delivered / stored pixel size
    notes: list[str] = field(default_factory=list)  # what was handled (rotation, resampling, downscale)

    @property
    def seconds(self) -> float:
        return len(self.picks) / self.fps


def _times(path: Path) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Presentation times of every video frame (from the packets, no decoding), the nominal rate, stored size."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoInputError(f"{path}: the file has no video track")
            stream = container.streams.video[0]
            nominal = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            base = float(stream.time_base)
            pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
            size = (stream.codec_context.width, stream.codec_context.height)
    except av.error.FFmpegError as e:
        raise VideoInputError(f"{path}: not a readable video ({e})") from e
    if not pts:
        raise VideoInputError(f"{path}: the video has no frames")
    times = np.sort(np.array(pts, np.float64)) * base
    return times - times[0], nominal, size


def constant_rate(times: np.ndarray, nominal: float) -> tuple[float, np.ndarray, bool]:
    """(rate, picks, variable): the frames to deliver at a constant rate. A steady file keeps every frame; a variable
    one is resampled at its median interval, each output time taking the nearest source frame."""
    if len(times) < 3:
        return nominal, np.arange(len(times)), False
    dt = np.diff(times)
    median = float(np.median(dt))
    if median <= 0:
        return nominal, np.arange(len(times)), False
    spread = float(np.percentile(dt, 95) - np.percentile(dt, 5)) / median
    if spread <= VFR_SPREAD:
        fps = round(1.0 / median, 3) if abs(1.0 / median - nominal) > 0.05 * nominal else nominal
        return float(np.clip(fps, MIN_FPS, MAX_FPS)), np.arange(len(times)), False
    fps = round(float(np.clip(1.0 / median, MIN_FPS, MAX_FPS)), 3)
    out = np.arange(0.0, times[-1] + 0.5 / fps, 1.0 / fps)
    picks = np.clip(np.searchsorted(times, out), 0, len(times) - 1)
    prev = np.clip(picks - 1, 0, len(times) - 1)
    picks = np.where(np.abs(times[prev] - out) < np.abs(times[picks] - out), prev, picks)
    return fps, picks, True


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The picture as it should be shown: `rotation` is PyAV's frame.rotation (degrees counter-clockwise the
    display matrix turns the stored picture)."""
    k = (int(round(rotation / 90.0)) % 4)
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"{path}: no such file")
    times, nominal, (w, h) = _times(path)
    fps, picks, variable = constant_rate(times, nominal)
    try:
        with av.open(str(path)) as container:
            first = next(container.decode(container.streams.video[0]))
            rotation = int(getattr(first, "rotation", 0) or 0) % 360
    except (av.error.FFmpegError, StopIteration) as e:
        raise VideoInputError(f"{path}: not a readable video ({e})") from e
    if rotation % 180:
        w, h = h, w
    scale = min(1.0, MAX_SIDE / max(w, h))
    notes = []
    if rotation:
        notes.append(f"turned upright ({rotation}° rotation metadata)")
    if variable:
        notes.append(f"variable frame rate: resampled to {fps:.2f} fps")
    if scale < 1.0:
        notes.append(f"scaled down from {w}x{h}")
    size = (int(round(w * scale)), int(round(h * scale)))
    return VideoInfo(path, fps, times, picks, size, rotation, scale, notes)


def iter_frames(info: VideoInfo, stop: int | None = None):
    """(output index, RGB uint8 frame) at the constant rate, upright and scaled; `stop`: deliver frames < stop."""
    want = info.picks if stop is None else info.picks[:stop]
    if not len(want):
        return
    # output frames by the source frame they show (a resampled file shows some twice, skips others)
    by_source: dict[int, list[int]] = {}
    for k, s in enumerate(want.tolist()):
        by_source.setdefault(s, []).append(k)
    last = max(by_source)
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for s, frame in enumerate(container.decode(stream)):
                if s > last:
                    break
                if s not in by_source:
                    continue
                image = upright(frame.to_ndarray(format="rgb24"), info.rotation)
                if info.scale < 1.0:
                    image = cv2.resize(image, info.size, interpolation=cv2.INTER_AREA)
                for k in by_source[s]:
                    yield k, image
    except av.error.FFmpegError as e:
        raise VideoInputError(f"{info.path}: the video breaks off ({e})") from e


def sound(info: VideoInfo, av_offset_ms: float = 0.0) -> np.ndarray | None:
    """The video's sound as 16 kHz mono on the delivered frames' clock (sample 0 plays with frame 0), None for a
    video without an audio track or one that does not decode. `av_offset_ms`: how far a badly muxed file's sound
    trails its picture (moved that much earlier), as `avatar eval video --av-offset` takes it."""
    from avatar.audio import AudioError, delayed, load_audio

    try:
        with av.open(str(info.path)) as container:
            if not container.streams.audio:
                return None
            a, v = container.streams.audio[0], container.streams.video[0]
            audio_start = float(a.start_time * a.time_base) if a.start_time else 0.0
            video_start = float(v.start_time * v.time_base) if v.start_time else 0.0
        audio = load_audio(info.path)
    except (av.error.FFmpegError, AudioError):
        return None
    return delayed(audio, audio_start - video_start - av_offset_ms / 1000.0).astype(np.float32)
