"""Joins engine, smoother and renderer on one clock: the 16 kHz audio sample clock.

    audio source (mic | file | silence) ──16 kHz──▶ LipSync: log-mel → engine.step (state carried) → smoothing
                                                          │ params per 10 ms, stamped with the audio time they describe
                                                          ▼
    render thread at the display rate: t = newest audio time with parameters → renderer.render(params, t)
                                                          │
                                                          ▼ frame + t + when that audio was captured (latency)
                                             view (GUI) | recorder (frame at pts t, audio at pts sample count)

Nothing here knows about Qt; the GUI only reads `LivePipeline.latest` and the statistics.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from avatar.audio import HOP_LENGTH, SAMPLE_RATE, WIN_LENGTH, LogMelStream, StreamResampler
from avatar.mouth_stream import MouthRows, MouthStream
from avatar.visemes import N_PARAMS, PARAM_NAMES

FEATURE_RATE = SAMPLE_RATE // HOP_LENGTH  # 100 parameter frames per second
# feature frame i covers samples [(i+1)*HOP - WIN, (i+1)*HOP): its centre is this far from i / FEATURE_RATE
FRAME_CENTER_OFFSET = (HOP_LENGTH - WIN_LENGTH / 2) / SAMPLE_RATE  # -2.5 ms
TRACK_SECONDS = 10.0  # parameter history kept for sampling by time
AUDIO_POLL_SECONDS = 0.004  # how often the audio worker looks at a source that cannot wake it (file, silence)
DEFAULT_DISPLAY_FPS = 60
DEFAULT_RECORD_FPS = 30
STATS_WINDOW = 120  # frames the fps / latency statistics look back over
OFFLINE_BLOCK = SAMPLE_RATE  # 1 s of audio per engine pass when rendering a file
# The mouth follows the network's 100 Hz targets through avatar.face.ParamSmoother (a critically damped spring).
# Live, its lag adds straight to mic→pixel latency, so the app runs it faster than the face module's default:
SMOOTHING_OMEGA = 150.0  # rad/s: 7 ms time constant; still rounds off the 100 Hz steps and single-frame jitter
# Each 100 Hz row pulls the spring from one hop *before* its stamp: the newest row is being reached as it is
# shown. Stamped at its own time, the newest row could not move the mouth at all until the next row came (a hop
# of latency, ~10 ms, on every onset).
SPRING_LEAD = 1.0 / FEATURE_RATE  # 10 ms
# the spring's group delay (2 / omega, 13 ms) less the lead: 3 ms; frames are stamped this much earlier
# (recordings, files). Measured on speech, smoothed vs raw track: best aligned at 2 ms (12 ms without the lead).
SMOOTHING_DELAY = 2.0 / SMOOTHING_OMEGA - SPRING_LEAD
# ...and stiffens for big moves (up to 600 rad/s, 1.7 ms): a vowel onset opens the mouth without the spring's lag
SMOOTHING_MAX_OMEGA = 600.0
REOPEN_AFTER_SECONDS = 1.5  # a stream silent this long (since its last sound) is closed and opened again
SETTLE_SECONDS = 1.0  # after a stream resumes or is reopened, sound beyond what the clock allows is stale; dropped
LOSS_TOLERANCE_SECONDS = 0.05  # a resumed stream this far behind the clock lost sound: filled with silence


# ----------------------------------------------------------------------------------------------------
# audio -> mouth parameters on the audio clock


class ParamTrack:
    """Mouth parameters per 10 ms frame, indexed by the audio time they describe; sampled by time."""

    def __init__(self, seconds: float = TRACK_SECONDS):
        self.capacity = int(seconds * FEATURE_RATE)
        self._params = np.zeros((0, N_PARAMS), np.float32)
        self._first = 0  # frame index of _params[0]
        self._lock = threading.Lock()

    def append(self, params: np.ndarray, first_index: int) -> None:
        with self._lock:
            if len(self._params) == 0:
                self._first = first_index
            self._params = np.concatenate([self._params, params])[-self.capacity:]
            self._first = first_index + len(params) - len(self._params)

    def rows_from(self, index: int, until: float) -> tuple[np.ndarray, int]:
        """Rows from frame `index` (or the oldest kept) to time `until`, and the frame index of the first."""
        with self._lock:
            start = max(index, self._first)
            end = int(np.floor((until - FRAME_CENTER_OFFSET) * FEATURE_RATE)) + 1
            return self._params[start - self._first:max(start, end) - self._first].copy(), start

    @staticmethod
    def time_of(index: float) -> float:
        return index / FEATURE_RATE + FRAME_CENTER_OFFSET

    @property
    def latest_time(self) -> float | None:
        with self._lock:
            return None if len(self._params) == 0 else self.time_of(self._first + len(self._params) - 1)

    def at(self, t: float) -> np.ndarray:
        """Parameters at audio time t, linearly interpolated; held at the ends; neutral before any audio."""
        with self._lock:
            if len(self._params) == 0:
                return np.zeros(N_PARAMS, np.float32)
            x = (t - FRAME_CENTER_OFFSET) * FEATURE_RATE - self._first
            x = min(max(x, 0.0), len(self._params) - 1.0)
            i = int(x)
            j = min(i + 1, len(self._params) - 1)
            w = np.float32(x - i)
            return (1 - w) * self._params[i] + w * self._params[j]


class LipSync:
    """16 kHz audio in, raw mouth parameters on the audio clock out (`track`): a MouthStream feeding a ParamTrack."""

    def __init__(self, engine):
        self.stream = MouthStream(engine)
        self.track = ParamTrack()

    @property
    def engine(self):
        return self.stream.engine

    @engine.setter
    def engine(self, engine) -> None:  # swapped between two blocks (LivePipeline.set_engine): the clock runs on
        self.stream.engine = engine

    @property
    def samples_in(self) -> int:
        return self.stream.samples_in

    def reset(self) -> None:
        self.stream.reset()
        self.track = ParamTrack()

    def push(self, audio: np.ndarray) -> int:
        """Feed audio; returns how many new parameter frames reached the track."""
        return self._append(self.stream.push(audio))

    def flush(self) -> None:
        """End of the input (files only): the rows the look-ahead held back, up to the audio's last frame."""
        self._append(self.stream.flush())

    def _append(self, rows: MouthRows) -> int:
        if len(rows):
            self.track.append(rows.params, rows.first)
        return len(rows)


