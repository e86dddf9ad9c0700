import subprocess
import wave

import numpy as np
import pytest

from avatar.audio import (HOP_LENGTH, N_MELS, SAMPLE_RATE, AudioError, LogMelStream, StreamResampler,
                          iter_audio, load_audio, log_mel, sanitize)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _stream(audio, sizes):
    stream, out, i = LogMelStream(), [], 0
    for n in sizes:
        out.append(stream.push(audio[i:i + n]))
        i += n
    out.append(stream.push(audio[i:]))
    return np.concatenate(out)


@pytest.mark.parametrize("chunk", [1, 160, 320, 512, 640, 333])
def test_streaming_log_mel_equals_whole_file(chunk):
    audio = _speechlike(3.0 if chunk == 1 else 10.0)
    whole = log_mel(audio)
    assert whole.shape == (len(audio) // HOP_LENGTH, N_MELS)
    streamed = _stream(audio, [chunk] * (len(audio) // chunk))
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() <= 1e-6


def test_streaming_random_chunk_sizes_equals_whole_file():
    audio = _speechlike(30.0, seed=1)
    sizes = np.random.default_rng(2).integers(1, 1500, size=1000)
    streamed = _stream(audio, sizes)
    assert np.abs(streamed - log_mel(audio)).max() <= 1e-6


def test_features_are_causal():
    audio = _speechlike(2.0)
    later = audio.copy()
    later[16000:] = 0.9  # change only the future after sample 16000
    a, b = log_mel(audio), log_mel(later)
    assert np.array_equal(a[:100], b[:100])  # frames ending at or before sample 16000 never see it
    assert not np.array_equal(a[100:], b[100:])


def test_log_mel_responds_to_frequency():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low, high = log_mel(np.sin(2 * np.pi * 200 * t)), log_mel(np.sin(2 * np.pi * 4000 * t))
    assert low[50].argmax() < N_MELS // 3 < 2 * N_MELS // 3 < high[50].argmax()


def test_mel_filterbank_scale_white_noise_gives_its_power_density_in_every_band():
    """The filterbank's scale is part of the shipped models: their input normalisation (feature_mean/std in the
    .safetensors) was measured on features at this scale, so any change shifts every input the network sees.

    Each filter has unit area over frequency (Slaney's equal-area normalisation), so a band's mel power is the
    power spectral density it covers, whatever its width. For white noise of variance s2 every FFT bin holds
    s2 * sum(window**2) on average (Parseval), and the periodic Hann window's mean square is 3/8: every band
    should hold s2 * 3/8 * WIN_LENGTH * N_FFT / SAMPLE_RATE. Triangles of peak 1 instead would scale each band by
    its width in Hz over 2 (46 in the lowest band, 460 in the highest)."""
    from avatar.audio import N_FFT, WIN_LENGTH

    sigma = 0.1
    noise = sigma * np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE)
    band_power = (10.0 ** log_mel(noise).astype(np.float64)).mean(axis=0)  # 1000 frames averaged
    expected = sigma**2 * (3 / 8 * WIN_LENGTH) * N_FFT / SAMPLE_RATE  # 0.048
    np.testing.assert_allclose(band_power, expected, rtol=0.1)


def test_non_finite_audio_is_sanitized():
    audio = _speechlike(1.0)
    bad = audio.copy()
    bad[100:200] = np.nan
    bad[300] = np.inf
    bad[400] = -np.inf
    assert np.isfinite(sanitize(bad)).all()
    feats = _stream(bad, [37] * 400)
    assert np.isfinite(feats).all()
    assert np.array_equal(feats, log_mel(bad))


def test_sanitize_scales_int_pcm_and_downmixes():
    pcm = np.array([[-32768, 32767], [0, 0], [16384, 16384]], dtype=np.int16)
    out = sanitize(pcm)
    assert out.dtype == np.float32 and out.shape == (3,)
    assert abs(out[0]) < 1e-4 and out[1] == 0 and abs(out[2] - 0.5) < 1e-3


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000, 96000])
def test_stream_resampler_reproduces_tones_with_a_known_small_delay(rate):
    t = np.arange(rate * 2) / rate
    resampler = StreamResampler(rate)
    assert resampler.delay_seconds <= 0.0021
    for freq in (440.0, 3000.0):
        resampler.reset()
        tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        out = np.concatenate([resampler.process(tone[i:i + 441]) for i in range(0, len(tone), 441)]
                             + [resampler.process(np.zeros(0, np.float32), last=True)])
        assert abs(len(out) - 2 * SAMPLE_RATE) <= 40
        want = 0.5 * np.sin(2 * np.pi * freq * (np.arange(len(out)) / SAMPLE_RATE - resampler.delay_seconds))
        assert np.abs(out[400:-400] - want[400:-400]).max() < 1e-3


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stream_resampler_has_no_bursts_and_no_aliasing(rate):
    resampler = StreamResampler(rate)
    block = rate // 100  # 10 ms device blocks
    t = np.arange(rate) / rate
    above_nyquist = (0.5 * np.sin(2 * np.pi * 9000 * t)).astype(np.float32)
    outs = [resampler.process(above_nyquist[i:i + block]) for i in range(0, rate, block)]
    assert all(len(o) == 160 for o in outs)  # every 10 ms in gives 10 ms out, at once: no hold-back
    assert np.sqrt(np.mean(np.concatenate(outs)[100:] ** 2)) < 1e-3  # 9 kHz cannot fold into 16 kHz audio


def test_stream_resampler_passes_16k_through():
    x = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    assert np.array_equal(StreamResampler(16000).process(x), x)


