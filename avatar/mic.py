"""Microphone capture: sounddevice (PortAudio) → a lock-free ring buffer.

The audio callback does nothing but copy the block and its ADC timestamp into the ring (python-sounddevice's
examples' rule: no allocation-heavy work, no locks, no model in the callback). Everything else — level meter,
gain, noise gate, resampling to 16 kHz — happens in the consumer (`avatar.live.sources`).

sounddevice is imported where a device is touched, not here: its import loads PortAudio and raises OSError
where the library is missing, and the app must still start (on silence) and say why the microphone cannot open.
"""
from __future__ import annotations

from dataclasses import dataclass
import threading
import time

import numpy as np

BLOCK_SECONDS = 0.005  # callback period: half a feature hop, so a hop's last sample reaches the features soon
# (mic→pixel p95 over 3 alternating runs: 78–85 ms with 5 ms blocks, 86–100 ms with 10 ms blocks)
RING_SECONDS = 4.0  # how far a stalled consumer may fall behind before the oldest audio is dropped
LOST_AFTER_SECONDS = 0.5  # no callback for this long on an open stream = the device is gone (or its server stalled)
REOPEN_FIRST_DELAY = 0.1  # s between the first reopen attempts of a lost microphone...
REOPEN_MAX_DELAY = 2.0  # ...doubling up to this (a restarting sound server takes ~1 s)
REOPEN_GIVE_UP_SECONDS = 10.0  # failed attempts for this long (after the old stream let go) = the device is gone
FIRST_BLOCK_SECONDS = 1.0  # a reopened stream delivering nothing this long failed (measured: 10-600 ms, busy machine)
GATE_RELEASE_SECONDS = 0.150  # the noise gate stays open this long after the level falls below the threshold
LEVEL_FLOOR_DB = -100.0


class MicError(RuntimeError):
    """A microphone problem worded for the user (no device, device busy, device lost)."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    default_samplerate: float
    channels: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.hostapi})"


def list_input_devices() -> list[InputDevice]:
    """Every PortAudio device with at least one input channel."""
    import sounddevice as sd

    hostapis = sd.query_hostapis()
    return [InputDevice(d["index"], d["name"], hostapis[d["hostapi"]]["name"], float(d["default_samplerate"]),
                        int(d["max_input_channels"]))
            for d in sd.query_devices() if d["max_input_channels"] > 0]


def default_input_device() -> InputDevice | None:
    """The system's default input device, or None when there is none."""
    import sounddevice as sd

    devices = list_input_devices()
    try:
        index = sd.default.device[0]
        if index is None or index < 0:
            index = sd.query_devices(kind="input")["index"]
    except Exception:  # PortAudioError when no default input exists
        return devices[0] if devices else None
    return next((d for d in devices if d.index == index), devices[0] if devices else None)


def supports_rate(device: int | str | None, samplerate: int) -> bool:
    """Whether the device (or the sound server behind it) can capture mono float32 at this rate."""
    import sounddevice as sd

    try:
        sd.check_input_settings(device=device, samplerate=samplerate, channels=1, dtype="float32")
        return True
    except Exception:  # PortAudioError / ValueError: unsupported rate or unknown device
        return False


# PortAudio re-initialises (rescan_devices) only while no stream is open: Pa_Terminate closes open streams under the
# code still using them, and it hung the app against a stream stopping on another thread (Rescan clicked as a
# played file's last sound played out). So every stream is opened and closed through open_stream / close_stream and
# the open ones (closing ones included) are known; the lock is held to open a stream and to re-initialise, never
# through a stop or close, which can block for as long as a stalled sound server does.
_PORTAUDIO_LOCK = threading.Lock()
_OPEN_STREAMS: set = set()
_CLOSING_STREAMS: set = set()


def open_stream(make):
    """The stream make() opens (a sounddevice stream, not started), known as open until close_stream."""
    with _PORTAUDIO_LOCK:
        stream = make()
        _OPEN_STREAMS.add(stream)
    return stream


def start_stream(stream):
    """A stream from open_stream, started; closed again when it cannot start."""
    try:
        stream.start()
    except BaseException:
        close_stream(stream)
        raise
    return stream


def close_stream(stream, drain: bool = False) -> None:
    """Stop a stream from open_stream (drain: let its buffered sound play out; else at once) and close it; raises
    what PortAudio raises, the stream no longer counted as open either way. A second call does nothing."""
    with _PORTAUDIO_LOCK:
        if stream not in _OPEN_STREAMS or stream in _CLOSING_STREAMS:
            return
        _CLOSING_STREAMS.add(stream)  # still open to rescan_devices until closed
    try:
        stream.stop() if drain else stream.abort()
        stream.close()
    finally:
        with _PORTAUDIO_LOCK:
            _OPEN_STREAMS.discard(stream)
            _CLOSING_STREAMS.discard(stream)


def rescan_devices() -> bool:
    """Re-initialise PortAudio so devices plugged in (or a sound server started) after import are seen: True.
    False while a stream is open (a file or speech playing): PortAudio then lists the devices it saw last (the
    sound server's own list is asked directly: avatar.devices)."""
    import sounddevice as sd

    with _PORTAUDIO_LOCK:
        if _OPEN_STREAMS:
            return False
        sd._terminate()
        sd._initialize()
    return True


