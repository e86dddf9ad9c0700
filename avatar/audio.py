"""Audio front end: loading files, streaming resampling, and streaming log-mel features.

Every feature frame looks only at the past: frame i covers the WIN_LENGTH samples that end at sample
(i + 1) * HOP_LENGTH, with zeros before the start of the stream. So N samples give exactly N // HOP_LENGTH
frames, and feeding audio in chunks of any size gives the same frames as the whole file.
"""
from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# hard-coded audio hyper-parameters
SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms
WIN_LENGTH = 400  # 25 ms analysis window
N_FFT = 512
N_MELS = 40
F_MIN, F_MAX = 40.0, 7600.0
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 frames/s, one every 10 ms
HISTORY = WIN_LENGTH - HOP_LENGTH  # 240 samples a frame shares with the previous ones
LOG_FLOOR = 1e-10  # power floor before log10: -100 dB, below any real microphone


class AudioError(ValueError):
    """An audio file or stream that cannot be used, with a sentence a person can act on."""


def sanitize(audio: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1]: int PCM scaled, NaN/inf zeroed, overs clipped, so nothing non-finite
    ever reaches the features (and from there the recurrent state)."""
    a = np.asarray(audio)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:  # (samples, channels)
        a = a.mean(axis=1, dtype=np.float32)
    if a.ndim != 1:
        raise AudioError(f"expected mono or (samples, channels) audio, got shape {a.shape}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(a, -1.0, 1.0)


def is_digital_silence(audio: np.ndarray) -> bool:
    """Every sample exactly 0 (what `sanitize` makes 0.0): a gated or muted input, the silence source. NaN counts
    as sound here (sanitize zeroes it on the full path); unsigned PCM's 0 is full scale, not silence."""
    a = np.asarray(audio)
    return a.dtype.kind != "u" and not a.any()


# ----------------------------------------------------------------------------------------------------
# log-mel


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=None)
def mel_filters(n_mels: int = N_MELS) -> np.ndarray:
    """Triangular HTK-mel filterbank, (n_mels, N_FFT // 2 + 1), each filter's area normalised."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz - lower) / (centre - lower)
    falling = (upper - fft_hz) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= 2.0 / (upper - lower)  # equal area: a flat spectrum gives flat mel energies
    fb.flags.writeable = False
    return fb


@lru_cache(maxsize=None)
def _window() -> np.ndarray:
    w = np.hanning(WIN_LENGTH + 1)[:-1]  # periodic Hann
    w.flags.writeable = False
    return w


def _frames_to_log_mel(frames: np.ndarray) -> np.ndarray:
    """(n, WIN_LENGTH) float64 sample frames -> (n, N_MELS) float32 log10 mel power."""
    spec = np.fft.rfft(frames * _window(), n=N_FFT, axis=-1)
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filters().T
    return np.log10(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def _frame(padded: np.ndarray, n_frames: int) -> np.ndarray:
    """Frames i = 0..n_frames-1 of `padded`, frame i = padded[i*HOP : i*HOP + WIN]."""
    return sliding_window_view(padded[: (n_frames - 1) * HOP_LENGTH + WIN_LENGTH], WIN_LENGTH)[::HOP_LENGTH]


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel features of a whole 16 kHz signal: (len(audio) // HOP_LENGTH, N_MELS) float32."""
    a = sanitize(audio).astype(np.float64)
    n_frames = len(a) // HOP_LENGTH
    if n_frames == 0:
        return np.zeros((0, N_MELS), np.float32)
    padded = np.concatenate([np.zeros(HISTORY), a])
    return _frames_to_log_mel(_frame(padded, n_frames))


@lru_cache(maxsize=None)
def silent_features() -> np.ndarray:
    """The log-mel frame of a window of digital silence (every sample 0): LOG_FLOOR's log in every band, exactly
    what `_frames_to_log_mel` gives for it (tests/test_audio.py holds the two equal)."""
    row = np.full((1, N_MELS), np.log10(LOG_FLOOR), np.float32)
    row.flags.writeable = False
    return row


class LogMelStream:
    """Streaming log-mel: push 16 kHz audio in chunks of any size, get every frame as soon as it is complete.

    While the whole window is digital silence (a gated or muted microphone, the silence source) the frames are
    `silent_features()` without an FFT: the same numbers, at a fraction of the cost (the live view's idle)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buffer = np.zeros(HISTORY, np.float64)  # the last HISTORY samples plus any partial hop
        self._silent = True  # every sample in _buffer is 0

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Append samples; return the (n, N_MELS) frames they completed (n may be 0)."""
        if self._silent and is_digital_silence(audio):
            return self._push_silence(len(audio))
        self._buffer = np.concatenate([self._buffer, sanitize(audio).astype(np.float64)])
        self._silent = False
        n_frames = (len(self._buffer) - HISTORY) // HOP_LENGTH
        if n_frames == 0:
            return np.zeros((0, N_MELS), np.float32)
        out = _frames_to_log_mel(_frame(self._buffer, n_frames))
        self._buffer = self._buffer[n_frames * HOP_LENGTH :]
        self._silent = not self._buffer.any()
        return out

    def _push_silence(self, n: int) -> np.ndarray:
        """`n` zero samples onto a buffer of zeros: the frames they complete are all silent_features()."""
        total = len(self._buffer) + n
        n_frames = (total - HISTORY) // HOP_LENGTH
        self._buffer = _zeros(total - n_frames * HOP_LENGTH)
        return np.repeat(silent_features(), n_frames, axis=0)


@lru_cache(maxsize=32)
def _zeros(n: int) -> np.ndarray:
    """A read-only buffer of n float64 zeros (the streams' history while they hear silence: never written to)."""
    out = np.zeros(n, np.float64)
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------------------------------------
# resampling and files


