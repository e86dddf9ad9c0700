import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from avatar.record import BackgroundRecorder, Recorder, RecordError, check_output_path
from tests.conftest import decode_mp4

SR, FPS, N = 16000, 30, 128
BEEPS = (0.5, 1.5)  # seconds: a white frame and a 1 kHz burst start together


def _frame(t):
    white = any(abs(t - b) < 1e-6 for b in BEEPS)
    return np.full((N, N, 3), 255 if white else 40, np.uint8)


def _audio(seconds):
    t = np.arange(int(seconds * SR)) / SR
    out = 0.02 * np.sin(2 * np.pi * 220 * t)
    for b in BEEPS:
        k = slice(int(b * SR), int((b + 0.1) * SR))
        out[k] += 0.6 * np.sin(2 * np.pi * 1000 * t[k])
    return out.astype(np.float32)


def write_test_signal(rec, seconds, audio_block=320, lead=0.05):
    """Audio in device-sized blocks running `lead` s ahead of the frames, as it does live."""
    audio = _audio(seconds)
    pos = 0
    for i in range(int(round(seconds * FPS))):
        t = i / FPS
        while pos < min(len(audio), int((t + lead) * SR)):
            rec.add_audio(audio[pos:pos + audio_block], pos / SR)
            pos += audio_block
        rec.add_frame(_frame(t), t)
    rec.add_audio(audio[pos:], pos / SR)


def beeps_and_flashes(info):
    sig = info["audio"].astype(np.float64)
    k = int(0.005 * SR)
    rms = np.sqrt(np.convolve(sig ** 2, np.ones(k) / k, "same"))
    above = np.flatnonzero(rms > 0.2)
    starts = above[np.r_[True, np.diff(above) > SR // 10]]
    beeps = info["audio_start"] + (starts - k // 2) / SR
    flashes = info["times"][[f.mean() > 200 for f in info["frames"]]]
    return beeps, flashes


@pytest.mark.parametrize("live", [True, False], ids=["live-background", "offline"])
def test_mp4_is_h264_aac_with_matching_durations_and_sync(tmp_path, live):
    path = tmp_path / "out.mp4"
    rec = Recorder(path, N, N, fps=FPS, live=live)
    sink = BackgroundRecorder(rec) if live else rec
    write_test_signal(sink, 2.0)
    assert sink.close() == path
    info = decode_mp4(path)
    assert (info["video_codec"], info["audio_codec"], info["pix_fmt"]) == ("h264", "aac", "yuv420p")
    assert len(info["frames"]) == 2 * FPS
    video_seconds = info["times"][-1] + 1 / FPS
    audio_seconds = len(info["audio"]) / info["sample_rate"]
    assert abs(video_seconds - audio_seconds) < 0.1
    beeps, flashes = beeps_and_flashes(info)
    assert len(beeps) == len(flashes) == 2
    np.testing.assert_allclose(beeps, flashes, atol=1 / FPS)
    # on time, not only together: a fragmented file remuxed without its first timestamps put both 64 ms late
    assert info["times"][0] == 0.0 and info["audio_start"] == 0.0
    np.testing.assert_allclose(flashes, BEEPS, atol=1e-3)
    np.testing.assert_allclose(beeps, BEEPS, atol=0.005)  # the 5 ms RMS onset estimate is ~4 ms early


def test_fragmented_file_finishes_identical_to_a_regular_one(tmp_path):
    """Offline settings written fragmented (as `avatar render` does) and remuxed on close: the same frames, times
    and audio as the regular writer's file."""
    infos = []
    for fragmented in (False, True):
        rec = Recorder(tmp_path / f"{fragmented}.mp4", N, N, fps=FPS, live=False, fragmented=fragmented)
        write_test_signal(rec, 2.0)
        rec.close()
        infos.append(decode_mp4(rec.path))
    regular, fragmented = infos
    np.testing.assert_array_equal(regular["times"], fragmented["times"])
    assert all(np.array_equal(a, b) for a, b in zip(regular["frames"], fragmented["frames"]))
    np.testing.assert_array_equal(regular["audio"], fragmented["audio"])


def test_audio_gaps_become_silence_and_overlaps_are_trimmed(tmp_path):
    rec = Recorder(tmp_path / "gap.mp4", N, N, live=False)
    rec.add_audio(np.full(1600, 0.5, np.float32), 0.0)
    rec.add_audio(np.full(1600, 0.5, np.float32), 0.2)  # 0.1 s gap
    rec.add_audio(np.full(1600, 0.5, np.float32), 0.25)  # overlaps the previous block by 0.05 s
    assert rec.samples_written == int(0.35 * SR)
    assert rec.add_frame(_frame(0.0), 0.0) is True
    assert rec.add_frame(_frame(0.0), 0.0) is False  # not increasing: dropped
    rec.close()
    audio = decode_mp4(tmp_path / "gap.mp4")["audio"]
    rms = lambda a, b: float(np.sqrt(np.mean(audio[int(a * SR):int(b * SR)] ** 2)))
    assert rms(0.13, 0.17) < 0.05 < 0.3 < rms(0.03, 0.07)
    assert rms(0.23, 0.32) > 0.3


def test_unwritable_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RecordError, match="does not exist"):
        check_output_path(tmp_path / "gone" / "x.mp4")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(RecordError, match="permission denied"):
            Recorder(locked / "x.mp4", N, N)


KILLED_WRITER = """
import sys, time, numpy as np
from avatar.record import Recorder
rec = Recorder(sys.argv[1], 128, 128, fps=30, live=True)
print("ready", flush=True)
for i in range(100000):
    t = i / 30
    rec.add_audio(np.zeros(533, np.float32) + 0.01, t)
    rec.add_frame(np.full((128, 128, 3), i % 255, np.uint8), t)
    time.sleep(1 / 120)
"""


def test_recording_killed_with_sigkill_plays_up_to_the_cut(tmp_path):
    path = tmp_path / "killed.mp4"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(3.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    info = decode_mp4(path)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    # frames are written 4x faster than real time, so 3 s of wall time is far more than one fragment
    assert info["times"][-1] >= 2 * 1.0
    assert len(info["audio"]) / info["sample_rate"] >= 2.0


def test_full_disk_stops_with_a_message_and_keeps_what_was_written(tiny_disk):
    path = tiny_disk / "full.mp4"
    rec = BackgroundRecorder(Recorder(path, N, N, fps=FPS, live=True))
    rng = np.random.default_rng(0)
    for i in range(30 * 60):  # noise frames compress badly: the disk fills within seconds of video
        rec.add_audio(np.zeros(533, np.float32), i / FPS)
        rec.add_frame(rng.integers(0, 255, (N, N, 3), np.uint8), i / FPS)
        if rec.error:
            break
        time.sleep(0.002)
    with pytest.raises(RecordError, match="disk is full"):
        rec.close()
    info = decode_mp4(path)
    assert len(info["frames"]) >= FPS  # at least the first fragment survived
