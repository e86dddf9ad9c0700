"""SpeechSource: an AudioSource for sound that is still being made while it plays (text to speech).

    say(chunks) ─▶ producer thread: next(chunks) (the synthesis runs here) → resample to 16 kHz → pending
                                                                                                   │
    output callback (sounddevice's default output, 16 kHz) or the wall clock without one: every block is
    pending speech, or silence while there is none yet ─▶ `played` ─▶ read() ─▶ the live pipeline

What it delivers is exactly what was played: silence before the first sentence is ready and between late ones
keeps the audio clock (blinks, the idle face) running, and `capture_time(i)` is when sample i is heard, so the
mouth moves with the sound. Recordings get the same 16 kHz sound (`take_sound`). Several texts said one after
another are spoken in turn. Nothing here knows about Qt or Piper (avatar.tts makes the chunks).
"""
from __future__ import annotations

from collections import deque
import threading
import time
from typing import Iterable

import numpy as np

from avatar.audio import SAMPLE_RATE, StreamResampler
from avatar.live.sources import SILENT_LEVEL_DB, SoundBlocks, _keep, _NoInput
from avatar.mic import close_stream, level_db, open_stream, start_stream

PRODUCER_IDLE_SECONDS = 0.5  # how long the producer waits for a new text before looking at its stop flag


class SpeechSource(_NoInput):
    """Speech from `say(chunks, rate)` iterables, played through the default output (`device`), else paced by the
    wall clock silently (no output device here). `finished` once everything said has been delivered."""

    def __init__(self, name: str = "speech", device=None, playback: bool = True):
        self.name = name
        self.sound_rate = SAMPLE_RATE
        self.level_db = SILENT_LEVEL_DB
        self.playback_note: str | None = None  # why there is no sound (no output device), None when it plays
        self._lock = threading.Lock()
        self._jobs: deque = deque()  # (chunks, rate) waiting for the producer
        self._pending: deque = deque()  # 16 kHz speech not played yet
        self._played: list[np.ndarray] = []  # blocks played (speech or silence) not read yet
        self._sound: SoundBlocks = []
        self._emitted = 0  # samples played (to the output, or due by the clock)
        self._read = 0  # samples handed to read()
        self._speech_end = 0  # one past the last speech sample played
        self._busy = False  # the producer is making a text's sound
        self._done = False  # finished was answered True: nothing more is taken
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._messages: list[str] = []
        self.spoken = 0  # texts whose sound was made
        self.first_speech_index: int | None = None  # the sample index of the first speech sample played
        self._clock = (0, None)  # (sample, DAC time) of the latest output block
        self._start = time.monotonic()
        self.stream = None
        if playback:
            try:
                import sounddevice as sd  # PortAudio, loaded only to play (and maybe absent: then silent)

                self.stream = start_stream(open_stream(lambda: sd.OutputStream(
                    device=device, samplerate=SAMPLE_RATE, channels=1, dtype="float32", latency="high",
                    callback=self._callback)))
            except Exception as e:  # no usable output: animate silently in real time
                self.stream = None
                self.playback_note = f"No sound output ({e}); the avatar speaks silently."
        else:
            self.playback_note = "Playback is off; the avatar speaks silently."
        self._producer = threading.Thread(target=self._produce, name="speech-producer", daemon=True)
        self._producer.start()

    # -- input ----------------------------------------------------------------------------------------

    def say(self, chunks: Iterable[np.ndarray], rate: int) -> bool:
        """Queue sound made by iterating `chunks` (mono float32 arrays at `rate`), after what is queued already;
        False when this source is finished or closed (make a new one)."""
        with self._lock:
            if self._done or self._closed.is_set():
                return False
            self._jobs.append((iter(chunks), int(rate)))
        self._wake.set()
        return True

    def _produce(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                job = self._jobs.popleft() if self._jobs else None
                self._busy = job is not None
            if job is None:
                self._wake.wait(PRODUCER_IDLE_SECONDS)
                self._wake.clear()
                continue
            try:
                self._make(*job)
            except Exception as e:  # a synthesis failure is said (take_messages) and the next text goes on
                self._messages.append(f"Could not speak the text: {e}")
            finally:
                with self._lock:
                    self._busy = False

    def _make(self, chunks, rate: int) -> None:
        resampler = StreamResampler(rate, SAMPLE_RATE)
        made = 0
        for chunk in chunks:  # synthesized here, as it is asked for
            if self._closed.is_set():
                return
            self._add(resampler.process(np.asarray(chunk, np.float32)))
            made += len(chunk)
        self._add(resampler.process(np.zeros(0, np.float32), last=True))
        if made:
            self.spoken += 1
        else:
            self._messages.append("Nothing in the text could be spoken (no words the voice can say).")

    def _add(self, audio: np.ndarray) -> None:
        if len(audio):
            with self._lock:
                self._pending.append(audio)

    # -- playing --------------------------------------------------------------------------------------

    def _emit(self, n: int) -> np.ndarray:
        """The next `n` samples played: pending speech, then silence."""
        out = np.zeros(n, np.float32)
        with self._lock:
            filled = 0
            while filled < n and self._pending:
                head = self._pending[0]
                take = min(n - filled, len(head))
                out[filled:filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self._pending.popleft()
                else:
                    self._pending[0] = head[take:]
            if filled:
                self._speech_end = self._emitted + filled
                if self.first_speech_index is None:
                    self.first_speech_index = self._emitted
            self._emitted += n
            self._played.append(out)
        return out

    def _callback(self, outdata, frames, time_info, status):
        first = self._emitted
        outdata[:, 0] = self._emit(frames)
        self._clock = (first, time_info.outputBufferDacTime)

    # -- AudioSource ----------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return True

    @property
    def finished(self) -> bool:
        """Everything said has been made and delivered (then nothing more is taken: say() answers False)."""
        with self._lock:
            if not self._done:
                self._done = (not self._jobs and not self._busy and not self._pending
                              and self._read >= self._speech_end)
            return self._done

    def now(self) -> float:
        return self.stream.time if self.stream is not None else time.monotonic()

    def read(self) -> np.ndarray:
        if self.finished:  # nothing more to deliver: the pipeline hands over to silence
            return np.zeros(0, np.float32)
        if self.stream is None:
            due = int((time.monotonic() - self._start) * SAMPLE_RATE)
            if due > self._emitted:
                self._emit(due - self._emitted)
        with self._lock:
            blocks, self._played = self._played, []
        out = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if len(out):
            _keep(self._sound, (out, self._read / SAMPLE_RATE))
            self._read += len(out)
            self.level_db = level_db(out)
        return out

    def take_sound(self) -> SoundBlocks:
        sound, self._sound = self._sound, []
        return sound

    def capture_time(self, index: int) -> float | None:
        if self.stream is None:
            return self._start + index / SAMPLE_RATE
        pos, dac = self._clock
        return None if dac is None else dac + (index - pos) / SAMPLE_RATE

    def take_messages(self) -> list[str]:
        messages, self._messages = self._messages, []
        return messages

    def close(self) -> None:
        """Stop making and playing (what was said and played out plays to its end)."""
        self._closed.set()
        self._wake.set()
        if self.stream is not None:
            close_stream(self.stream, drain=self.finished)  # (finished: let the last buffered sound play out)