class ParamSampler:
    """Smoothed parameters by time, for one consumer (the render thread, or the offline loop).

    Feeds the track's new 100 Hz rows to the smoother as targets and samples it at the asked time; `delay` is
    how far behind that time the smoothed mouth is (its frames depict t - delay)."""

    def __init__(self, track: ParamTrack, smooth: bool = True):
        self.track = track
        self.smoother = None
        if smooth:
            from avatar.face import ParamSmoother

            self.smoother = ParamSmoother(omega=SMOOTHING_OMEGA, max_omega=SMOOTHING_MAX_OMEGA)
        self.delay = SMOOTHING_DELAY if smooth else 0.0
        self._next = 0  # first track frame not yet given to the smoother

    def at(self, t: float) -> dict[str, float]:
        if self.smoother is None:
            return dict(zip(PARAM_NAMES, map(float, self.track.at(t))))
        rows, first = self.track.rows_from(self._next, until=t + SPRING_LEAD)
        for k, row in enumerate(rows):
            self.smoother.push(self.track.time_of(first + k) - SPRING_LEAD, dict(zip(PARAM_NAMES, map(float, row))))
        self._next = first + len(rows)
        return {**neutral_params(), **self.smoother.sample(t)}


def neutral_params() -> dict[str, float]:
    return dict.fromkeys(PARAM_NAMES, 0.0)


# ----------------------------------------------------------------------------------------------------
# audio sources: each delivers 16 kHz audio in real time and says when a sample was captured / heard


class SilenceSource:
    """Silence paced by the wall clock: keeps the avatar alive (blinks, idle motion) without a microphone."""

    name = "silence"
    alive = True
    finished = False
    level_db = -100.0

    def __init__(self):
        self._start = time.monotonic()
        self._sent = 0

    def now(self) -> float:
        return time.monotonic()

    def read(self) -> np.ndarray:
        due = int((time.monotonic() - self._start) * SAMPLE_RATE)
        n, self._sent = due - self._sent, max(due, self._sent)
        return np.zeros(max(n, 0), np.float32)

    def capture_time(self, index: int) -> float:
        return self._start + index / SAMPLE_RATE

    def close(self) -> None:
        pass


