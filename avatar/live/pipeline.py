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
import ctypes
import ctypes.util
from dataclasses import dataclass
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from avatar.audio import HOP_LENGTH, SAMPLE_RATE
from avatar.live.recording import LiveRecording
from avatar.live.sources import AudioSource, SilenceSource
from avatar.live.still import StillFrames
from avatar.live.track import ParamSampler, ParamTrack
from avatar.mouth_stream import REST_BATCH, MouthRows, MouthStream
from avatar.record import BackgroundRecorder, Recorder, RecordError

AUDIO_POLL_SECONDS = 0.004  # how often the audio worker looks at a source that cannot wake it (file, silence)
# With a source that cannot wake it (silence, a file: both paced by the clock), the audio worker sleeps until the
# sound can complete a 10 ms feature hop (nothing reaches the engine before) instead of polling every 4 ms; it wakes
# this much before the hop is due, as the 4 ms poll that follows the sleep brings it to the hop.
HOP_WAKE_EARLY_SECONDS = 0.0015
# A microphone wakes the worker as the block that completes a feature hop lands (Microphone.wait_for); this timeout
# only bounds how late a stalled stream is noticed (avatar.mic.LOST_AFTER_SECONDS is 0.5 s). The 4 ms poll it
# replaces fired between blocks: 204 wake-ups/s on the virtual microphone, ~95 now (5 ms blocks).
MIC_WAIT_SECONDS = 0.05
# Resting on digital silence (avatar.mouth_stream: the network settled, its silent frames batched), the audio worker
# reads every REST_HOPS hops instead of every hop: the idle face's clock advances 20 ms at a time, which moves its
# sway by < 0.15 px (it is drawn in 0.25 px steps), and a microphone block with any sound wakes it at once.
REST_HOPS = 2
DEFAULT_DISPLAY_FPS = 60
DEFAULT_RECORD_FPS = 30
STATS_WINDOW = 120  # frames the fps / latency statistics look back over
PR_SET_NAME = 15  # Linux prctl option: name the calling thread (what top -H, /proc/.../comm and bench live-cpu show)


def draw_for_engine(renderer, engine) -> None:
    """Tell a face renderer which network its parameters come from (its use_network: the table fitted to that
    network draws them); stand-ins without a face, or no engine, leave it as it is."""
    use = getattr(renderer, "use_network", None)
    if use is not None and engine is not None:
        use(getattr(engine, "model_name", ""))


class LipSync:
    """16 kHz audio in, raw mouth parameters on the audio clock out (`track`): a MouthStream feeding a ParamTrack.
    The stream rests on digital silence (avatar.mouth_stream.REST_BATCH): the idle view steps the network 10 frames
    at a time."""

    def __init__(self, engine):
        self.stream = MouthStream(engine, rest_batch=REST_BATCH)
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

    def lead_in(self, audio: np.ndarray) -> None:
        """Files only, before the first push: what the network hears before the file starts (MouthStream.lead_in)."""
        self.stream.lead_in(audio)

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


@dataclass
class Frame:
    image: np.ndarray  # HxWx3 uint8 RGB
    t: float  # audio time it depicts (s since the pipeline started)
    params: np.ndarray  # float32 (N_PARAMS,): the mouth parameters it was rendered with (PARAM_NAMES order)
    captured: float | None  # when the audio at t was captured (or heard, for files), on the source's clock
    latency: float | None  # s from then to the frame being ready
    seq: int
    ready: float  # time.monotonic() when the frame was ready