class RingBuffer:
    """Single-producer, single-consumer float32 ring.

    `write` is called from the audio callback: at most two slice copies, then the write counter moves, so a
    reader never sees a half-written block. A reader that falls more than `capacity` behind loses the oldest
    samples (counted in `dropped`) instead of stalling the writer.
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, np.float32)
        self.written = 0  # total samples ever written; the capture clock in samples
        self.read_pos = 0
        self.dropped = 0

    def write(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n > self.capacity:
            samples, n = samples[-self.capacity:], self.capacity
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = samples[:first]
        self._data[:n - first] = samples[first:]
        self.written += len(samples)

    def unread_has_sound(self) -> bool:
        """Whether any sample written since the last read is not 0 (the newest `capacity` of them)."""
        n = min(self.written - self.read_pos, self.capacity)
        start = (self.written - n) % self.capacity
        first = min(n, self.capacity - start)
        return bool(self._data[start:start + first].any() or self._data[:n - first].any())

    def read(self) -> tuple[np.ndarray, int]:
        """All samples written since the last read, and the capture index of the first of them."""
        end = self.written
        if end - self.read_pos > self.capacity:
            self.dropped += end - self.capacity - self.read_pos
            self.read_pos = end - self.capacity
        begin, n = self.read_pos, end - self.read_pos
        start = begin % self.capacity
        first = min(n, self.capacity - start)
        out = np.concatenate([self._data[start:start + first], self._data[:n - first]])
        self.read_pos = end
        return out, begin


class Microphone:
    """One open input stream at the device's own rate, mono, float32, feeding a `RingBuffer`."""

    def __init__(self, device: int | str | None = None, samplerate: float | None = None,
                 block_seconds: float = BLOCK_SECONDS, ring_seconds: float = RING_SECONDS):
        import sounddevice as sd

        self._sd = sd
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as e:
            if device is None:
                raise MicError("No microphone found. Connect one (or start the sound server) and pick it in "
                               "the microphone list.") from e
            raise MicError(f"Microphone {device!r} is not available ({e}). Pick another one.") from e
        self.name = info["name"]
        self.samplerate = int(samplerate or info["default_samplerate"])
        self.ring = RingBuffer(int(ring_seconds * self.samplerate))
        self.status_errors = 0  # PortAudio overflow/underflow flags seen by the callback
        self._clock = (0, None)  # (ring index, ADC time in stream seconds) of the latest block
        self._last_callback = None  # time.monotonic() of the latest callback
        self._arrived = threading.Event()  # set by the callback: the reader wakes at once instead of polling
        self._wake_at = 0  # ring count the reader waits for (wait_for): blocks short of it do not wake it
        self._wake_on_sound = False  # ...unless they hold sound (wait_for(sound=True): a resting reader)
        self._silent_bytes = b""  # a block of digital silence as bytes: a memcmp tells sound in the callback (numpy's
        # any() on a 5 ms block takes ~70 µs in a callback thread woken every 5 ms, the bytes compare ~18 µs)
        try:
            self.stream = open_stream(lambda: sd.InputStream(
                device=info["index"], samplerate=self.samplerate, channels=1, dtype="float32",
                blocksize=int(round(block_seconds * self.samplerate)), latency="low", callback=self._callback))
        except sd.PortAudioError as e:
            raise MicError(f"Could not open the microphone '{self.name}': {e}. It may be in use by another "
                           "program; close it or pick another device.") from e

    def _callback(self, indata, frames, time_info, status):
        # copy, stamp, return: nothing else belongs in here
        if status:
            self.status_errors += 1
        self._clock = (self.ring.written, time_info.inputBufferAdcTime)
        self.ring.write(indata[:, 0])
        self._last_callback = time.monotonic()
        if self.ring.written >= self._wake_at or (self._wake_on_sound and self._has_sound(indata)):
            self._arrived.set()

    def _has_sound(self, indata) -> bool:
        """Any sample not +0.0 (a -0.0 counts as sound: a wake-up too many, never one too few)."""
        raw = indata.tobytes()
        if len(raw) != len(self._silent_bytes):
            self._silent_bytes = bytes(len(raw))
        return raw != self._silent_bytes

    def start(self) -> "Microphone":
        try:
            self.stream.start()
        except self._sd.PortAudioError as e:
            raise MicError(f"Could not start the microphone '{self.name}': {e}") from e
        self._started = time.monotonic()
        return self

    def close(self) -> None:
        try:
            close_stream(self.stream)
        except Exception:  # a lost device may refuse to stop; nothing left to release then
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def read(self) -> tuple[np.ndarray, int]:
        """New samples at `samplerate` since the last read, and the capture index of the first one."""
        self._arrived.clear()  # before reading: a block landing during the read sets it again
        return self.ring.read()

    def wait(self, timeout: float) -> bool:
        """Block until a callback has delivered samples not yet read (True), or `timeout` s pass (False)."""
        return self._arrived.wait(timeout)

    def wait_for(self, samples: int, timeout: float, sound: bool = False) -> bool:
        """Block until the ring holds at least `samples` not yet read (True), or `timeout` s pass (False). Blocks
        that land short of that do not wake the reader: the callback sets the wake-up only once the ring's count
        reaches it (set before the wake-up is cleared and the count looked at, so a block landing in between is
        never missed). sound=True: a block holding any sample that is not 0 wakes it as well, at once."""
        self._wake_at = self.ring.read_pos + samples
        self._wake_on_sound = sound
        try:
            self._arrived.clear()
            if self.ring.written >= self._wake_at or (sound and self.ring.unread_has_sound()):
                return True
            return self._arrived.wait(timeout)
        finally:
            self._wake_at = 0  # plain wait()s wake on every block again
            self._wake_on_sound = False

    @property
    def last_arrival(self) -> float | None:
        """time.monotonic() when the newest sample arrived (when the stream started, before any)."""
        return self._last_callback if self._last_callback is not None else getattr(self, "_started", None)

    @property
    def alive(self) -> bool:
        """False once the stream stopped on its own or callbacks stopped coming (device unplugged, server gone
        or stalled)."""
        if not self.stream.active:
            return False
        last = self.last_arrival
        return last is None or time.monotonic() - last < LOST_AFTER_SECONDS

    def stream_time(self) -> float:
        """PortAudio's stream clock, the one ADC timestamps are on."""
        return self.stream.time

    def adc_time(self, index: int) -> float | None:
        """When capture sample `index` hit the converter, on the stream clock (None before the first block)."""
        block_index, block_adc = self._clock
        if block_adc is None:
            return None
        return block_adc + (index - block_index) / self.samplerate


