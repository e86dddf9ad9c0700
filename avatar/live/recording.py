"""The recording adapter: the live streams into a recorder on one clock (audio by sample, frames on a fps grid)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.audio import SAMPLE_RATE


class LiveRecording:
    """Adapts the live streams to a recorder: audio from the recording's first sample, frames on a fps grid."""

    def __init__(self, sink, start_sample: int, fps: int):
        self.sink = sink
        self.start_sample = start_sample
        self.fps = fps
        self._next_frame = 0.0  # recording time of the next grid slot

    @property
    def path(self) -> Path:
        return self.sink.path

    @property
    def error(self) -> str | None:
        return self.sink.error

    @property
    def seconds(self) -> float:
        return self.sink.recorder.audio_seconds

    def add_audio(self, audio: np.ndarray, start_sample: int) -> None:
        offset = start_sample - self.start_sample
        if offset < 0:
            audio, offset = audio[-offset:], 0
        if len(audio):
            self.sink.add_audio(audio, offset / SAMPLE_RATE)

    def add_frame(self, image: np.ndarray, t: float) -> None:
        pts = t - self.start_sample / SAMPLE_RATE
        if pts < 0 or pts + 0.5 / self.fps < self._next_frame:
            return  # before the recording began, or the grid slot is already filled (60 Hz view, 30 fps file)
        self.sink.add_frame(image.copy(), pts)  # the renderer may reuse its output buffer
        self._next_frame = (np.floor(pts * self.fps + 0.5) + 1) / self.fps

    def close(self) -> Path:
        return self.sink.close()
