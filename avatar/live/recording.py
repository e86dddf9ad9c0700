"""The recording adapter: the live streams into a recorder on one clock, the audio clock.

Sound: the source's own full-rate sound (`AudioSource.take_sound`: a microphone's 48 kHz, a file's own rate), not
the 16 kHz model input; each block is stamped on the 16 kHz sample clock, so it lands where the model heard it.
A source of another rate than the recording's (switched to mid-recording) is resampled to it.

Video: constant frame rate, one frame per 1/fps of AUDIO time. The render thread's frames (at the view's rate)
go to the nearest slot of the grid (avatar.record.Recorder); a slot no frame reached repeats the frame before it.
The renderer is not asked to render the slots itself: it is the render thread's (not thread-safe, its output
buffer reused), a second render per slot would cost the CPU the live view is trying to save, and a stalled
renderer would stall it too. So when the machine cannot keep up (renderer late or stalled, encoder behind), the
file gets repeated frames and stays on the audio clock: never drift, never a gap. Slots more than
FRAME_WAIT_SECONDS of audio behind are filled with repeats as the audio comes, so a stalled renderer still leaves a
file that grows in step with its sound.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.audio import SAMPLE_RATE, StreamResampler

FRAME_WAIT_SECONDS = 0.5  # a slot this far behind the audio is given up on: the frame before repeats (frames
# normally arrive ~0.1 s of audio behind its sound: the engine's look-ahead, the smoothing delay, one view frame)
JOIN_SLACK_SAMPLES = 0.01  # a block stamped this close to where the previous one ended continues it exactly: float
# rounding of the stamps, far below a sample (a real jump, a stale burst dropped, is whole samples)
GAP_FILL_SECONDS = 0.1  # the 16 kHz clock this far ahead of the sound received (a reopened microphone's gap, a
# source without full-rate sound yet): silence is written up to it, as the model's input has silence there


class LiveRecording:
    """Adapts the live streams to a recorder: the sound from the recording's first sample, frames on a fps grid."""

    def __init__(self, sink, start_sample: int, fps: int, sound_rate: int = SAMPLE_RATE):
        self.sink = sink
        self.start_sample = start_sample  # pipeline sample index (16 kHz) where the recording begins
        self.fps = fps
        self.sound_rate = sound_rate  # the recording's audio rate
        self._sound_end = 0.0  # recording time (s) up to which sound was handed to the sink
        self._clock_end = 0.0  # recording time the 16 kHz clock has reached
        self._filled_until = -1  # newest slot asked to be repeated
        self._join: tuple[float, int] | None = None  # (where the last block ended as stamped, in samples at the
        # recording's rate, unrounded; the sample it was written up to): the next block at that stamp continues it
        self._resampler: StreamResampler | None = None  # for a source of another rate, with its anchor:
        self._resampled = (0.0, 0, 0)  # (time of its input's sample 0, input samples so far, output samples so far)

    @property
    def path(self) -> Path:
        return self.sink.path

    @property
    def error(self) -> str | None:
        return self.sink.error

    @property
    def seconds(self) -> float:
        return self.sink.recorder.audio_seconds

    def add_audio(self, audio: np.ndarray, start_sample: int, sound=None, sound_rate: int = SAMPLE_RATE,
                  source_base: int = 0) -> None:
        """The 16 kHz block the engine got (pipeline index `start_sample`) and the source's full-rate `sound` for
        it (AudioSource.take_sound: (samples at `sound_rate`, source time) blocks), with `source_base` the pipeline
        index of the source's sample 0. Without `sound`, the 16 kHz block is the sound (resampled to the
        recording's rate)."""
        if sound is None:
            sound, sound_rate = [(audio, (start_sample - source_base) / SAMPLE_RATE)], SAMPLE_RATE
        offset = (source_base - self.start_sample) / SAMPLE_RATE  # source time -> recording time
        for samples, t in sound:
            rate = sound_rate
            self._add_sound(np.asarray(samples, np.float32), rate, t + offset)
        self._clock_end = max(self._clock_end, (start_sample + len(audio) - self.start_sample) / SAMPLE_RATE)
        if self._clock_end - self._sound_end > GAP_FILL_SECONDS:
            start = max(self._sound_end, 0.0)
            n = int((self._clock_end - GAP_FILL_SECONDS - start) * self.sound_rate)
            if n > 0:
                self._write(np.zeros(n, np.float32), start)
        self._repeat_late_slots()

    def _add_sound(self, samples: np.ndarray, rate: int, pts: float) -> None:
        if rate != self.sound_rate:
            samples, pts = self._resample(samples, rate, pts)
        else:
            self._resampler = None
        if pts < 0:  # before the recording began
            samples, pts = samples[int(round(-pts * self.sound_rate)):], 0.0
        if len(samples):
            self._write(samples, self._joined(pts, len(samples)) / self.sound_rate)

    def _joined(self, pts: float, n: int) -> int:
        """The recording-rate sample a block of n samples stamped `pts` starts at: right after the previous block
        where it continues it (its stamp within JOIN_SLACK_SAMPLES of the previous one's end), else its stamp
        rounded. The stamps carry a constant fraction of a sample (a 48 kHz microphone's resampler delay is
        47.5 samples): rounded one by one, 15 % of the joins gained or lost a sample (a click the 9-14 kHz band
        felt); carried this way every join of a stream is exact."""
        pos = pts * self.sound_rate
        join = self._join
        start = join[1] if join is not None and abs(pos - join[0]) < JOIN_SLACK_SAMPLES else int(round(pos))
        self._join = (pos + n, start + n)
        return start

    def _resample(self, samples: np.ndarray, rate: int, pts: float) -> tuple[np.ndarray, float]:
        """A source of another rate, converted to the recording's; a new converter where its sound jumps."""
        r = self._resampler
        anchor, n_in, n_out = self._resampled
        if r is None or r.in_rate != rate or abs(anchor + n_in / rate - pts) > 1.0 / SAMPLE_RATE:
            r = self._resampler = StreamResampler(rate, self.sound_rate)
            anchor, n_in, n_out = pts, 0, 0
        out = r.process(samples)
        t = anchor + n_out / self.sound_rate - r.delay_seconds  # an output sample depicts its input that early
        self._resampled = (anchor, n_in + len(samples), n_out + len(out))
        return out, t

    def _write(self, samples: np.ndarray, pts: float) -> None:
        self.sink.add_audio(samples, pts)
        self._sound_end = max(self._sound_end, pts + len(samples) / self.sound_rate)

    def _repeat_late_slots(self) -> None:
        slot = int(np.floor((self._clock_end - FRAME_WAIT_SECONDS) * self.fps))
        if slot > self._filled_until:
            self._filled_until = slot
            self.sink.add_frame(None, slot / self.fps)  # the recorder repeats its last frame up to there

    def add_frame(self, image: np.ndarray, t: float) -> None:
        pts = t - self.start_sample / SAMPLE_RATE
        slot = int(round(pts * self.fps))
        if pts < -0.5 / self.fps or slot <= self._filled_until:
            return  # before the recording began, or its slot is taken (a 60 Hz view, a 30 fps file; repeated)
        self._filled_until = slot
        self.sink.add_frame(image.copy(), slot / self.fps)  # the renderer may reuse its output buffer

    def close(self) -> Path:
        return self.sink.close()