def _write_wav(path, audio, rate, channels=1):
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if channels == 2:
        pcm = np.stack([pcm, pcm], axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _encode(src, dst, codec):
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=inp.streams.audio[0].rate)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("ext,codec", [("flac", "flac"), ("mp3", "libmp3lame"), ("m4a", "aac")])
def test_load_audio_formats(tmp_path, ext, codec):
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder to make the test file")
    t = np.arange(48000 * 2) / 48000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    wav = tmp_path / "tone.wav"
    _write_wav(wav, tone, 48000, channels=2)
    target = tmp_path / f"tone.{ext}"
    _encode(wav, target, codec)
    for path in (wav, target):
        audio = load_audio(path)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) - 2 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # encoder padding is allowed
        spectrum = np.abs(np.fft.rfft(audio[4000:20000]))
        assert abs(spectrum.argmax() * SAMPLE_RATE / 16000 - 440) < 3


def test_iter_audio_blocks_cover_the_file(tmp_path):
    audio = _speechlike(3.0)
    path = tmp_path / "a.wav"
    _write_wav(path, audio, SAMPLE_RATE)
    blocks = list(iter_audio(path, block=1000))
    assert all(len(b) == 1000 for b in blocks[:-1])
    joined = np.concatenate(blocks)
    assert len(joined) == len(audio)
    assert np.abs(joined - audio).max() < 1e-3


def test_bad_audio_files_give_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioError):
        load_audio(junk)
    empty = tmp_path / "empty.wav"
    _write_wav(empty, np.zeros(0), SAMPLE_RATE)
    assert len(load_audio(empty)) == 0
    assert log_mel(load_audio(empty)).shape == (0, N_MELS)


def _gated(seconds: float = 6.0) -> np.ndarray:
    """Sound between runs of digital silence (a gated microphone): zeros at the start, between, at the end."""
    audio = _speechlike(seconds, seed=3)
    n = len(audio)
    for a, b in ((0.0, 1.0), (2.0, 2.013), (3.0, 4.5), (5.2, 6.0)):
        audio[int(a * n / seconds):int(b * n / seconds)] = 0.0
    return audio


def test_silent_features_are_what_the_fft_path_gives_for_digital_silence():
    from avatar.audio import _frames_to_log_mel, silent_features

    np.testing.assert_array_equal(_frames_to_log_mel(np.zeros((3, 400))), np.repeat(silent_features(), 3, 0))
    np.testing.assert_array_equal(log_mel(np.zeros(1600, np.float32)), np.repeat(silent_features(), 10, 0))


def test_streaming_log_mel_skips_the_fft_in_digital_silence_and_gives_the_same_frames(monkeypatch):
    import avatar.audio as audio_module

    audio = _gated()
    whole = log_mel(audio)
    sizes = np.random.default_rng(4).integers(1, 700, size=400)
    streamed = _stream(audio, sizes)
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() <= 1e-6  # the silences' edges included
    fft_frames = []
    real = audio_module._frames_to_log_mel
    monkeypatch.setattr(audio_module, "_frames_to_log_mel", lambda f: fft_frames.append(len(f)) or real(f))
    stream = LogMelStream()
    out = [stream.push(np.zeros(80, np.float32)) for _ in range(200)]  # 1 s of 5 ms blocks of silence
    assert sum(len(o) for o in out) == 100 and not fft_frames  # 100 frames, no FFT
    assert len(stream.push(audio[16000:16160])) == 1 and fft_frames == [1]  # sound: the FFT path at once
    assert len(stream.push(np.zeros(400, np.float32))) == 2 and sum(fft_frames) == 3  # windows holding the sound
    assert len(stream.push(np.zeros(800, np.float32))) == 5 and sum(fft_frames) == 3  # the sound has left them


@pytest.mark.parametrize("rate", [48000, 44100])
def test_stream_resampler_in_digital_silence_skips_the_filter_and_gives_the_same_samples(rate, monkeypatch):
    import avatar.audio as audio_module

    t = np.arange(int(6 * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for a, b in ((0.0, 1.0), (2.0, 2.013), (3.0, 4.5), (5.2, 6.0)):
        x[int(a * rate):int(b * rate)] = 0.0
    whole = StreamResampler(rate).process(x, last=True)  # one block: never all silent, the filter throughout
    resampler = StreamResampler(rate)
    cuts = np.cumsum(np.random.default_rng(5).integers(1, 900, size=len(x)))
    blocks = np.split(x, cuts[cuts < len(x)])
    out = np.concatenate([resampler.process(b) for b in blocks] + [resampler.process(np.zeros(0), last=True)])
    assert len(out) == len(whole)
    np.testing.assert_array_equal(out, whole)
    hush = [np.zeros(rate // 200, np.float32)] * 200  # 1 s of 5 ms blocks
    with monkeypatch.context() as m:
        m.setattr(audio_module, "is_digital_silence", lambda a: False)  # the filter on every block
        reference = StreamResampler(rate)
        filtered_counts = [len(reference.process(b)) for b in hush]
    filtered = []
    real = audio_module.sliding_window_view
    monkeypatch.setattr(audio_module, "sliding_window_view", lambda *a: filtered.append(1) or real(*a))
    resampler = StreamResampler(rate)
    out = [resampler.process(b) for b in hush]
    assert [len(o) for o in out] == filtered_counts and not filtered  # as many samples per block, no filter
    assert not np.concatenate(out).any()
    assert len(resampler.process(x[rate:rate + rate // 200])) and filtered  # sound: filtered at once