class MicSource:
    """A live microphone, conditioned (gain, gate) and delivered at 16 kHz.

    Captured at 16 kHz when the device or its sound server can convert (PulseAudio, PipeWire, ALSA's plug
    layer all can, in a few ms); otherwise at the device's own rate and resampled here by
    avatar.audio.StreamResampler (about 1 ms more).

    A stream that stops delivering (sound server stalled or restarted, device gone) is waited for: resuming, it
    brings its server's backlog, and only sound it lost is filled with silence. One that does not resume is reopened
    on the same device with back-off (avatar.mic.Reopener), with silence paced by the wall clock until the new
    stream's sound begins (by arrival time). Either way the audio clock, hence a recording's length and A/V sync,
    keeps step with real time. `alive` turns False only when reopening gave up."""

    def __init__(self, device=None, gain_db: float = 0.0, gate_db: float | None = None,
                 samplerate: int | None = None, give_up_after: float | None = None):
        from avatar.mic import REOPEN_GIVE_UP_SECONDS, InputConditioner, Microphone, supports_rate

        if samplerate is None and supports_rate(device, SAMPLE_RATE):
            samplerate = SAMPLE_RATE
        self._device, self._samplerate = device, samplerate
        self._give_up_after = REOPEN_GIVE_UP_SECONDS if give_up_after is None else give_up_after
        self.mic = Microphone(device, samplerate=samplerate).start()
        self.name = self.mic.name
        self.conditioner = InputConditioner(self.mic.samplerate, gain_db, gate_db)
        self.resampler = StreamResampler(self.mic.samplerate, SAMPLE_RATE)
        self.delivered = 0  # 16 kHz samples handed out (silence of gaps included): source sample index
        self._segment = (0, None)  # (source index, ring index) of the current stream's first delivered sample
        self._reopener = None  # replacing a lost stream while set (self.mic is None then)
        self._gap_start = 0.0  # time.monotonic() when the last sample before the gap arrived
        self._gap_filled = 0  # 16 kHz samples of silence delivered for the current gap
        self._gap_anchor = 0  # samples delivered before the gap
        self._settle_until = 0.0  # time.monotonic() until which a resumed stream's bursts are trimmed
        self._stalled = False  # the stream delivers nothing (yet it is kept: the server may come back)
        self._check_loss = False  # a resumed stream: compare its sound with the clock once its backlog is in
        self.gaps: list[tuple[float, float]] = []  # (source time, seconds) of each gap filled with silence
        self._messages: list[str] = []
        self._given_up = False
        self.finished = False

    @property
    def alive(self) -> bool:
        return not self._given_up

    @property
    def level_db(self) -> float:
        return self.conditioner.level_db

    def now(self) -> float:
        # no stream while reopening: capture_time is None then, so nothing compares this clock with another
        return self.mic.stream_time() if self.mic is not None else time.monotonic()

    def read(self) -> np.ndarray:
        mic = self.mic
        if mic is not None and not self._stalled and not mic.alive:
            return self._stall_begins()
        if self._stalled:
            return self._in_stall()
        if mic is None:
            return self._in_gap()
        raw, start = mic.read()
        out = self._deliver(raw, start)
        if time.monotonic() < self._settle_until:
            return out[self._excess(len(out)):]
        if self._check_loss:  # a resumed stream has delivered what its server kept: fill what it lost
            self._check_loss = False
            head = self._fill_loss(len(out))
            self.delivered += len(out)
            return np.concatenate([head, out])
        self.delivered += len(out)
        return out

    def _deliver(self, raw: np.ndarray, start: int) -> np.ndarray:
        """Condition and resample ring samples from ring index `start` (not yet counted as delivered)."""
        if self._segment[1] is None and len(raw):
            self._segment = (self.delivered, start)  # the stream's first sample is the next one delivered
        return self.resampler.process(self.conditioner.process(raw))

    def _excess(self, n: int) -> int:
        """Of `n` new samples, how many the gap's silence already covered; counts the rest as delivered.

        Anchored on arrival times: the newest sample arrived `last_arrival - gap_start` after the last one before
        the gap, so that many samples belong between them. A stream that resumes (or is reopened) while its server
        catches up delivers a burst of stale sound first: that is the part skipped."""
        skip = min(n, max(0, self.delivered + n - self._due()))
        self._segment = (self._segment[0] - skip, self._segment[1])  # the skipped head sits under the silence
        self.delivered += n - skip
        return skip

    def _due(self) -> int:
        """Samples that belong before the newest one, by arrival time since the gap began."""
        return self._gap_anchor + int(round((self.mic.last_arrival - self._gap_start) * SAMPLE_RATE))

    def _fill_loss(self, n: int) -> np.ndarray:
        """Silence, before `n` new samples, for what a resumed stream lost (its server dropped sound), if more than
        a jitter's worth."""
        missing = self._due() - self.delivered - n
        if missing < LOSS_TOLERANCE_SECONDS * SAMPLE_RATE:
            return np.zeros(0, np.float32)
        self.gaps.append((self.delivered / SAMPLE_RATE, missing / SAMPLE_RATE))
        self._segment = (self._segment[0] + missing, self._segment[1])  # the stream's sound comes after it
        self._gap_filled = 0
        silence = self._silence(missing)
        self._messages.append(f"The microphone '{self.name}' stopped delivering sound (the sound server stalled); "
                              f"{missing / SAMPLE_RATE:.1f} s of it was lost and is silence in the recording.")
        return silence

    def _stall_begins(self) -> np.ndarray:
        """The stream stopped delivering: hand out what it had and begin the gap."""
        tail = self._deliver(*self.mic.read())
        self.delivered += len(tail)
        self._gap_start, self._gap_anchor = self.mic.last_arrival, self.delivered
        self._gap_filled = 0
        self._stalled = True
        return np.concatenate([tail, self._in_stall()])

    def _in_stall(self) -> np.ndarray:
        """Nothing while the stream is silent: when it resumes, its server's backlog comes (the sound is kept, the
        gap only delays it); when it does not within REOPEN_AFTER_SECONDS, it is reopened and the gap is silence."""
        from avatar.mic import Reopener

        mic = self.mic
        if mic.stream.active and mic.alive:  # callbacks again: the server is back
            self._stalled = False
            self._settle_until = time.monotonic() + SETTLE_SECONDS
            self._check_loss = True
            return self.read()
        if not mic.stream.active or time.monotonic() - self._gap_start > REOPEN_AFTER_SECONDS:
            self._stalled, self.mic = False, None
            self._reopener = Reopener(mic, self._device, self._samplerate, self._give_up_after)
            return self._in_gap()
        return np.zeros(0, np.float32)

    def _in_gap(self) -> np.ndarray:
        """Silence while reopening; once a new stream delivers, the gap ends where its sound begins."""
        reopener = self._reopener
        if reopener.failed:
            self._given_up = True  # the pipeline says so and falls back to SilenceSource
            return np.zeros(0, np.float32)
        if reopener.mic is None:
            return self._paced_silence()
        self.mic, self._reopener = reopener.mic, None
        return self._gap_ends()

    def _paced_silence(self) -> np.ndarray:
        return self._silence(int((time.monotonic() - self._gap_start) * SAMPLE_RATE) - self._gap_filled)

    def _gap_ends(self) -> np.ndarray:
        """A new stream delivers: silence up to where its newest sound begins, then that sound."""
        mic = self.mic
        self._settle_until = time.monotonic() + SETTLE_SECONDS
        raw, start = mic.read()
        fresh = self.resampler.process(self.conditioner.process(raw))
        head = self._silence(self._due() - len(fresh) - self.delivered)
        self._segment = (self.delivered, start) if len(raw) else (0, None)
        fresh = fresh[self._excess(len(fresh)):]
        gap = self._gap_filled / SAMPLE_RATE
        self.gaps.append((self._gap_anchor / SAMPLE_RATE, gap))
        self._messages.append(f"The microphone '{self.name}' stopped delivering sound for {gap:.1f} s (the sound "
                              "server stalled or restarted). It was reopened; the gap is silence in the recording.")
        return np.concatenate([head, fresh])

    def _silence(self, n: int) -> np.ndarray:
        n = max(0, n)
        self._gap_filled += n
        self.delivered += n
        return np.zeros(n, np.float32)

    def take_messages(self) -> list[str]:
        """Status messages since the last call (a stream reopened), for the pipeline to report."""
        messages, self._messages = self._messages, []
        return messages

    def wait(self, timeout: float) -> None:
        """Returns as soon as the microphone delivers a block (every 5 ms), or after `timeout`."""
        if self.mic is not None:
            self.mic.wait(timeout)
        else:
            time.sleep(timeout)

    def capture_time(self, index: int) -> float | None:
        first_index, first_ring = self._segment
        if self.mic is None or self._stalled or first_ring is None:
            return None
        return self.mic.adc_time(first_ring + int((index - first_index) * self.mic.samplerate / SAMPLE_RATE))

    def close(self) -> None:
        if self._reopener is not None:
            self._reopener.cancel()
        if self.mic is not None and self._stalled:  # closing blocks until a stalled server runs again
            threading.Thread(target=self.mic.close, name="mic-close", daemon=True).start()
        elif self.mic is not None:
            self.mic.close()


