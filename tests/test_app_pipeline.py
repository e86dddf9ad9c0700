import os

import numpy as np
import pytest

from avatar.live.offline import OFFLINE_BLOCK, render_offline
from avatar.live.pipeline import LipSync, LivePipeline
from avatar.live.sources import (RECORD_RATE, REOPEN_AFTER_SECONDS, AudioSource, FileSource, MicSource,
                                 SilenceSource)
from avatar.live.track import (FEATURE_RATE, FRAME_CENTER_OFFSET, ParamSampler, ParamTrack,
                               neutral_params)
from avatar.visemes import PARAM_NAMES
from tests.conftest import SimpleFrames, decode_mp4, tone_bursts, write_wav

SR = 16000
JAW = PARAM_NAMES.index("jaw_open")


def test_param_track_samples_by_time_and_holds_at_the_ends():
    track = ParamTrack(seconds=1.0)
    assert track.latest_time is None and not track.at(0.3).any()
    rows = np.zeros((10, 4), np.float32)
    rows[:, 0] = np.arange(10) / 10
    track.append(rows, first_index=5)
    assert track.latest_time == pytest.approx(14 / FEATURE_RATE + FRAME_CENTER_OFFSET)
    t7 = 7 / FEATURE_RATE + FRAME_CENTER_OFFSET
    assert track.at(t7)[0] == pytest.approx(0.2)
    assert track.at(t7 + 0.005)[0] == pytest.approx(0.25)
    assert track.at(-1.0)[0] == 0.0 and track.at(99.0)[0] == pytest.approx(0.9)
    track.append(np.ones((200, 4), np.float32), first_index=15)  # longer than the track: oldest dropped
    assert track.at(0.0)[0] == 1.0


def test_smoothed_mouth_moves_on_the_newest_row_and_its_delay_is_what_frames_are_stamped_with():
    track = ParamTrack()
    rows = np.zeros((50, 4), np.float32)
    rows[40:, 0] = 1.0  # a vowel onset in the newest rows
    track.append(rows[:41], first_index=0)
    sampler = ParamSampler(track)
    # shown at the newest row's time (as the live view does), the mouth is already most of the way open: the
    # newest row pulls the spring from a hop earlier instead of waiting for the row after it
    assert sampler.at(track.latest_time)[JAW] > 0.6
    # on a wandering track, the smoothed mouth lines up with the raw one `delay` later (within 4 ms; ~10 ms off
    # when each row only began to pull at its own stamp)
    rng = np.random.default_rng(0)
    wander = np.zeros((600, 4), np.float32)
    wander[:, 0] = np.clip(np.cumsum(rng.normal(0, 0.08, 600)) % 2.0, 0, 1)
    track = ParamTrack()
    track.append(wander, first_index=0)
    sampler = ParamSampler(track)
    ts = np.arange(0.2, 5.8, 1 / 600)
    smooth = np.array([sampler.at(t)[JAW] for t in ts])
    lags = np.arange(0, 0.02, 0.001)
    fit = [np.corrcoef(smooth, [track.at(t - lag)[0] for t in ts])[0, 1] for lag in lags]
    assert abs(lags[int(np.argmax(fit))] - sampler.delay) <= 0.004


@pytest.mark.parametrize("block", [160, 441, 4000])
def test_lipsync_puts_the_mouth_on_the_audio_clock(loudness_engine, block):
    onsets = [0.5, 1.2]
    audio = tone_bursts(onsets, 2.0)
    lipsync = LipSync(loudness_engine)
    for i in range(0, len(audio), block):
        lipsync.push(audio[i:i + block])
    lipsync.flush()
    times = np.arange(0, 2.0, 0.001)
    jaw = np.array([lipsync.track.at(t)[0] for t in times])
    rises = times[1:][(jaw[1:] > 0.5) & (jaw[:-1] <= 0.5)]
    # a 25 ms analysis window centred on its frame: the mouth may open up to half a window early
    np.testing.assert_allclose(rises, onsets, atol=0.0135)


def mouth_opening(frame, neutral):
    return float(np.abs(frame.astype(np.int16) - neutral.astype(np.int16)).mean())


def open_frame_times(info, neutral, threshold):
    opening = np.array([mouth_opening(f, neutral) for f in info["frames"]])
    is_open = opening > threshold
    return info["times"][1:][is_open[1:] & ~is_open[:-1]]


