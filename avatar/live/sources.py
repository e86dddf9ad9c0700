"""Audio sources: each delivers 16 kHz audio in real time and says when a sample was captured / heard.

Beside the 16 kHz model input, each hands out the same sound at its own rate for recordings (`take_sound`): the
microphone's capture rate, the file's rate, 48 kHz silence, stamped on the 16 kHz sample clock.

AudioSource declares what the live pipeline and the window use of one; SilenceSource, MicSource and FileSource
are the three there are."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from avatar.audio import SAMPLE_RATE, StreamResampler, load_audio
from avatar.mic import (LEVEL_FLOOR_DB, REOPEN_GIVE_UP_SECONDS, InputConditioner, Microphone, Reopener,
                        close_stream, level_db, open_stream, start_stream, supports_rate)

REOPEN_AFTER_SECONDS = 1.5  # a stream silent this long (since its last sound) is closed and opened again
SETTLE_SECONDS = 1.0  # after a stream resumes or is reopened, sound beyond what the clock allows is stale; dropped
LOSS_TOLERANCE_SECONDS = 0.05  # a resumed stream this far behind the clock lost sound: filled with silence
SILENT_LEVEL_DB = LEVEL_FLOOR_DB  # the meter's reading for a source with no sound (yet)
RECORD_RATE = 48000  # a microphone is captured at this rate where it (or its sound server) allows: the video
# standard, and what most devices and sound servers run at; the model's 16 kHz is resampled from it here
SILENCE_SOUND_RATE = RECORD_RATE

SoundBlocks = list[tuple[np.ndarray, float]]  # (samples at sound_rate, source time in s of the first one)
MAX_SOUND_BLOCKS = 4000  # blocks kept for take_sound when nobody takes them (the pipeline takes each read's):
# ~20 s of 5 ms microphone blocks, so a source read without a recorder does not grow


@runtime_checkable
class AudioSource(Protocol):
    """16 kHz audio in real time, with the clock it was captured (or is heard) on.

    The pipeline's audio worker calls read / wait / take_messages and checks alive / finished; the render worker
    calls now / capture_time; the window reads name / level_db / is_microphone and sets the conditioning."""

    name: str  # what the user sees it as (a device name, a file name, "silence")
    sound_rate: int  # the rate of take_sound's blocks (a microphone's own, a file's, 48 kHz silence)

    @property
    def alive(self) -> bool:
        """False once it can deliver nothing more (a microphone whose reopening gave up): replaced by silence."""

    @property
    def finished(self) -> bool:
        """Everything delivered (the end of a file): replaced by silence."""

    @property
    def level_db(self) -> float:
        """Level of the latest sound read, for the input meter."""

    @property
    def is_microphone(self) -> bool:
        """Holds an input device open (which PortAudio cannot rescan devices around)."""

    def read(self) -> np.ndarray:
        """The 16 kHz float32 samples that arrived since the last call (possibly none); never blocks."""

    def take_sound(self) -> SoundBlocks:
        """The sound `read` delivered since the last call, at `sound_rate` (for recordings): blocks, each with the
        time of its first sample on read's 16 kHz clock (source sample index / 16000, in s)."""

    def wait(self, timeout: float, samples: int = 1, sound: bool = False) -> None:
        """Returns when new sound may be there (a microphone: as the block lands that brings `samples` more 16 kHz
        samples, or with sound=True any block with a sample that is not 0), or after `timeout` seconds."""

    def now(self) -> float:
        """The source's clock now (the clock capture_time answers on)."""

    def capture_time(self, index: int) -> float | None:
        """When sample `index` (counted from the source's first) was captured or heard; None when unknown."""

    def take_messages(self) -> list[str]:
        """Status messages for the user since the last call (e.g. a stream was reopened)."""

    def set_conditioning(self, gain_db: float, gate_db: float | None) -> None:
        """Input gain and noise gate (None: off), for the sound read from now on; ignored where there is no input."""

    def close(self) -> None:
        """Release the device (a finished file's last sound plays out)."""


class _NoInput:
    """What a source without a microphone answers: no messages, no conditioning, polled by the audio worker."""

    is_microphone = False

    def take_messages(self) -> list[str]:
        return []

    def set_conditioning(self, gain_db: float, gate_db: float | None) -> None:
        pass

    def wait(self, timeout: float, samples: int = 1, sound: bool = False) -> None:
        time.sleep(timeout)  # nothing wakes the worker early: it polls (AUDIO_POLL_SECONDS)


class SilenceSource(_NoInput):
    """Silence paced by the wall clock: keeps the avatar alive (blinks, idle motion) without a microphone."""

    name = "silence"
    alive = True
    finished = False
    level_db = SILENT_LEVEL_DB
    sound_rate = SILENCE_SOUND_RATE

    def __init__(self):
        self._start = time.monotonic()
        self._sent = 0
        self._sound: SoundBlocks = []

    def now(self) -> float:
        return time.monotonic()

    def read(self) -> np.ndarray:
        due = int((time.monotonic() - self._start) * SAMPLE_RATE)
        first, n, self._sent = self._sent, due - self._sent, max(due, self._sent)
        if n > 0:
            silence = np.zeros(_at_rate(due, self.sound_rate) - _at_rate(first, self.sound_rate), np.float32)
            _keep(self._sound, (silence, first / SAMPLE_RATE))
        return np.zeros(max(n, 0), np.float32)

    def take_sound(self) -> SoundBlocks:
        sound, self._sound = self._sound, []
        return sound

    def capture_time(self, index: int) -> float:
        return self._start + index / SAMPLE_RATE

    def close(self) -> None:
        pass


