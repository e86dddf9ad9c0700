"""Sound pushed by other programs (a TTS engine, an assistant): PCM chunks in, 16 kHz on the pipeline's clock out.

    program ── PCM chunks (any common rate, mono/stereo, s16le/f32le) ──▶ PcmStream: decode, downmix, resample
                                                                             │ 16 kHz float32
                                                                             ▼
    audio worker: source.read() (microphone / silence: the clock) ──▶ PushMixer.mix(block) ──▶ engine

The pushed sound is played out at the source's pace (real time): a program that pushes faster than that queues
sound (up to MAX_QUEUED_SECONDS, then its chunks are refused). While pushed sound plays it replaces the
microphone's (or, with mix=True, is added to it)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import io
import threading
import time
import wave

import numpy as np

from avatar.audio import SAMPLE_RATE, StreamResampler

RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # the common rates accepted
FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # wire sample formats (little-endian)
CHANNELS = (1, 2)  # stereo is averaged to mono
MAX_QUEUED_SECONDS = 20.0  # pushed sound not yet played beyond this: the chunk is refused ("too fast")
MAX_CHUNK_BYTES = 1 << 20  # one WebSocket chunk (1 MiB: 11 s of 48 kHz stereo s16le)
S16_SCALE = 32768.0
WAV_WIDTHS = {1: ("u1", 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2147483648.0)}  # bytes/sample


class PushError(ValueError):
    """Bad pushed input: the message is the error reply the program gets."""


@dataclass(frozen=True)
class PcmFormat:
    rate: int
    channels: int = 1
    format: str = "s16le"

    @property
    def frame_bytes(self) -> int:
        return FORMATS[self.format].itemsize * self.channels


def pcm_format(header: dict) -> PcmFormat:
    """The stream's format from its JSON header ({"rate": 22050, "channels": 1, "format": "s16le"}); PushError
    saying what is wrong and what is accepted."""
    if not isinstance(header, dict):
        raise PushError("The header must be a JSON object like {\"type\": \"start\", \"rate\": 22050, "
                        "\"channels\": 1, \"format\": \"s16le\"}.")
    rate, channels, fmt = header.get("rate"), header.get("channels", 1), header.get("format", "s16le")
    if type(rate) is not int or rate not in RATES:
        raise PushError(f"Unsupported rate {rate!r}: use one of {', '.join(map(str, RATES))} (Hz).")
    if type(channels) is not int or channels not in CHANNELS:
        raise PushError(f"Unsupported channels {channels!r}: use 1 (mono) or 2 (stereo, interleaved).")
    if fmt not in FORMATS:
        raise PushError(f"Unsupported format {fmt!r}: use one of {', '.join(FORMATS)}.")
    return PcmFormat(rate, channels, fmt)


def decode_pcm(data: bytes, fmt: PcmFormat) -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 at fmt.rate."""
    if len(data) % fmt.frame_bytes:
        raise PushError(f"A chunk of {len(data)} bytes is not a whole number of {fmt.channels}-channel "
                        f"{fmt.format} frames ({fmt.frame_bytes} bytes each).")
    samples = np.frombuffer(data, FORMATS[fmt.format]).astype(np.float32)
    if fmt.format == "s16le":
        samples /= S16_SCALE
    elif not np.isfinite(samples).all():
        raise PushError("The chunk holds NaN or infinite float samples.")
    return samples.reshape(-1, fmt.channels).mean(axis=1) if fmt.channels > 1 else samples


def decode_wav(data: bytes) -> tuple[np.ndarray, PcmFormat]:
    """A WAV file's bytes (8/16/32-bit integer PCM) -> mono float32 and its format; PushError when unreadable."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.readframes(-1)
    except (wave.Error, EOFError) as e:
        raise PushError(f"Not a readable WAV file ({e}); send 8/16/32-bit integer PCM, or raw PCM to /input/pcm.")
    fmt = pcm_format({"rate": rate, "channels": channels, "format": "s16le"})
    if width not in WAV_WIDTHS:
        raise PushError(f"Unsupported WAV sample width {8 * width} bits: use 8, 16 or 32-bit integer PCM.")
    dtype, offset, scale = WAV_WIDTHS[width]
    samples = (np.frombuffer(frames, dtype).astype(np.float32) - offset) / scale
    samples = samples[:len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
    return samples, fmt


class PcmStream:
    """One program's stream: its format, and a resampler to 16 kHz carried across its chunks."""

    def __init__(self, fmt: PcmFormat):
        self.format = fmt
        self.resampler = StreamResampler(fmt.rate, SAMPLE_RATE)

    def decode(self, data: bytes, last: bool = False) -> np.ndarray:
        return self.resampler.process(decode_pcm(data, self.format), last=last)


class PushMixer:
    """Pushed 16 kHz sound waiting to be played, taken block by block by the audio worker (`mix`).

    `push` is called from the server's thread, `mix` from the audio worker's; `arrivals` records, per push, when
    it arrived and at which pipeline sample it started playing (for the push → mouth delay benchmark)."""

    def __init__(self, max_queued_seconds: float = MAX_QUEUED_SECONDS):
        self.max_queued = int(max_queued_seconds * SAMPLE_RATE)
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self.mix_with_input = False  # False: pushed sound replaces the microphone's while it plays
        self.played = 0  # pushed samples played so far
        self.arrivals: deque = deque(maxlen=200)  # (time.monotonic() at arrival, played count when it starts)
        self.pushes = 0

    @property
    def queued_seconds(self) -> float:
        return self._queued / SAMPLE_RATE

    def push(self, audio: np.ndarray) -> float:
        """Queue 16 kHz float32 sound; returns the seconds queued after it. PushError ("too fast") when the queue
        would pass max_queued: the chunk is dropped, what was queued plays on."""
        audio = np.asarray(audio, np.float32)
        with self._lock:
            if self._queued + len(audio) > self.max_queued:
                raise PushError(f"Too fast: {self._queued / SAMPLE_RATE:.1f} s of sound is already waiting to be "
                                f"played (at most {self.max_queued / SAMPLE_RATE:.0f} s); this chunk was dropped. "
                                "Push sound in real time, or wait for the queue to play out.")
            if len(audio):
                self.arrivals.append((time.monotonic(), self.played + self._queued))
                self._queue.append(audio)
                self._queued += len(audio)
                self.pushes += 1
            return self._queued / SAMPLE_RATE

    def clear(self) -> None:
        """Drop the sound not played yet (the assistant was interrupted)."""
        with self._lock:
            self._queue.clear()
            self._queued = 0

    def mix(self, block: np.ndarray) -> np.ndarray | None:
        """The source's block with pushed sound in it (replacing or added to the block's own), None when nothing
        was queued (the block is left as it is)."""
        with self._lock:
            if not self._queued or not len(block):
                return None
            pushed = self._take(len(block))
        out = block.copy() if self.mix_with_input else np.zeros_like(block)
        out[:len(pushed)] += pushed
        if self.mix_with_input:
            np.clip(out, -1.0, 1.0, out=out)
        return out

    def _take(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need and self._queue:
            head = self._queue[0]
            if len(head) <= need:
                parts.append(self._queue.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._queue[0] = head[need:]
                need = 0
        out = np.concatenate(parts)
        self._queued -= len(out)
        self.played += len(out)
        return out
