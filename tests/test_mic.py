import time

import numpy as np
import pytest

from avatar.mic import InputConditioner, RingBuffer, level_db
from tests.conftest import write_wav


def test_ring_buffer_wraps_and_keeps_order():
    ring = RingBuffer(10)
    ring.write(np.arange(7, dtype=np.float32))
    out, start = ring.read()
    assert start == 0 and out.tolist() == list(range(7))
    ring.write(np.arange(7, 13, dtype=np.float32))  # crosses the end of the storage
    out, start = ring.read()
    assert start == 7 and out.tolist() == list(range(7, 13))
    assert ring.read()[0].size == 0


def test_ring_buffer_overrun_drops_oldest_and_counts_them():
    ring = RingBuffer(8)
    for k in range(3):
        ring.write(np.arange(5 * k, 5 * k + 5, dtype=np.float32))
    out, start = ring.read()
    assert out.tolist() == list(range(7, 15)) and start == 7
    assert ring.dropped == 7


def test_conditioner_gain_gate_and_level():
    sr = 16000
    cond = InputConditioner(sr, gain_db=6.0, gate_db=-40.0)
    loud = np.full(160, 0.1, np.float32)
    out = cond.process(loud)
    np.testing.assert_allclose(out, 0.1 * 10 ** (6 / 20), rtol=1e-5)
    assert cond.level_db == pytest.approx(-20 + 6, abs=0.01)
    quiet = np.full(160, 1e-4, np.float32)
    assert np.any(cond.process(quiet))  # still inside the release time: gate open
    for _ in range(20):  # 200 ms of quiet: gate closes
        out = cond.process(quiet)
    assert not np.any(out)
    assert level_db(np.zeros(0, np.float32)) == -100.0


def test_unknown_device_is_a_clear_error(virtual_mic):
    from avatar.mic import MicError, Microphone

    with pytest.raises(MicError, match="not available"):
        Microphone(device=999)


def _speechlike(sr, seconds, seed=0):
    """Band-limited (≤ 2 kHz), non-periodic test signal: fractional resampling offsets barely change it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    sig = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in rng.uniform(150, 2000, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t) * np.sin(2 * np.pi * 0.45 * t + 1)
    return (0.3 * sig / 12 * 4 * envelope).astype(np.float32)


def test_virtual_mic_capture_matches_fed_wav(virtual_mic, tmp_path):
    from scipy.signal import correlate

    from avatar.mic import Microphone, default_input_device, list_input_devices

    assert list_input_devices(), "the virtual microphone should be listed"
    assert default_input_device() is not None
    ref = _speechlike(48000, 1.0)
    write_wav(tmp_path / "ref.wav", ref, 48000)
    with Microphone(samplerate=48000) as mic:
        time.sleep(0.2)
        virtual_mic(tmp_path / "ref.wav")
        time.sleep(0.3)
        got, start = mic.read()
        assert mic.alive
        assert mic.adc_time(start + len(got)) is not None
        # the reader is woken by the next block (every 5 ms), and only once per delivery
        assert mic.wait(1.0)
        more, more_start = mic.read()
        assert len(more) > 0 and more_start == start + len(got)
    assert len(got) > 48000
    c = correlate(got, ref, mode="valid", method="fft")
    k = int(np.argmax(c))
    seg = got[k:k + len(ref)]
    similarity = np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref))
    assert similarity > 0.98


def test_portaudio_is_rescanned_only_while_no_stream_is_open(virtual_mic, tmp_path):
    """Pa_Terminate closes open streams under their users (and hung the app against one stopping on another
    thread): a rescan with a file playing or a microphone open leaves PortAudio as it is."""
    from avatar.live.sources import FileSource
    from avatar.mic import Microphone, close_stream, rescan_devices

    assert rescan_devices()
    write_wav(tmp_path / "tone.wav", 0.1 * np.sin(np.arange(16000 * 5) * 0.05), 16000)
    playing = FileSource(tmp_path / "tone.wav")
    assert playing.stream is not None, "the sound server should take the playback"
    try:
        assert not rescan_devices()
        time.sleep(0.2)
        assert playing.stream.active and len(playing.read()) > 1600  # it plays on
    finally:
        playing.close()
    close_stream(playing.stream)  # a second close does nothing
    assert rescan_devices()
    with Microphone():
        assert not rescan_devices()
    assert rescan_devices()


def test_reopen_waits_double_up_to_a_cap():
    from itertools import islice

    from avatar.mic import backoff_delays

    assert list(islice(backoff_delays(0.1, 1.0), 6)) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_the_ring_tells_whether_its_unread_samples_hold_sound_across_the_wrap():
    from avatar.mic import RingBuffer

    ring = RingBuffer(100)
    assert not ring.unread_has_sound()
    ring.write(np.zeros(70, np.float32))
    assert not ring.unread_has_sound()
    ring.read()
    block = np.zeros(60, np.float32)
    block[55] = 1e-6  # past the wrap (70 + 55 = 125 -> 25)
    ring.write(block)
    assert ring.unread_has_sound()
    ring.read()
    assert not ring.unread_has_sound()  # read: nothing unread
    ring.write(np.zeros(60, np.float32))
    assert not ring.unread_has_sound()  # the old sound still sits in the buffer, but it was read


def test_the_callback_tells_a_block_with_any_sound_from_digital_silence():
    from avatar.mic import Microphone

    mic = Microphone.__new__(Microphone)  # the check alone: no device
    mic._silent_bytes = b""
    block = np.zeros((240, 1), np.float32)
    assert not mic._has_sound(block) and not mic._has_sound(np.zeros((80, 1), np.float32))
    block[239, 0] = 1e-9
    assert mic._has_sound(block)