class MicSource:
    """A live microphone, conditioned (gain, gate) and delivered at 16 kHz.

    Captured at 48 kHz where the device or its sound server allows (PulseAudio, PipeWire, ALSA's plug layer and
    most devices do), otherwise at the device's own rate, and resampled to 16 kHz here by
    avatar.audio.StreamResampler (about 1 ms). The captured sound itself, conditioned, is what recordings keep
    (`take_sound`): read from the same ring the callback copies into, stamped on the 16 kHz clock through the
    same stream-to-source mapping as `capture_time`.

    A stream that stops delivering (sound server stalled or restarted, device gone) is waited for: resuming, it
    brings its server's backlog, and only sound it lost is filled with silence. One that does not resume is reopened
    on the same device with back-off (avatar.mic.Reopener), with silence paced by the wall clock until the new
    stream's sound begins (by arrival time). Either way the audio clock, hence a recording's length and A/V sync,
    keeps step with real time. `alive` turns False only when reopening gave up."""

    def __init__(self, device=None, gain_db: float = 0.0, gate_db: float | None = None,
                 samplerate: int | None = None, give_up_after: float | None = None):
        if samplerate is None and supports_rate(device, RECORD_RATE):
            samplerate = RECORD_RATE
        self._device = device
        self._give_up_after = REOPEN_GIVE_UP_SECONDS if give_up_after is None else give_up_after
        self.mic = Microphone(device, samplerate=samplerate).start()
        self._samplerate = self.mic.samplerate  # a reopened stream runs at the same rate as the recording
        self.name = self.mic.name
        self.sound_rate = self.mic.samplerate
        self.conditioner = InputConditioner(self.mic.samplerate, gain_db, gate_db)
        self.resampler = StreamResampler(self.mic.samplerate, SAMPLE_RATE)
        self._raw: list[tuple[np.ndarray, int]] = []  # conditioned capture-rate blocks (ring index) of this read
        self._sound: SoundBlocks = []
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

    @property
    def is_microphone(self) -> bool:
        return True

    def set_conditioning(self, gain_db: float, gate_db: float | None) -> None:
        # two attribute stores: the audio worker's next block is conditioned with the new values
        self.conditioner.gain_db, self.conditioner.gate_db = gain_db, gate_db

    def now(self) -> float:
        # no stream while reopening: capture_time is None then, so nothing compares this clock with another
        return self.mic.stream_time() if self.mic is not None else time.monotonic()

    def read(self) -> np.ndarray:
        out = self._read()
        self._stamp_sound()
        return out

    def take_sound(self) -> SoundBlocks:
        sound, self._sound = self._sound, []
        return sound

    def _stamp_sound(self) -> None:
        """Stamp the capture-rate blocks of this read with their source time, through the mapping the 16 kHz
        samples got in this read (a skipped stale head lands under the gap's silence and is trimmed there).
        A 16 kHz sample depicts the sound `resampler.delay_seconds` before it: the raw sound is that much later."""
        first_index, first_ring = self._segment
        if first_ring is not None:
            rate = self.mic.samplerate if self.mic is not None else self.sound_rate
            for raw, start in self._raw:
                _keep(self._sound, (raw, first_index / SAMPLE_RATE + (start - first_ring) / rate
                                         + self.resampler.delay_seconds))
        self._raw = []

    def _read(self) -> np.ndarray:
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
        return self._condition(raw, start)

    def _condition(self, raw: np.ndarray, start: int) -> np.ndarray:
        """Gain and gate; the result is kept for recordings (`take_sound`) and resampled to 16 kHz for the model."""
        sound = self.conditioner.process(raw)
        if len(sound):
            self._raw.append((sound, start))
        return self.resampler.process(sound)

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
        self._stamp_sound()  # on the old stream's mapping, before a reopened one replaces it
        self.delivered += len(tail)
        self._gap_start, self._gap_anchor = self.mic.last_arrival, self.delivered
        self._gap_filled = 0
        self._stalled = True
        return np.concatenate([tail, self._in_stall()])

    def _in_stall(self) -> np.ndarray:
        """Nothing while the stream is silent: when it resumes, its server's backlog comes (the sound is kept, the
        gap only delays it); when it does not within REOPEN_AFTER_SECONDS, it is reopened and the gap is silence."""
        mic = self.mic
        if mic.stream.active and mic.alive:  # callbacks again: the server is back
            self._stalled = False
            self._settle_until = time.monotonic() + SETTLE_SECONDS
            self._check_loss = True
            return self._read()
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
        fresh = self._condition(raw, start)
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

    def wait(self, timeout: float, samples: int = 1, sound: bool = False) -> None:
        """Returns as soon as the microphone has delivered sound for `samples` more 16 kHz samples (a block lands
        every 5 ms; one that completes no feature hop is left for the next), or with sound=True a block that is not
        digital silence, or after `timeout`. While the stream is stalled or being reopened: after `timeout` (the
        read then follows the gap)."""
        mic = self.mic
        if mic is None:
            time.sleep(timeout)
        elif self._stalled or not mic.alive:
            mic.wait(timeout)
        else:
            # the ring's samples at the capture rate that make `samples` at 16 kHz (one fewer: the resampler's
            # count may round up, and reading one block early costs only the wake-up)
            mic.wait_for(max(1, (samples - 1) * mic.samplerate // SAMPLE_RATE), timeout, sound)

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


class FileSource(_NoInput):
    """Plays an audio file through the default output device; delivers each sample as it is sent to the DAC.

    `capture_time(i)` is when sample i is heard, so the view shows the mouth for the sound being heard.
    Without an output device the file is paced by the wall clock, silently. Recordings get the file's sound at
    its own rate (decoded a second time at that rate; `take_sound`).
    """

    def __init__(self, path, device=None, start: int = 0, decoded: "FileSource | None" = None):
        """start: the 16 kHz sample of the file to begin at (a resumed playback); decoded: a FileSource of the
        same file whose decoded sound is used instead of decoding it again."""
        self.path = Path(path)
        self.name = self.path.name
        if decoded is not None:
            self.audio, self.sound_rate, self.sound = decoded.audio, decoded.sound_rate, decoded.sound
        else:
            self.audio = load_audio(self.path)  # raises AudioError with a message for unreadable files
            self.sound_rate = file_sample_rate(self.path)
            self.sound = self.audio if self.sound_rate == SAMPLE_RATE else load_audio(self.path, sr=self.sound_rate)
        self._sound: SoundBlocks = []
        self.level_db = SILENT_LEVEL_DB
        self._origin = min(max(int(start), 0), len(self.audio))  # file sample that is this source's sample 0
        self._pos = self._origin  # file samples handed to the output (or due, when paced by the clock)
        self._read = self._origin
        self._clock = (self._origin, None)  # (file sample, DAC time) of the latest output block
        self.stream = None
        self._start = time.monotonic()
        try:
            import sounddevice as sd  # PortAudio, loaded only to play a file (and maybe absent: then silent)

            # generous buffering: playback must not underrun; the DAC timestamps keep the mouth on the sound
            self.stream = start_stream(open_stream(lambda: sd.OutputStream(
                device=device, samplerate=SAMPLE_RATE, channels=1, dtype="float32", latency="high",
                callback=self._callback)))
        except Exception:  # no usable output: animate silently in real time
            self.stream = None

    @property
    def position(self) -> int:
        """The file's 16 kHz samples delivered so far (where a paused playback resumes: `resumed`)."""
        return self._read

    def resumed(self, device=None) -> "FileSource":
        """A new source playing the rest of this file from `position` (this one closed: a paused playback)."""
        return FileSource(self.path, device, start=self._read, decoded=self)

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
            self._pos = min(len(self.audio), self._origin + int((time.monotonic() - self._start) * SAMPLE_RATE))
        first, end = self._read, self._pos
        out = self.audio[first:end]
        self._read = end
        if len(out):
            self.level_db = level_db(out)
            sound = self.sound[_at_rate(first, self.sound_rate):_at_rate(end, self.sound_rate)]
            _keep(self._sound, (sound, (first - self._origin) / SAMPLE_RATE))
        return out

    def take_sound(self) -> SoundBlocks:
        sound, self._sound = self._sound, []
        return sound

    def capture_time(self, index: int) -> float | None:
        if self.stream is None:
            return self._start + index / SAMPLE_RATE
        pos, dac = self._clock
        return None if dac is None else dac + (index + self._origin - pos) / SAMPLE_RATE

    def close(self) -> None:
        if self.stream is not None:
            close_stream(self.stream, drain=self.finished)  # (finished: let the last buffered sound play out)


def _keep(sound: SoundBlocks, block: tuple[np.ndarray, float]) -> None:
    sound.append(block)
    if len(sound) > MAX_SOUND_BLOCKS:
        del sound[:len(sound) - MAX_SOUND_BLOCKS]


def _at_rate(index: int, rate: int) -> int:
    """The sample at `rate` that 16 kHz sample `index` falls on (the same instant)."""
    return int(index) * int(rate) // SAMPLE_RATE


def file_sample_rate(path) -> int:
    """The sample rate of a file's first audio track (16 kHz when it cannot be told: then the model's sound)."""
    import av  # only when a file is played (PyAV's import takes 0.2 s)

    try:
        with av.open(str(path)) as container:
            return int(container.streams.audio[0].rate) or SAMPLE_RATE
    except Exception:  # load_audio has opened it already: this cannot fail for a reason worth a message
        return SAMPLE_RATE