@dataclass
class AudioBlock:
    """A block of sound as the audio worker hands it to the engine (for `on_audio` observers, e.g. benchmarks)."""
    samples: np.ndarray  # 16 kHz float32, the pipeline's own array: an observer copies what it keeps
    start: int  # pipeline sample index of samples[0] (the audio clock: start / SAMPLE_RATE s)
    captured: float | None  # when samples[0] was captured (heard, for files), on the source's clock
    read_at: float  # the source's clock when the block was read


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
                 on_frame: Callable[[Frame], None] | None = None,
                 on_audio: Callable[[AudioBlock], None] | None = None):
        self._wake = threading.Event()  # set when the render worker must not sleep through ticks (wake())
        self.lipsync = LipSync(engine)
        self.sampler = ParamSampler(self.lipsync.track, smooth)
        self.renderer = renderer
        self.fps = fps
        self.on_event = on_event or (lambda message: None)
        self.on_frame = on_frame or (lambda frame: None)  # called on the render thread as each frame is ready
        self.on_audio = on_audio  # called on the audio worker with each block before the engine gets it
        # other programs' pushed sound (avatar.serve.push.PushMixer.mix): block -> the block with it in, or None
        self.mix_in: Callable[[np.ndarray], np.ndarray | None] | None = None
        self.latest: Frame | None = None
        self.still = StillFrames()  # a frame that would look as the last one is not rendered (live/still.py)
        self.view_hidden = False  # the window is minimised or hidden: nothing is rendered unless something records
        self.frames_wanted = 0  # outputs other than the view and a recording that need frames while it is hidden
        # (a virtual camera, a stream): while above 0, frames are rendered whether the view shows them or not
        self.dropped_frames = 0
        self.audio_steps = 0  # times the audio worker looked at the source (its wake-ups)
        self._source: AudioSource = SilenceSource()
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

    @property
    def renderer(self):
        return self._renderer

    @renderer.setter
    def renderer(self, renderer) -> None:
        draw_for_engine(renderer, self.lipsync.engine)
        self._renderer = renderer
        self.wake()  # a new face is drawn at the next tick

    def wake(self) -> None:
        """Something the idle motion's speed cannot foresee changed (speech, an expression, a new face): the render
        worker looks again at its next tick instead of sleeping through quiet ones (StillFrames.quiet_ticks)."""
        self._wake.set()

    # -- sources --------------------------------------------------------------------------------------

    @property
    def source(self) -> AudioSource:
        return self._source

    def set_source(self, source: AudioSource, replacing: AudioSource | None = None) -> bool:
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

    def set_conditioning(self, gain_db: float, gate_db: float | None) -> None:
        """Input gain and noise gate for the current source, between two audio steps: a step conditions its block
        with one pair of values (InputConditioner.process reads the gate twice)."""
        with self._audio_lock:
            self._source.set_conditioning(gain_db, gate_db)

    def set_engine(self, engine) -> None:
        """Swap the inference backend between two audio blocks; the audio clock runs on."""
        with self._audio_lock:
            engine.reset()
            self.lipsync.engine = engine
            draw_for_engine(self._renderer, engine)

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
        self._wake.set()
        for th in self._threads:
            th.join(timeout=5)
        self._threads = []
        self.stop_recording()
        if self._source is not None:
            self._source.close()

    def _audio_loop(self) -> None:
        name_os_thread("audio-worker")
        while not self._stop.is_set():
            woke, moved = time.monotonic(), 0
            try:
                moved = self.pump_audio()
            except Exception as e:  # a worker must never die silently: report, fall back to silence
                self._report(f"Audio processing failed: {e}")
                self.use_silence()
            self.audio_steps += 1
            source = self._source
            hops = self.hops_per_wake(source)
            rest = woke + self.until_next_hop(hops) - time.monotonic()
            # A microphone is read as each block lands (no sleep past one: it would delay the hop-completing block).
            # Its blocks cannot be told apart before reading them, and reading is what clears its wake-up event.
            if moved and rest > 0 and not source.is_microphone:
                self._stop.wait(rest)
            if source.is_microphone:  # woken as the block that completes the next feature hop lands: no polling
                # delay, and blocks that complete none (every other 5 ms block) are read with the next one; resting,
                # every other hop, or at once on a block with sound
                missing = hops * HOP_LENGTH - self.lipsync.samples_in % HOP_LENGTH
                source.wait(MIC_WAIT_SECONDS, samples=missing, sound=hops > 1)
            else:
                source.wait(AUDIO_POLL_SECONDS)

    def hops_per_wake(self, source) -> int:
        """Feature hops the audio worker lets pass between two reads: REST_HOPS while the network rests on the
        silence of a microphone (woken at once by a block with sound) or of no microphone, and nothing takes the
        audio as it comes (a recording, a camera, pushed sound); else one."""
        if (self._resting_unwatched() and self.mix_in is None
                and (source.is_microphone or isinstance(source, SilenceSource))):
            return REST_HOPS
        return 1

    def _resting_unwatched(self) -> bool:
        """The network rests on silence and nothing takes every frame as it comes (a recording, a camera or the
        browser source): what both the audio worker's and the render worker's resting ask first."""
        return self.lipsync.stream.resting and self._recording is None and self.frames_wanted <= 0

    def until_next_hop(self, hops: int = 1) -> float:
        """Seconds (from the last read of a clock-paced source) until the sound not yet in a feature frame can make
        `hops` more: the log-mel stream holds `samples_in % HOP_LENGTH` samples of a partial hop."""
        missing = hops * HOP_LENGTH - self.lipsync.samples_in % HOP_LENGTH
        return max(0.0, missing / SAMPLE_RATE - HOP_WAKE_EARLY_SECONDS)

    def pump_audio(self) -> int:
        """Move whatever the source has into the engine and the recorder; returns samples moved.

        One step holds the audio lock, so a source or engine swapped from another thread never lands between
        reading a block and stamping it."""
        with self._audio_lock:
            source = self._source
            alive = source.alive
            audio = source.read() if alive else np.zeros(0, np.float32)
            start = self.lipsync.samples_in
            mixed = self.mix_in(audio) if self.mix_in is not None and len(audio) else None
            if mixed is not None:
                audio = mixed
            if len(audio):
                if self.on_audio is not None:
                    self.on_audio(AudioBlock(audio, start, source.capture_time(start - self._source_base),
                                             source.now()))
                self.lipsync.push(audio)
                if not self.lipsync.stream.resting:  # sound (or a network still settling): the mouth may move
                    self._wake.set()
                sound = source.take_sound() if hasattr(source, "take_sound") else None  # full rate, to record
                if mixed is not None:
                    sound = None  # the recording gets the 16 kHz block with the pushed sound in it
                sound_rate, base = getattr(source, "sound_rate", SAMPLE_RATE), self._source_base
        for message in source.take_messages():
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
                self._recording.add_audio(audio, start, sound, sound_rate, base)
        return len(audio)

    def _render_loop(self) -> None:
        name_os_thread("render-worker")
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
            self._wake.clear()  # before the look: a wake-up during it is not lost
            try:
                self.render_once()
                quiet = self.quiet_ticks(period)
            except Exception as e:
                self._report(f"Rendering failed: {e}")
                self._stop.wait(0.5)
                continue
            if quiet:  # sleep through ticks that would find the frame unchanged, to the one after them; speech or
                # a change wakes it sooner (then it looks at the next tick)
                self._wake.wait(deadline + (quiet + 1) * period - time.monotonic())
                slept = min(quiet, max(int((time.monotonic() - deadline) // period), 0))
                self._frame_times.extend(deadline + (k + 1) * period for k in range(slept))  # shown up to date
                deadline += slept * period

    def quiet_ticks(self, period: float) -> int:
        """Display ticks after this one the render worker may sleep through: only while the face rests on silence
        (the network resting, nothing recorded or sent elsewhere), as many as StillFrames.quiet_ticks says."""
        if not self._resting_unwatched() or self.view_hidden or self._wake.is_set():
            return 0
        return self.still.quiet_ticks(period)

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
        """Render the frame for now; None when there is nothing to show yet, or when the last frame still shows
        it (StillFrames: then `latest` stands, on_frame is not called, and a recording gets the last frame again)."""
        now = self.display_time()
        if now is None:
            return None
        if self.view_hidden and self._recording is None and self.frames_wanted <= 0:
            self._frame_times.clear()  # no display rate while nothing is shown
            return None
        params = self.sampler.at(now)
        t = now - self.sampler.delay  # the audio time the smoothed mouth depicts
        if self.latest is None:
            self.still.invalidate()  # nothing shown yet (or it was dropped): render whatever it shows
        image = self.still.render(self.renderer, params, now)
        self._frame_times.append(time.monotonic())  # a display tick either way: the view is up to date
        if image is None:
            with self._rec_lock:
                if self._recording is not None:
                    self._recording.add_frame(self.latest.image, t)
            return None
        captured, latency = self._capture_clock(t)
        frame = Frame(image, t, params, captured, latency, (self.latest.seq + 1) if self.latest else 0,
                      time.monotonic())
        self.latest = frame
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

    def start_recording(self, path, fps: int = DEFAULT_RECORD_FPS) -> LiveRecording:
        if self.latest is None:  # the frame size comes from the view; the GUI thread never renders
            raise RecordError("The avatar is not showing yet; try again in a moment.")
        height, width = self.latest.image.shape[:2]
        rate = getattr(self._source, "sound_rate", SAMPLE_RATE)  # the recording's sound: the source's own rate
        recording = LiveRecording(BackgroundRecorder(Recorder(path, width, height, fps=fps, sample_rate=rate,
                                                              live=True)), self.lipsync.samples_in, fps, rate)
        with self._rec_lock:
            self._recording = recording
        self.wake()  # a recording takes a frame every tick from now on: no quiet ticks to finish first
        return recording

    @property
    def recording(self) -> LiveRecording | None:
        return self._recording

    def detach_recording(self) -> LiveRecording | None:
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


def name_os_thread(name: str) -> None:
    """Give the calling thread an OS-visible name (Linux; Python 3.11 names threads only for itself), so CPU per
    thread can be told apart from outside; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _source_time_now(source) -> float | None:
    """Index (as seconds) of the source sample being captured / heard right now, from its timestamps."""
    probe = source.capture_time(0)
    if probe is None:
        return None
    return source.now() - probe
