"""Offline rendering: 16 kHz speech (an array or a stream of blocks) to an MP4, as fast as the machine allows."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from avatar.audio import SAMPLE_RATE
from avatar.live.pipeline import LipSync, draw_for_engine
from avatar.mouth_stream import led_in
from avatar.live.track import FEATURE_RATE, SPRING_LEAD, ParamSampler
from avatar.record import BackgroundRecorder, Recorder, RecordError, check_output_path, partial_path

OFFLINE_BLOCK = SAMPLE_RATE  # 1 s of audio per engine pass when rendering a file


class Cancelled(Exception):
    """The user cancelled an offline render; the partial file was removed."""


def _blocks(audio, block: int = OFFLINE_BLOCK):
    """An array as consecutive blocks; any other iterable of blocks as it is."""
    if isinstance(audio, np.ndarray):
        return (audio[i:i + block] for i in range(0, len(audio), block))
    return iter(audio)


class _AudioWindow:
    """The streamed audio not yet handed to the muxer: samples [start, start + len) of the file."""

    def __init__(self):
        self.start = 0
        self._data = np.zeros(0, np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self._data)

    def append(self, block: np.ndarray) -> None:
        self._data = np.concatenate([self._data, np.asarray(block, np.float32)])

    def take(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) (clipped to what arrived); everything before b is let go."""
        out = self._data[max(a - self.start, 0):max(b - self.start, 0)]
        keep = max(b - self.start, 0)
        self._data, self.start = self._data[keep:], self.start + min(keep, len(self._data))
        return out


class _FrameRows:
    """The parameter rows of frames 0, 1, ... in turn: frame k shows the audio at k / fps, so its row is the
    smoother sampled `delay` later, which exists once the track holds rows past that time (a row to spare: the
    interpolation and the spring). One clock for `render_offline` and `frame_params`."""

    def __init__(self, lipsync: LipSync, fps: float, smooth: bool):
        self.track, self.fps = lipsync.track, fps
        self.sampler = ParamSampler(lipsync.track, smooth)
        self.k = 0  # the next frame

    @property
    def time(self) -> float:
        return self.k / self.fps

    def ready(self) -> bool:
        """Whether the next frame's row can be sampled yet, while the input streams in (once it is flushed, every
        row can: the callers take the rest without asking)."""
        latest = self.track.latest_time
        return latest is not None and self.time + self.sampler.delay + SPRING_LEAD <= latest - 1.0 / FEATURE_RATE

    def take(self) -> np.ndarray:
        """The next frame's row (frame `k`, then k moves on)."""
        row = self.sampler.at(self.time + self.sampler.delay)
        self.k += 1
        return row


def frame_params(audio: np.ndarray, engine, n_frames: int, fps: float, smooth: bool = True) -> np.ndarray:
    """(n_frames, P): the parameter rows `render_offline` would draw frames 0 .. n_frames - 1 with at `fps` (its
    smoothing and sampling, frame k at k / fps), rendering nothing: what a calibration pairs with real frames."""
    if engine is not None:
        engine.reset()
    lipsync = LipSync(engine)
    frames = _FrameRows(lipsync, fps, smooth)
    rows = []
    for block in led_in(lipsync, _blocks(np.asarray(audio, np.float32))):
        lipsync.push(block)
        while len(rows) < n_frames and frames.ready():
            rows.append(np.array(frames.take(), np.float32))
    lipsync.flush()
    while len(rows) < n_frames:
        rows.append(np.array(frames.take(), np.float32))
    return np.array(rows, np.float32).reshape(n_frames, -1) if rows else np.zeros((0, 0), np.float32)


def render_offline(audio, engine, renderer, path, fps: int = 30, smooth: bool = True,
                   progress: Callable[[float], None] | None = None,
                   cancelled: Callable[[], bool] | None = None, total_samples: int | None = None,
                   interrupted: Callable[[], bool] | None = None) -> Path:
    """Render 16 kHz speech to an MP4 as fast as the machine allows (encoder on its own thread).

    `audio` is an array or an iterable of blocks (e.g. avatar.audio.iter_audio): it is streamed, each frame rendered
    as soon as the parameters it needs exist, so memory stays flat however long the speech (`total_samples`, when
    known, only scales `progress`). Frame k shows the audio at k / fps: the smoother is sampled `delay` later,
    which offline is known once the engine's look-ahead has seen that far.

    Written fragmented to `partial_path(path)` beside the target, renamed to `path` on success: an existing file at
    `path` survives until then, and a render that is killed or interrupted (KeyboardInterrupt, or a RecordError such
    as a full disk) leaves a playable partial file under that name. Cancelled removes it. `interrupted` is asked
    before every frame and ends the render as a KeyboardInterrupt does (a signal handler's mark: the exception it
    raises can be lost, see avatar.render_cli.StopSignal)."""
    path = check_output_path(path)
    partial = partial_path(path)
    if total_samples is None and isinstance(audio, np.ndarray):
        total_samples = len(audio)
    if engine is not None:
        engine.reset()
    draw_for_engine(renderer, engine)  # this network's parameters drawn with the table fitted to it
    lipsync = LipSync(engine)  # its ParamTrack keeps TRACK_SECONDS: frames take the rows soon after they come
    blocks = led_in(lipsync, _blocks(audio))
    frames = _FrameRows(lipsync, fps, smooth)
    pending = _AudioWindow()
    sink = None

    def render_frames(until_frame: int | None) -> None:
        """Frames whose parameters exist (all of them up to `until_frame` at the end, when every row is in)."""
        nonlocal sink
        while frames.ready() if until_frame is None else frames.k < until_frame:
            if cancelled is not None and cancelled():
                raise Cancelled("Export cancelled.")
            if interrupted is not None and interrupted():
                raise KeyboardInterrupt
            k, t = frames.k, frames.time
            image = renderer.render(frames.take(), t)
            if sink is None:
                sink = BackgroundRecorder(Recorder(partial, image.shape[1], image.shape[0], fps=fps, live=False,
                                                   fragmented=True), wait=True)
            # audio up to the end of this frame, so the muxer gets the two streams interleaved
            a, b = int(round(t * SAMPLE_RATE)), int(round((k + 1) / fps * SAMPLE_RATE))
            sink.add_audio(pending.take(a, b), a / SAMPLE_RATE)
            sink.add_frame(image, t)
            if sink.error:
                raise RecordError(sink.error)
            if progress is not None and total_samples:
                progress(min(1.0, frames.k / (total_samples / SAMPLE_RATE * fps)))

    try:
        for block in blocks:
            if cancelled is not None and cancelled():
                raise Cancelled("Export cancelled.")
            pending.append(block)
            lipsync.push(block)
            render_frames(None)
        lipsync.flush()
        render_frames(int(np.ceil(pending.end / SAMPLE_RATE * fps)))
        if sink is None:
            raise RecordError("The audio is empty: nothing to render.")
    except Cancelled:
        try:
            if sink is not None:
                sink.close()
        except Exception:  # removed anyway
            pass
        finally:
            partial.unlink(missing_ok=True)
        raise
    except BaseException:  # KeyboardInterrupt, a full disk, an unreadable block: finish the partial file
        if sink is not None:
            try:
                sink.close()
            except Exception:  # the error being raised says it; the file keeps what was written
                pass
        raise
    sink.close()  # raises RecordError (the partial keeps what was written) when the encoder or disk failed
    os.replace(partial, path)
    return path