def tone_onsets(info, threshold=0.2):
    sig = info["audio"].astype(np.float64)
    k = int(0.005 * info["sample_rate"])
    rms = np.sqrt(np.convolve(sig ** 2, np.ones(k) / k, "same"))
    above = np.flatnonzero(rms > threshold)
    starts = above[np.r_[True, np.diff(above) > info["sample_rate"] // 10]]
    return info["audio_start"] + (starts - k // 2) / info["sample_rate"]


def test_offline_render_lips_match_the_tone_within_a_frame(tmp_path, loudness_engine):
    fps, onsets = 30, [0.5, 1.3, 2.05]
    renderer = SimpleFrames()
    out = render_offline(tone_bursts(onsets, 3.0), loudness_engine, renderer, tmp_path / "o.mp4", fps=fps)
    info = decode_mp4(out)
    assert (info["video_codec"], info["audio_codec"], info["pix_fmt"]) == ("h264", "aac", "yuv420p")
    assert len(info["frames"]) == 3 * fps
    assert abs(len(info["audio"]) / info["sample_rate"] - 3.0) < 0.05
    neutral = renderer.render(neutral_params(), 0.0)
    opened = open_frame_times(info, neutral, threshold=5.0)
    tones = tone_onsets(info)
    assert len(opened) == len(tones) == 3
    np.testing.assert_allclose(opened, tones, atol=1 / fps)


def test_offline_render_streamed_in_blocks_equals_the_whole_array(tmp_path, loudness_engine):
    """`avatar render` streams the decode: blocks in, frames out as their parameters arrive; the same video."""
    audio = tone_bursts([0.3, 1.1, 2.4, 3.2], 3.7)
    whole = decode_mp4(render_offline(audio, loudness_engine, SimpleFrames(), tmp_path / "whole.mp4", fps=25))
    blocks = (audio[i:i + OFFLINE_BLOCK] for i in range(0, len(audio), OFFLINE_BLOCK))
    streamed = decode_mp4(render_offline(blocks, loudness_engine, SimpleFrames(), tmp_path / "streamed.mp4", fps=25))
    assert len(whole["frames"]) == len(streamed["frames"]) == int(np.ceil(3.7 * 25))
    np.testing.assert_array_equal(whole["times"], streamed["times"])
    assert all(np.array_equal(a, b) for a, b in zip(whole["frames"], streamed["frames"]))
    np.testing.assert_array_equal(whole["audio"], streamed["audio"])
    assert not list(tmp_path.glob("*.partial.mp4"))


def test_a_signal_whose_exception_is_swallowed_still_stops_the_render(tmp_path, loudness_engine):
    """SIGTERM mid-render whose KeyboardInterrupt is lost (raised inside a finaliser, printed as "Exception ignored"):
    the handler's mark stops the render at the next frame, the partial file is finished, the previous OUT kept."""
    import signal

    from avatar.render_cli import StopSignal

    stop = StopSignal()

    class SwallowsTheSignal(SimpleFrames):
        frames = 0

        def render(self, params, t=0.0):
            self.frames += 1
            if self.frames == 30:
                try:
                    stop(signal.SIGTERM, None)
                except KeyboardInterrupt:  # what a __del__ running at that moment does with it
                    pass
            return super().render(params, t)

    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous render")
    renderer = SwallowsTheSignal()
    with pytest.raises(KeyboardInterrupt):
        render_offline(tone_bursts([0.3, 1.1], 4.0), loudness_engine, renderer, out, fps=25,
                       interrupted=stop.requested)
    assert renderer.frames == 30 and stop.signum == signal.SIGTERM
    assert out.read_bytes() == b"the previous render"
    assert len(decode_mp4(tmp_path / "out.partial.mp4")["frames"]) == 30  # the frame drawn when the signal came, no more


def test_live_mic_to_recording_lips_match_voice_within_a_frame(virtual_mic, tmp_path, loudness_engine):
    """Through the real virtual microphone: tone bursts → engine → frames; the MP4's mouth opens with each tone."""
    import time

    onsets = [0.6, 1.4, 2.1]
    write_wav(tmp_path / "bursts.wav", tone_bursts(onsets, 2.8), SR)
    renderer = SimpleFrames()
    pipeline = LivePipeline(loudness_engine, renderer, fps=60).start()
    try:
        pipeline.set_source(MicSource())
        time.sleep(0.3)
        recording = pipeline.start_recording(tmp_path / "live.mp4", fps=30)
        virtual_mic(tmp_path / "bursts.wav")
        time.sleep(0.3)
        path = pipeline.stop_recording()
        stats = pipeline.stats()
    finally:
        pipeline.stop()
    assert path == recording.path and not pipeline.errors
    assert stats.fps > 40 and stats.latency_ms is not None and 0 < stats.latency_ms < 500
    info = decode_mp4(path)
    assert (info["video_codec"], info["audio_codec"], info["pix_fmt"]) == ("h264", "aac", "yuv420p")
    video_seconds = info["times"][-1] - info["times"][0] + 1 / 30
    assert abs(video_seconds - len(info["audio"]) / info["sample_rate"]) < 0.15
    neutral = renderer.render(neutral_params(), 0.0)
    opened = open_frame_times(info, neutral, threshold=5.0)
    tones = tone_onsets(info)
    assert len(tones) == 3 and len(opened) == 3
    np.testing.assert_allclose(opened, tones, atol=1 / 30)


def test_lost_microphone_gives_a_message_and_the_view_runs_on(virtual_mic, monkeypatch):
    """A second, private sound server is killed mid-stream: the pipeline says so and keeps making frames."""
    import time

    from avatar.mic import rescan_devices
    from tests.conftest import _AvEnv

    for key in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_STATE_PATH"):
        monkeypatch.setenv(key, os.environ.get(key, ""))  # restored afterwards
    doomed = _AvEnv("pulse")
    messages = []
    pipeline = None
    try:
        rescan_devices()
        pipeline = LivePipeline(None, SimpleFrames(), fps=30, on_event=messages.append).start()
        pipeline.set_source(MicSource(give_up_after=1.0))
        time.sleep(0.3)
        assert pipeline.source.alive
        doomed.down()
        deadline = time.monotonic() + 3 + 1.0  # reopening is retried for give_up_after before it is given up
        while not messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert messages and "stopped delivering sound" in messages[0]
        assert isinstance(pipeline.source, SilenceSource)
        seq = pipeline.latest.seq
        time.sleep(0.3)
        assert pipeline.latest.seq > seq + 3  # still animating
    finally:
        if pipeline is not None:
            pipeline.stop()
        doomed.down()
    monkeypatch.undo()
    rescan_devices()


def _private_sound_server(monkeypatch):
    """A PulseAudio daemon of this test's own (faults injected into it touch nothing else); env restored after."""
    from avatar.mic import rescan_devices
    from tests.conftest import _AvEnv

    for key in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_STATE_PATH"):
        monkeypatch.setenv(key, os.environ.get(key, ""))  # restored by monkeypatch.undo()
    server = _AvEnv("pulse")
    rescan_devices()
    return server


def _rms(audio, sr, a, b):
    seg = audio[int(a * sr):int(b * sr)].astype(np.float64)
    return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0


@pytest.mark.parametrize("stall", [1.0, 2.5], ids=["resumes", "reopened"])
def test_sound_server_stall_mid_recording_is_bridged_and_the_voice_continues(virtual_mic, tmp_path, monkeypatch,
                                                                              loudness_engine, stall):
    """Fault injection: the test's own sound server is paused (SIGSTOP, SIGCONT) in the middle of a live recording
    while a tone plays into the virtual microphone. Paused 1 s, the stream resumes and its server's backlog is kept
    (this server loses nothing: no silence); paused 2.5 s, it is reopened and the pause is silence of its own
    length. Either way the tone goes on after the pause in the saved MP4 and the file is as long as the recording
    ran (before: silence from the stall to the end, the file short by the stall)."""
    import signal
    import time
    from pathlib import Path

    from avatar.mic import rescan_devices

    server = _private_sound_server(monkeypatch)
    freq = 440.0
    t = np.arange(int(9.0 * SR)) / SR
    write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * freq * t), SR)
    messages, pipeline, player = [], None, None
    try:
        pid = int((Path(os.environ["PULSE_RUNTIME_PATH"]) / "pid").read_text())
        pipeline = LivePipeline(loudness_engine, SimpleFrames(), fps=30, on_event=messages.append).start()
        source = MicSource()
        pipeline.set_source(source)
        base = pipeline._source_base  # pipeline sample index of the source's first sample
        player = virtual_mic(tmp_path / "tone.wav", wait=False)
        time.sleep(0.5)
        recording = pipeline.start_recording(tmp_path / "stalled.mp4", fps=30)
        started = time.monotonic()
        time.sleep(1.5)
        paused = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(stall)
        os.kill(pid, signal.SIGCONT)
        stall = time.monotonic() - paused  # as long as it really was (a busy machine oversleeps)
        time.sleep(2.5)
        wall = time.monotonic() - started
        written = recording.seconds
        path = pipeline.stop_recording()
    finally:
        if player is not None:
            player.terminate()
            player.wait(timeout=10)
        if pipeline is not None:
            pipeline.stop()
        server.down()
        monkeypatch.undo()
        rescan_devices()
    assert path == recording.path
    assert pipeline.source is source and source.alive  # never given up
    # on a loaded machine a late callback may make a short gap elsewhere: the stall's is the one over 0.5 s
    gaps = [(at, seconds) for at, seconds in source.gaps if seconds > 0.5]
    if stall < REOPEN_AFTER_SECONDS:
        assert not gaps, source.gaps  # resumed with its backlog: nothing was lost, nothing to fill
    else:
        assert any("stopped delivering sound for" in m and "reopened" in m for m in messages), messages
        # the gap: the stall and the moment the resumed server takes to deliver to the new stream
        assert len(gaps) == 1 and stall - 0.1 < gaps[0][1] < stall + 0.5, (source.gaps, stall)
        gap_at = gaps[0][0] - (recording.start_sample - base) / SR  # in the recording
    info = decode_mp4(path)
    sr, audio = info["sample_rate"], info["audio"]
    seconds = len(audio) / sr
    # the gap was filled: the file is as long as the recording ran (the decoded AAC ends on a 1024-sample frame)
    assert -2 / 30 < seconds - wall < 2 / 30 + 1024 / sr, (seconds, wall, written, source.gaps, messages)
    # frames go on after the stall to (nearly) the end: the render thread may lag a few frames on a busy machine
    assert info["times"][0] < 0.1 and info["times"][-1] > wall - 0.3, (info["times"][-1], wall)
    # the tone before the stall, silence for a reopened stall, and the tone again until the end
    assert _rms(audio, sr, 0.2, 1.3) > 0.1
    if gaps:
        assert _rms(audio, sr, gap_at + 0.05, gap_at + gaps[0][1] - 0.05) < 0.01
    # the last second, after the resumed stream settled (a sound its server lost is filled as it settles)
    after = audio[int((seconds - 1.1) * sr):int((seconds - 0.1) * sr)]
    assert _rms(after, sr, 0, 99) > 0.1, source.gaps
    reference = np.sin(2 * np.pi * freq * np.arange(len(after)) / sr)
    spectrum = np.abs(np.fft.rfft(after * np.hanning(len(after))))
    assert abs(np.fft.rfftfreq(len(after), 1 / sr)[np.argmax(spectrum)] - freq) < 5
    c = np.correlate(after[:sr // 2], reference[:sr // 2 + sr // 100], "valid")  # best over a cycle of phase
    assert c.max() / (np.linalg.norm(after[:sr // 2]) * np.linalg.norm(reference[:sr // 2])) > 0.9, source.gaps


def test_audio_file_mode_plays_the_sound(virtual_mic, tmp_path):
    """FileSource plays through the default output (the virtual sink), which the virtual microphone hears."""
    import time

    from scipy.signal import correlate

    from avatar.mic import Microphone
    from tests.test_mic import _speechlike

    ref = _speechlike(SR, 1.0, seed=3)
    write_wav(tmp_path / "demo.wav", ref, SR)
    with Microphone(samplerate=SR) as mic:
        source = FileSource(tmp_path / "demo.wav")
        assert source.stream is not None, "no output device was opened"
        delivered = []
        deadline = time.monotonic() + 5
        while not source.finished and time.monotonic() < deadline:
            delivered.append(source.read())
            time.sleep(0.01)
        source.close()  # finished: waits for the sound to play out
        time.sleep(0.3)
        heard, _ = mic.read()
    assert source.finished and len(np.concatenate(delivered)) == len(ref)
    c = correlate(heard, ref, mode="valid", method="fft")
    k = int(np.argmax(c))
    seg = heard[k:k + len(ref)]
    assert np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref)) > 0.95


@pytest.mark.parametrize("device_rate", [None, 44100], ids=["at-the-recording-rate", "at-another-rate"])
def test_mic_source_delivers_16khz_matching_the_fed_sound(virtual_mic, tmp_path, device_rate):
    import time

    from scipy.signal import correlate

    from tests.test_mic import _speechlike

    ref = _speechlike(SR, 1.0, seed=5)
    write_wav(tmp_path / "ref.wav", ref, SR)
    source = MicSource(samplerate=device_rate)
    try:
        assert source.mic.samplerate == source.sound_rate == (device_rate or RECORD_RATE)  # resampled here
        assert isinstance(source, AudioSource) and source.is_microphone
        source.set_conditioning(6.0, None)  # as the window's gain slider does: twice the amplitude
        time.sleep(0.2)
        virtual_mic(tmp_path / "ref.wav")
        time.sleep(0.3)
        got = source.read()
    finally:
        source.close()
    c = correlate(got, ref, mode="valid", method="fft")
    k = int(np.argmax(c))
    seg = got[k:k + len(ref)]
    assert np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref)) > 0.95
    assert np.linalg.norm(seg) / np.linalg.norm(ref) == pytest.approx(10 ** (6 / 20), rel=0.1)


def test_a_stale_replacement_does_not_clobber_a_newly_chosen_source():
    """The audio worker's 'device lost → silence' must not undo a device the user picked meanwhile."""

    class Tracked(SilenceSource):
        closed = False

        def close(self):
            self.closed = True

    pipeline = LivePipeline(None, SimpleFrames())
    lost, chosen, fallback = Tracked(), Tracked(), Tracked()
    pipeline.set_source(lost)
    pipeline.set_source(chosen)  # the user's pick
    assert lost.closed
    assert not pipeline.set_source(fallback, replacing=lost)  # the worker's late reaction
    assert pipeline.source is chosen and not chosen.closed and fallback.closed
    assert pipeline.set_source(fallback, replacing=chosen) and pipeline.source is fallback


def test_observers_see_each_audio_block_and_frame_as_the_pipeline_makes_them():
    """The hooks benchmarks use instead of patching the pipeline: every block the engine gets, on the audio clock,
    with its capture time from the source; every frame the render worker makes."""
    import time

    blocks, frames = [], []
    pipeline = LivePipeline(None, SimpleFrames(), on_frame=frames.append, on_audio=blocks.append)
    pipeline.lipsync.push(np.zeros(800, np.float32))  # audio before this source: its sample 0 is index 800
    source = SilenceSource()
    pipeline.set_source(source)
    for _ in range(3):
        time.sleep(0.02)
        pipeline.pump_audio()
    assert len(blocks) == 3 and blocks[0].start == 800
    for a, b in zip(blocks, blocks[1:]):
        assert b.start == a.start + len(a.samples)  # contiguous on the pipeline's sample clock
    for block in blocks:
        assert block.captured == pytest.approx(source.capture_time(block.start - 800))
        assert block.read_at >= block.captured
    assert pipeline.lipsync.samples_in == blocks[-1].start + len(blocks[-1].samples)
    frame = pipeline.render_once()
    assert frame is not None and frames == [frame]
    assert frame.params.dtype == np.float32 and frame.params.shape == (len(PARAM_NAMES),)


def test_every_source_declares_what_the_pipeline_and_the_window_use(tmp_path):
    write_wav(tmp_path / "a.wav", tone_bursts([0.1], 0.3), SR)
    silence, file = SilenceSource(), FileSource(tmp_path / "a.wav", device="no such output device")
    try:
        for source in (silence, file):
            assert isinstance(source, AudioSource) and not source.is_microphone
            assert source.take_messages() == []
            source.set_conditioning(6.0, -40.0)  # nothing to condition: accepted, ignored
    finally:
        file.close()

    class NoClock:
        name, alive, finished, level_db, is_microphone = "x", True, False, -100.0, False

        def read(self):
            return np.zeros(0, np.float32)

    assert not isinstance(NoClock(), AudioSource)


class _BlockMic(SilenceSource):
    """A microphone stand-in: 5 ms blocks (80 samples at 16 kHz, as the app's microphone delivers) that wake the
    audio worker as each lands; counts the worker's reads."""

    BLOCK = 80

    def __init__(self):
        import threading

        super().__init__()
        self.reads = 0
        self.blocks = 0
        self._landed = threading.Event()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self):
        import time

        start = time.monotonic()
        while not self._stop.wait(max(0.0, start + (self.blocks + 1) * self.BLOCK / SR - time.monotonic())):
            self.blocks += 1  # a block landed (late ones on a busy machine land together, as PortAudio's do)
            self._landed.set()

    def read(self):
        self.reads += 1
        self._landed.clear()
        n, self._sent = self.blocks * self.BLOCK - self._sent, self.blocks * self.BLOCK
        return np.zeros(n, np.float32)

    def wait(self, timeout, samples=1, sound=False):
        self._landed.wait(timeout)

    def close(self):
        self._stop.set()


def test_the_audio_worker_wakes_once_per_feature_hop_on_silence_and_for_every_microphone_block():
    """Idle CPU (issue 18): silence was polled every 4 ms though only a whole 10 ms hop gives the engine a frame; the
    worker now sleeps until the sound can complete one, and keeps up. A source that cannot say how much sound it
    holds wakes it for each block (sleeping past one would hold back the block that completes a hop: latency);
    the real microphone's case is the next test."""
    import time

    def run(source):
        pipeline = LivePipeline(None, SimpleFrames())
        pipeline.set_source(source)
        pipeline.start()
        try:
            time.sleep(0.3)  # started
            steps0, samples0, t0 = pipeline.audio_steps, pipeline.lipsync.samples_in, time.monotonic()
            blocks0 = getattr(source, "blocks", 0)
            time.sleep(1.5)
            return (pipeline.audio_steps - steps0, pipeline.lipsync.samples_in - samples0, time.monotonic() - t0,
                    getattr(source, "blocks", 0) - blocks0)
        finally:
            pipeline.stop()

    steps, samples, seconds, _ = run(SilenceSource())
    hops = seconds * SR / 160
    assert steps <= 1.2 * hops  # not one step per 4 ms poll (2.5 per hop)
    assert samples >= (seconds - 0.05) * SR  # every sample still went to the engine as it came

    mic = _BlockMic()
    mic.is_microphone = True
    steps, samples, seconds, blocks = run(mic)
    assert steps >= 0.8 * blocks  # each block read as it landed (late ones land together: one read)
    assert samples >= (seconds - 0.05) * SR


def test_the_microphone_wakes_the_worker_for_the_blocks_that_complete_a_hop(virtual_mic, loudness_engine):
    """The virtual microphone's 5 ms blocks: the worker reads the ones that complete a 10 ms feature hop (about one
    read per hop, not two or more: idle CPU), and every sample still reaches the engine as it comes (latency:
    `avatar bench latency`)."""
    import time

    pipeline = LivePipeline(loudness_engine, SimpleFrames(), fps=60)
    pipeline.lipsync.stream.rest_batch = 0  # never resting, as on a real microphone's noise (resting: next test)
    pipeline.start()
    try:
        source = MicSource()
        pipeline.set_source(source)
        time.sleep(0.5)
        steps0, samples0, t0 = pipeline.audio_steps, pipeline.lipsync.samples_in, time.monotonic()
        time.sleep(2.0)
        steps, samples = pipeline.audio_steps - steps0, pipeline.lipsync.samples_in - samples0
        seconds = time.monotonic() - t0
    finally:
        pipeline.stop()
    hops = seconds * SR / 160
    assert steps <= 1.3 * hops, (steps, hops)  # was ~2.5 per hop (a 4 ms poll and every 5 ms block)
    assert steps >= 0.5 * hops  # late blocks land together on a busy machine: fewer reads, never more
    assert abs(samples - seconds * SR) < 0.05 * SR  # every sample went to the engine as it came


def test_resting_on_a_silent_microphone_the_worker_reads_every_other_hop_and_sound_wakes_it_at_once(virtual_mic,
                                                                                                   tmp_path):
    """Idle CPU (issue 18): once the network rests on digital silence the audio worker reads every REST_HOPS hops
    (its wake-ups halve), and the first block with sound wakes it as it lands, so an onset is read no later than
    it was (`avatar bench latency`)."""
    import time

    from avatar.engine import create_engine, live_model_path
    from avatar.live.pipeline import REST_HOPS

    blocks = []
    pipeline = LivePipeline(create_engine("onnxruntime", live_model_path()), SimpleFrames(), fps=60,
                            on_audio=lambda b: blocks.append(b.samples.copy()))
    pipeline.start()
    try:
        pipeline.set_source(MicSource())
        time.sleep(1.5)  # settled on the virtual microphone's silence: resting
        assert pipeline.lipsync.stream.resting
        steps0, samples0, t0 = pipeline.audio_steps, pipeline.lipsync.samples_in, time.monotonic()
        time.sleep(2.0)
        steps, samples = pipeline.audio_steps - steps0, pipeline.lipsync.samples_in - samples0
        seconds = time.monotonic() - t0
        wav = tmp_path / "burst.wav"
        write_wav(wav, tone_bursts([0.3], 0.8), SR)
        blocks.clear()
        virtual_mic(wav)
        time.sleep(0.2)
    finally:
        pipeline.stop()
    hops = seconds * SR / 160
    assert REST_HOPS >= 2 and steps <= 0.7 * hops, (steps, hops)  # ~1 read per 2 hops (every hop before)
    assert abs(samples - seconds * SR) < 0.05 * SR  # every sample still reached the engine as it came
    first = next(i for i, b in enumerate(blocks) if np.abs(b).max() > 1e-3)
    sound_in_first = len(blocks[first]) - int(np.argmax(np.abs(blocks[first]) > 1e-3))
    # read as the block with the onset landed (5 ms blocks; 2 together on a busy box), not a hop or two later
    assert sound_in_first <= 2 * 80 + 10, sound_in_first


def test_each_network_is_drawn_with_the_table_fitted_to_it(tmp_path):
    """The files and the live network each have their own parameters -> mouth table (avatar.face.shapes.shapes_for):
    whoever joins an engine to a face renderer (the live pipeline, an offline render) tells the renderer which
    network drives it, so the live view draws with the live network's table and an export with the files one's."""
    from avatar.engine import create_engine, default_model_path, live_model_path
    from avatar.face import shapes
    from avatar.face.assemble import BackgroundFill, open_renderer
    from avatar.face.render_base import mouth_params
    from avatar.paths import default_photo

    files, live = create_engine("onnxruntime", default_model_path()), create_engine("onnxruntime", live_model_path())
    assert (files.model_name, live.model_name) == ("lipsync_gru", "lipsync_gru_live")
    assert create_engine("onnxruntime").model_name == "lipsync_gru"  # the shipped default
    live_table = shapes.shapes_for("lipsync_gru_live")
    assert live_table != shapes.DEFAULT_SHAPES
    face = open_renderer(default_photo(), 256, liveliness={"enabled": False})
    assert face.shapes is shapes.DEFAULT_SHAPES
    render_offline(np.zeros(1600, np.float32), live, face, tmp_path / "live.mp4", fps=25)
    assert face.shapes == live_table
    pipeline = LivePipeline(files, face)
    assert face.shapes is shapes.DEFAULT_SHAPES
    pipeline.set_engine(live)
    assert face.shapes == live_table
    wrapped = BackgroundFill(open_renderer(default_photo(), 256, liveliness={"enabled": False}),
                             np.ones((256, 256, 1), np.float32), (0, 255, 0))
    pipeline.renderer = wrapped  # a wrapper passes it on
    assert wrapped.renderer.shapes == live_table
    pipeline.renderer = SimpleFrames()  # a stand-in without a face is left as it is
    pipeline.set_engine(files)
    # the table is what the frame shows: the same parameters drawn under the two tables differ
    p = mouth_params(jaw_open=0.6, lip_round=0.1)
    face.use_network("lipsync_gru")
    drawn_files = face.render(p, 0.0).astype(int)
    face.use_network("lipsync_gru_live")
    assert np.abs(face.render(p, 0.0) - drawn_files).max() > 30