class FileSource:
    """Plays an audio file through the default output device; delivers each sample as it is sent to the DAC.

    `capture_time(i)` is when sample i is heard, so the view shows the mouth for the sound being heard.
    Without an output device the file is paced by the wall clock, silently.
    """

    def __init__(self, path, device=None):
        from avatar.audio import load_audio

        self.path = Path(path)
        self.name = self.path.name
        self.audio = load_audio(self.path)  # raises AudioError with a message for unreadable files
        self.level_db = -100.0
        self._pos = 0  # samples handed to the output (or due, when paced by the clock)
        self._read = 0
        self._clock = (0, None)  # (sample, DAC time) of the latest output block
        self.stream = None
        self._start = time.monotonic()
        try:
            import sounddevice as sd

            # generous buffering: playback must not underrun; the DAC timestamps keep the mouth on the sound
            self.stream = sd.OutputStream(device=device, samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                          latency="high", callback=self._callback)
            self.stream.start()
        except Exception:  # no usable output: animate silently in real time
            self.stream = None

    def _callback(self, outdata, frames, time_info, status):
        chunk = self.audio[self._pos:self._pos + frames]
        outdata[:len(chunk), 0] = chunk
        outdata[len(chunk):, 0] = 0
        self._clock = (self._pos, time_info.outputBufferDacTime)
        self._pos += len(chunk)

    @property
    def alive(self) -> bool:
        return True

    @property
    def finished(self) -> bool:
        return self._read >= len(self.audio)

    def now(self) -> float:
        return self.stream.time if self.stream is not None else time.monotonic()

    def read(self) -> np.ndarray:
        if self.stream is None:
            self._pos = min(len(self.audio), int((time.monotonic() - self._start) * SAMPLE_RATE))
        end = self._pos
        out = self.audio[self._read:end]
        self._read = end
        if len(out):
            from avatar.mic import level_db

            self.level_db = level_db(out)
        return out

    def capture_time(self, index: int) -> float | None:
        if self.stream is None:
            return self._start + index / SAMPLE_RATE
        pos, dac = self._clock
        return None if dac is None else dac + (index - pos) / SAMPLE_RATE

    def close(self) -> None:
        if self.stream is not None:
            if self.finished:
                self.stream.stop()  # let the last buffered sound play out
            else:
                self.stream.abort()
            self.stream.close()