RESAMPLE_ZEROS = 16  # sinc zero crossings each side of the filter centre: group delay 1 ms at 16 kHz
RESAMPLE_BETA = 8.0  # Kaiser window: ~80 dB stopband
RESAMPLE_ROLLOFF = 0.92  # passband edge as a share of the lower Nyquist rate (16 kHz out: flat to 7.4 kHz)


def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """(up, taps) windowed-sinc low-pass split into its `up` phases, taps in input order."""
    taps = -(-2 * RESAMPLE_ZEROS * max(up, down) // up)  # per phase, at the input rate
    n = taps * up
    cutoff = RESAMPLE_ROLLOFF * 0.5 / max(up, down)  # cycles per sample at the upsampled rate
    t = np.arange(n) - (n - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, RESAMPLE_BETA) * up
    # output n reads x[q - r] * h[p + r*up] (m = n*down = q*up + p): reverse r so a window x[q-T+1 .. q] lines up
    return np.ascontiguousarray(h.reshape(taps, up).T[:, ::-1])


class StreamResampler:
    """Streaming rational resampling (polyphase windowed-sinc), e.g. a 48 kHz microphone to 16 kHz.

    Every output sample is produced as soon as the input it needs has arrived: no block-sized bursts (libsoxr's
    high-quality stream holds back ~40 ms), and the filter's own delay is `delay_seconds` (about 1 ms)."""

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        g = gcd(self.in_rate, self.out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        self.phases = None if self.up == self.down else _polyphase_filter(self.up, self.down)
        self.taps = 1 if self.phases is None else self.phases.shape[1]
        # the filter is symmetric: its centre, (length - 1) / 2 at the upsampled rate, is the delay
        self.delay_seconds = 0.0 if self.phases is None else (self.taps * self.up - 1) / 2 / (self.in_rate * self.up)
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros(self.taps - 1)  # zeros before the stream starts
        self._first = -(self.taps - 1)  # absolute input index of _history[0]
        self._next_out = 0  # absolute index of the next output sample
        self._silent = True  # every sample in _history is 0: silence in gives silence out without the filter

    def process(self, audio: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block; `last=True` also flushes the filter's tail."""
        if self._silent and self.phases is not None and is_digital_silence(audio):
            return self._silence(len(audio) + (self.taps // 2 if last else 0))
        a = sanitize(audio)
        if self.phases is None:
            return a
        if last:
            a = np.concatenate([a, np.zeros(self.taps // 2, np.float32)])
        self._history = np.concatenate([self._history, a.astype(np.float64)])
        self._silent = False
        n_stop = self._outputs_until(self._first + len(self._history))
        n = np.arange(self._next_out, n_stop)
        if len(n) == 0:
            self._silent = not self._history.any()
            return np.zeros(0, np.float32)
        m = n * self.down
        q, p = m // self.up, m % self.up
        windows = sliding_window_view(self._history, self.taps)[q - (self.taps - 1) - self._first]
        out = np.einsum("ij,ij->i", windows, self.phases[p]).astype(np.float32)
        self._next_out = int(n_stop)
        drop = max(0, self._oldest_needed() - self._first)
        self._history, self._first = self._history[drop:], self._first + drop
        self._silent = not self._history.any()
        return out

    def _silence(self, n: int) -> np.ndarray:
        """`n` zero samples into a filter holding only zeros: the outputs they complete are zeros (the same count
        and bookkeeping as the filtered path, without it)."""
        end = self._first + len(self._history) + n
        count = max(0, self._outputs_until(end) - self._next_out)
        self._next_out += count
        self._first = max(self._first, self._oldest_needed())
        self._history = _zeros(end - self._first)
        return np.zeros(count, np.float32)

    def _outputs_until(self, end: int) -> int:
        """One past the last output n whose newest input q = n*down // up has arrived, given inputs up to `end`
        (one past the newest input index)."""
        return (end * self.up - 1) // self.down + 1 if end > 0 else 0

    def _oldest_needed(self) -> int:
        """The oldest input index the next output still reads."""
        return (self._next_out * self.down) // self.up - (self.taps - 1)


def iter_audio(path: str | Path, block: int = SAMPLE_RATE, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode any audio file (wav, flac, mp3, m4a/aac, ogg, g722...) to mono float32 at `sr`, `block`
    samples at a time (the last block may be shorter): constant memory, however long the file."""
    import av  # PyAV takes 0.2 s to import, and this module is on `avatar --help`'s path (kept under 0.5 s)

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from e
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path}: the file has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        pending: list[np.ndarray] = []
        n_pending = 0

        def converted(frame):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)

        try:
            for frame in container.decode(stream):
                for piece in converted(frame):
                    pending.append(piece)
                    n_pending += len(piece)
                    while n_pending >= block:
                        joined = np.concatenate(pending)
                        yield sanitize(joined[:block])
                        pending, n_pending = [joined[block:]], n_pending - block
            for piece in converted(None):
                pending.append(piece)
                n_pending += len(piece)
        except av.error.FFmpegError as e:
            raise AudioError(f"{path}: the audio could not be decoded ({e})") from e
        while n_pending > 0:
            joined = np.concatenate(pending)
            yield sanitize(joined[:block])
            pending, n_pending = [joined[block:]], max(0, n_pending - block)


def delayed(audio: np.ndarray, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """`audio` played `seconds` later (silence before it), or earlier for a negative delay (its start cut): a
    video's sound put on the clock of its first frame."""
    shift = int(round(seconds * sr))
    return np.concatenate([np.zeros(shift, np.float32), audio]) if shift > 0 else audio[-shift:]


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A whole audio file as mono float32 at `sr` Hz."""
    blocks = list(iter_audio(path, block=sr * 30, sr=sr))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