def backoff_delays(first: float = REOPEN_FIRST_DELAY, cap: float = REOPEN_MAX_DELAY):
    """first, 2 first, 4 first, ... capped at `cap`: the waits between reopen attempts."""
    delay = first
    while True:
        yield delay
        delay = min(cap, 2 * delay)


class Reopener:
    """Replaces a lost `Microphone` on its own thread: closes it, then opens the same device again, retrying with
    back-off, until one delivers sound (`mic`) or `give_up_after` s of failures pass (`failed`).

    A thread, because closing a stream whose sound server is stalled (SIGSTOP, overload) blocks until the server
    runs again, and the audio worker must keep the recording going meanwhile."""

    def __init__(self, lost: Microphone, device, samplerate: int | None,
                 give_up_after: float = REOPEN_GIVE_UP_SECONDS):
        self.mic: Microphone | None = None
        self.failed = False
        self.error: str | None = None  # the latest attempt's failure
        self.attempts = 0
        self._args = (lost, device, samplerate, give_up_after)
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # hand-over of `mic` against `cancel`
        self._thread = threading.Thread(target=self._run, name="mic-reopen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lost, device, samplerate, give_up_after = self._args
        lost.close()
        deadline = time.monotonic() + give_up_after
        for delay in backoff_delays():
            if self._cancel.is_set():
                return
            self.attempts += 1
            mic = self._attempt(device, samplerate)
            if mic is not None:
                with self._lock:
                    cancelled = self._cancel.is_set()
                    if not cancelled:
                        self.mic = mic
                if cancelled:
                    mic.close()
                return
            if time.monotonic() + delay > deadline:
                self.failed = True
                return
            self._cancel.wait(delay)

    def _attempt(self, device, samplerate) -> Microphone | None:
        """A started microphone that has delivered a block, or None."""
        try:
            mic = Microphone(device, samplerate=samplerate).start()
        except MicError as e:
            self.error = str(e)
            return None
        if mic.wait(FIRST_BLOCK_SECONDS):
            return mic
        self.error = "it opened but delivered no sound"
        mic.close()
        return None

    def cancel(self) -> None:
        """Stop trying; a microphone opened meanwhile is closed (by the thread, which may be blocked)."""
        with self._lock:
            self._cancel.set()
            mic, self.mic = self.mic, None
        if mic is not None:
            mic.close()


def level_db(samples: np.ndarray) -> float:
    """RMS level in dB full scale."""
    if len(samples) == 0:
        return LEVEL_FLOOR_DB
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(LEVEL_FLOOR_DB, 20.0 * np.log10(rms + 1e-12))


class InputConditioner:
    """Input gain and a noise gate, applied by the consumer; also the level meter's reading (before the gate)."""

    def __init__(self, samplerate: int, gain_db: float = 0.0, gate_db: float | None = None):
        self.samplerate = samplerate
        self.gain_db = gain_db
        self.gate_db = gate_db  # None = gate off
        self.level_db = LEVEL_FLOOR_DB
        self._open_until = 0  # sample count until which the gate stays open
        self._count = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        out = samples * np.float32(10.0 ** (self.gain_db / 20.0))
        self.level_db = level_db(out)
        self._count += len(out)
        if self.gate_db is None:
            return out
        if self.level_db >= self.gate_db:
            self._open_until = self._count + int(GATE_RELEASE_SECONDS * self.samplerate)
        if self._count > self._open_until:
            return np.zeros_like(out)
        return out