# ----------------------------------------------------------------------------------------------------
# the live pipeline


@dataclass
class Frame:
    image: np.ndarray  # HxWx3 uint8 RGB
    t: float  # audio time it depicts (s since the pipeline started)
    params: dict  # the mouth parameters it was rendered with (avatar.visemes.PARAM_NAMES)
    captured: float | None  # when the audio at t was captured (or heard, for files), on the source's clock
    latency: float | None  # s from then to the frame being ready
    seq: int
    ready: float  # time.monotonic() when the frame was ready


@dataclass
class Stats:
    fps: float
    latency_ms: float | None  # median over the last STATS_WINDOW frames
    latency_p95_ms: float | None
    dropped_frames: int
    backend: str


class LivePipeline:
    """Audio worker + render worker; the GUI reads `latest` and `stats()` and never runs the model or renderer."""

    def __init__(self, engine, renderer, fps: int = DEFAULT_DISPLAY_FPS, smooth: bool = True,
                 on_event: Callable[[str], None] | None = None,
                 on_frame: Callable[["Frame"], None] | None = None):
        self.lipsync = LipSync(engine)
        self.sampler = ParamSampler(self.lipsync.track, smooth)
        self.renderer = renderer
        self.fps = fps
        self.on_event = on_event or (lambda message: None)
        self.on_frame = on_frame or (lambda frame: None)  # called on the render thread as each frame is ready
        self.latest: Frame | None = None
        self.dropped_frames = 0
        self._source = SilenceSource()
        self._source_base = 0  # pipeline sample index of the current source's sample 0
        self._recording = None
        self._rec_lock = threading.Lock()
        self._frame_times: deque = deque(maxlen=STATS_WINDOW)
        self._latencies: deque = deque(maxlen=STATS_WINDOW)
        self._lock = threading.Lock()
        self._audio_lock = threading.RLock()  # one audio step (read → engine) at a time; swaps wait for it
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: deque = deque(maxlen=20)  # audio/render worker failures, for the GUI to show

    # -- sources --------------------------------------------------------------------------------------

    @property
    def source(self):
        return self._source

    def set_source(self, source, replacing=None) -> bool:
        """Switch audio source between two steps of the audio worker; the audio clock runs on without a jump.
        With `replacing`, only if that is still the current source (False otherwise, and `source` is closed)."""
        with self._audio_lock:
            with self._lock:
                old = self._source
                if replacing is not None and old is not replacing:
                    old = None
                else:
                    self._source = source
                    self._source_base = self.lipsync.samples_in
        if old is None:
            source.close()
            return False
        if old is not source:
            old.close()  # outside the lock: a file's last sound may take a moment to play out
        return True

    def use_silence(self) -> None:
        self.set_source(SilenceSource())

    def set_engine(self, engine) -> None:
        """Swap the inference backend between two audio blocks; the audio clock runs on."""
        with self._audio_lock:
            engine.reset()
            self.lipsync.engine = engine

    # -- threads --------------------------------------------------------------------------------------

    def start(self) -> "LivePipeline":
        self._stop.clear()
        self._threads = [threading.Thread(target=self._audio_loop, name="audio-worker", daemon=True),
                         threading.Thread(target=self._render_loop, name="render-worker", daemon=True)]
        for th in self._threads:
            th.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=5)
        self._threads = []
        self.stop_recording()
        if self._source is not None:
            self._source.close()

    def _audio_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump_audio()
            except Exception as e:  # a worker must never die silently: report, fall back to silence
                self._report(f"Audio processing failed: {e}")
                self.use_silence()
            wait = getattr(self._source, "wait", None)
            if wait is not None:  # a microphone wakes the worker when a block lands: no polling delay
                wait(AUDIO_POLL_SECONDS)
            else:
                self._stop.wait(AUDIO_POLL_SECONDS)

    def pump_audio(self) -> int:
        """Move whatever the source has into the engine and the recorder; returns samples moved.

        One step holds the audio lock, so a source or engine swapped from another thread never lands between
        reading a block and stamping it."""
        with self._audio_lock:
            source = self._source
            alive = source.alive
            audio = source.read() if alive else np.zeros(0, np.float32)
            start = self.lipsync.samples_in
            if len(audio):
                self.lipsync.push(audio)
        for message in getattr(source, "take_messages", list)():
            self._report(message)
        if not alive:
            if self.set_source(SilenceSource(), replacing=source):
                self._report(f"The microphone '{source.name}' stopped delivering sound (unplugged or taken by "
                             "the system). The avatar keeps running on silence; pick another device.")
            return 0
        if len(audio) == 0:
            if source.finished:
                self.set_source(SilenceSource(), replacing=source)
            return 0
        with self._rec_lock:
            if self._recording is not None:
                self._recording.add_audio(audio, start)
        return len(audio)

    def _render_loop(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            period = 1.0 / self.fps  # read each time: the display rate can change while running
            deadline += period
            delay = deadline - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                missed = int(-delay // period)
                if missed:
                    self.dropped_frames += missed
                    deadline += missed * period
            try:
                self.render_once()
            except Exception as e:
                self._report(f"Rendering failed: {e}")
                self._stop.wait(0.5)

    def display_time(self) -> float | None:
        """The audio time to show now: the newest with parameters, never ahead of what is being heard."""
        latest = self.lipsync.track.latest_time
        if latest is None:
            return None
        with self._lock:
            source, base = self._source, self._source_base
        heard = _source_time_now(source)
        if heard is not None:  # a file being played: depict what is heard now (the spring lags `delay` behind)
            latest = min(latest, base / SAMPLE_RATE + heard + self.sampler.delay)
        return latest

    def render_once(self) -> Frame | None:
        now = self.display_time()
        if now is None:
            return None
        params = self.sampler.at(now)
        image = self.renderer.render(params, now)
        t = now - self.sampler.delay  # the audio time the smoothed mouth depicts
        captured, latency = self._capture_clock(t)
        frame = Frame(image, t, params, captured, latency, (self.latest.seq + 1) if self.latest else 0,
                      time.monotonic())
        self.latest = frame
        self._frame_times.append(time.monotonic())
        if frame.latency is not None:
            self._latencies.append(frame.latency)
        with self._rec_lock:
            if self._recording is not None:
                self._recording.add_frame(image, t)
        self.on_frame(frame)
        return frame

    def _capture_clock(self, t: float) -> tuple[float | None, float | None]:
        """(when the audio at t was captured, how long ago that is), on the source's clock."""
        with self._lock:
            source, base = self._source, self._source_base
        index = int(round(t * SAMPLE_RATE)) - base
        captured = source.capture_time(index) if index >= 0 else None
        return (None, None) if captured is None else (captured, source.now() - captured)

    def _report(self, message: str) -> None:
        self.errors.append(message)
        self.on_event(message)

    # -- statistics -----------------------------------------------------------------------------------

    def stats(self) -> Stats:
        times = list(self._frame_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        lat = np.array(self._latencies) * 1000 if self._latencies else None
        return Stats(fps, None if lat is None else float(np.median(lat)),
                     None if lat is None else float(np.percentile(lat, 95)), self.dropped_frames,
                     getattr(self.lipsync.engine, "label", "?"))

    # -- recording ------------------------------------------------------------------------------------

    def start_recording(self, path, fps: int = DEFAULT_RECORD_FPS) -> "LiveRecording":
        from avatar.record import BackgroundRecorder, Recorder

        from avatar.record import RecordError

        if self.latest is None:  # the frame size comes from the view; the GUI thread never renders
            raise RecordError("The avatar is not showing yet; try again in a moment.")
        height, width = self.latest.image.shape[:2]
        recording = LiveRecording(BackgroundRecorder(Recorder(path, width, height, fps=fps, live=True)),
                                  self.lipsync.samples_in, fps)
        with self._rec_lock:
            self._recording = recording
        return recording

    @property
    def recording(self) -> "LiveRecording | None":
        return self._recording

    def detach_recording(self) -> "LiveRecording | None":
        """Stop feeding the recording and hand it over (to be closed, e.g. on another thread)."""
        if self._recording is not None:
            try:
                self.pump_audio()  # the sound captured up to the click belongs in the file, however busy the worker
            except Exception:  # the audio worker reports its own failures
                pass
        with self._rec_lock:
            recording, self._recording = self._recording, None
        return recording

    def stop_recording(self) -> Path | None:
        """Finish the file (raises RecordError with a message if writing failed; the file keeps what was written)."""
        recording = self.detach_recording()
        return recording.close() if recording is not None else None


def _source_time_now(source) -> float | None:
    """Index (as seconds) of the source sample being captured / heard right now, from its timestamps."""
    probe = source.capture_time(0)
    if probe is None:
        return None
    return source.now() - probe


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


# ----------------------------------------------------------------------------------------------------
# offline rendering


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


def render_offline(audio, engine, renderer, path, fps: int = 30, smooth: bool = True,
                   progress: Callable[[float], None] | None = None,
                   cancelled: Callable[[], bool] | None = None, total_samples: int | None = None) -> Path:
    """Render 16 kHz speech to an MP4 as fast as the machine allows (encoder on its own thread).

    `audio` is an array or an iterable of blocks (e.g. avatar.audio.iter_audio): it is streamed, each frame rendered
    as soon as the parameters it needs exist, so memory stays flat however long the speech (`total_samples`, when
    known, only scales `progress`). Frame k shows the audio at k / fps: the smoother is sampled `delay` later,
    which offline is known once the engine's look-ahead has seen that far.

    Written fragmented to `partial_path(path)` beside the target, renamed to `path` on success: an existing file at
    `path` survives until then, and a render that is killed or interrupted (KeyboardInterrupt, or a RecordError such
    as a full disk) leaves a playable partial file under that name. Cancelled removes it."""
    from avatar.record import BackgroundRecorder, Recorder, check_output_path, partial_path

    path = check_output_path(path)
    partial = partial_path(path)
    if total_samples is None and isinstance(audio, np.ndarray):
        total_samples = len(audio)
    if engine is not None:
        engine.reset()
    lipsync = LipSync(engine)  # its ParamTrack keeps TRACK_SECONDS: frames take the rows soon after they come
    sampler = ParamSampler(lipsync.track, smooth)
    pending = _AudioWindow()
    sink = None
    k = 0  # next frame

    def rows_ready_until() -> float:
        latest = lipsync.track.latest_time
        return -np.inf if latest is None else latest - 1.0 / FEATURE_RATE  # a row to spare: interpolation, spring

    def render_frames(until_frame: int | None) -> None:
        """Frames whose parameters exist (all of them up to `until_frame` at the end, when every row is in)."""
        nonlocal sink, k
        while True:
            t = k / fps
            if until_frame is None:
                if t + sampler.delay + SPRING_LEAD > rows_ready_until():
                    return
            elif k >= until_frame:
                return
            if cancelled is not None and cancelled():
                raise Cancelled("Export cancelled.")
            image = renderer.render(sampler.at(t + sampler.delay), t)
            if sink is None:
                sink = BackgroundRecorder(Recorder(partial, image.shape[1], image.shape[0], fps=fps, live=False,
                                                   fragmented=True), wait=True)
            # audio up to the end of this frame, so the muxer gets the two streams interleaved
            a, b = int(round(t * SAMPLE_RATE)), int(round((k + 1) / fps * SAMPLE_RATE))
            sink.add_audio(pending.take(a, b), a / SAMPLE_RATE)
            sink.add_frame(image, t)
            k += 1
            if sink.error:
                from avatar.record import RecordError

                raise RecordError(sink.error)
            if progress is not None and total_samples:
                progress(min(1.0, k / (total_samples / SAMPLE_RATE * fps)))

    try:
        for block in _blocks(audio):
            if cancelled is not None and cancelled():
                raise Cancelled("Export cancelled.")
            pending.append(block)
            lipsync.push(block)
            render_frames(None)
        lipsync.flush()
        render_frames(int(np.ceil(pending.end / SAMPLE_RATE * fps)))
        if sink is None:
            from avatar.record import RecordError

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


def liveliness_config(switches: dict | None = None):
    """avatar.face.LivelinessConfig with the user's on/off switches applied (unknown names ignored)."""
    from dataclasses import fields

    from avatar.face import LivelinessConfig

    known = {f.name for f in fields(LivelinessConfig)}
    return LivelinessConfig(**{k: bool(v) for k, v in (switches or {}).items() if k in known})


def open_renderer(photo, size: int = 512, background: tuple[int, int, int] | None = None,
                  liveliness: dict | None = None, landmarks=None, device: str = "auto"):
    """The face renderer for a photo: rig (landmarks found, or the hand-placed ones), liveliness, background.

    Raises avatar.face.PhotoError / NoFaceError with a message for the user."""
    import cv2

    from avatar.face import build_rig, create_renderer

    # one OpenCV thread: the app already runs audio, render and encoder threads on few cores, and a second
    # remap thread measured no faster on 2 cores while costing more CPU (1024²: best wall 6.8 -> 10.2 ms)
    cv2.setNumThreads(1)
    rig = build_rig(photo, canvas=size, landmarks=landmarks)
    renderer = create_renderer(rig, device, liveliness_config(liveliness))
    if background is not None:
        renderer = BackgroundFill(renderer, person_mask(rig.image), background)
    return renderer


def person_mask(image: np.ndarray) -> np.ndarray:
    """Soft (H, W, 1) float32 mask of the person in a photo (MediaPipe selfie segmentation, bundled model)."""
    import mediapipe as mp

    from avatar.face.landmarks import pinned_solution

    # the model from mediapipe's own folder, never from ./mediapipe/modules/... of the current folder
    with pinned_solution(mp.solutions.selfie_segmentation.SelfieSegmentation)(model_selection=0) as seg:
        mask = seg.process(np.ascontiguousarray(image)).segmentation_mask
    return np.clip(mask, 0.0, 1.0).astype(np.float32)[..., None]


class BackgroundFill:
    """Wraps a renderer: everything outside the person becomes one colour (e.g. green for keying in OBS)."""

    def __init__(self, renderer, mask: np.ndarray, rgb: tuple[int, int, int]):
        self.renderer = renderer
        self.mask = mask
        self.fill = (1.0 - mask) * np.array(rgb, np.float32)

    def render(self, params, t: float = 0.0) -> np.ndarray:
        frame = self.renderer.render(params, t)
        return (frame * self.mask + self.fill + 0.5).astype(np.uint8)
