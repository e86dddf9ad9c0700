"""Speech sung on a melody (avatar/train/sung.py) and sung utterances in the training shards."""
import importlib.util
import json

import numpy as np
import pytest

from avatar.train import sung
from avatar.train.espeak import Utterance

needs_pyworld = pytest.mark.skipif(importlib.util.find_spec("pyworld") is None,
                                   reason="pyworld (the [train] extra) is not installed")
needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason="espeak-ng (the [train] extra) is not installed")

UNITS = [(0.0, 100.0, "SIL"), (100.0, 160.0, "L"), (160.0, 300.0, "AA"), (300.0, 360.0, "M"),
         (360.0, 520.0, "IY"), (520.0, 700.0, "SIL")]


def test_time_map_scales_each_phone_and_keeps_what_lies_outside():
    old, new = sung.time_map(UNITS, np.array([1.0, 1.0, 3.0, 1.0, 2.0, 1.0]), total_ms=800.0)
    assert np.all(np.diff(old) >= 0) and np.all(np.diff(new) >= 0)
    warp = lambda t: float(np.interp(t, old, new))  # noqa: E731
    assert warp(300.0) - warp(160.0) == pytest.approx(3 * 140.0)  # the held AA
    assert warp(520.0) - warp(360.0) == pytest.approx(2 * 160.0)
    assert warp(360.0) - warp(300.0) == pytest.approx(60.0)  # M unchanged
    assert warp(800.0) - warp(700.0) == pytest.approx(100.0)  # trailing audio after the phones kept
    assert warp(100.0) == pytest.approx(100.0)


def test_vowels_are_held_longer_than_consonants_and_notes_are_capped():
    rng = np.random.default_rng(0)
    stretches = np.array([sung.unit_stretches(UNITS, rng) for _ in range(200)])
    vowels = stretches[:, [2, 4]]
    consonants = stretches[:, [1, 3]]
    assert vowels.mean() > 2.0 and consonants.max() <= sung.CONSONANT_STRETCH[1]
    assert np.all(vowels >= 1.0)  # a sung vowel is never shorter than the spoken one
    assert np.all(stretches[:, [0, 5]] == 1.0)  # silence keeps its length
    long_vowel = [(0.0, 1000.0, "AA")]
    assert max(sung.unit_stretches(long_vowel, rng)[0] for _ in range(50)) * 1000.0 <= sung.MAX_NOTE_MS + 1e-6


def test_the_melody_holds_scale_notes_on_vowels():
    rng = np.random.default_rng(1)
    units = [(0.0, 50.0, "SIL"), (50.0, 650.0, "AA"), (650.0, 700.0, "M"), (700.0, 1300.0, "IY")]
    f0 = sung.melody_f0(units, n_frames=int(1300 / sung.FRAME_MS), tonic_hz=200.0, scale=sung.SCALES[0], rng=rng)
    for start, end in ((50.0, 650.0), (700.0, 1300.0)):
        # the middle of each note, after the glide: its median sits on a note of the scale
        mid = f0[int((start + 150) / sung.FRAME_MS):int((end - 50) / sung.FRAME_MS)]
        semis = 12 * np.log2(np.median(mid) / 200.0)
        degrees = [12 * o + d for o in range(-2, 3) for d in sung.SCALES[0]]
        assert min(abs(semis - d) for d in degrees) < 0.3
        assert np.ptp(12 * np.log2(mid / np.median(mid))) < 2.5  # vibrato, not speech intonation


def _tone_utterance(seconds=1.2, fs=16000):
    """A buzzy voiced sound (harmonics with a falling speech-like pitch) with timed phones."""
    t = np.arange(int(seconds * fs)) / fs
    f0 = 180 - 40 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / fs
    x = sum(np.sin(k * phase) / k for k in range(1, 15)) * 0.3
    units = [(0.0, 100.0, "SIL"), (100.0, 500.0, "AA"), (500.0, 600.0, "M"), (600.0, 1100.0, "OW"),
             (1100.0, 1200.0, "SIL")]
    return Utterance(audio=np.round(x * 32767).astype(np.int16), sample_rate=fs, units=units)


@needs_pyworld
def test_a_sung_utterance_is_longer_on_its_vowels_and_its_pitch_is_a_melody():
    import pyworld

    utt = _tone_utterance()
    out, info = sung.sing(utt, np.random.default_rng(4))
    assert info["sung"] and out.sample_rate == utt.sample_rate
    assert len(out.audio) > len(utt.audio) and info["stretch"] > 1.0
    assert [p for *_, p in out.units] == [p for *_, p in utt.units]
    starts = np.array([s for s, _, _ in out.units])
    assert np.all(np.diff(starts) > 0)
    assert out.units[-1][1] <= len(out.audio) / out.sample_rate * 1000 + sung.FRAME_MS
    # the sung pitch in the held vowels follows the drawn tonic's scale, not the input's falling glide
    x = out.audio.astype(np.float64) / 32768
    f0, times = pyworld.dio(x, out.sample_rate, frame_period=sung.FRAME_MS)
    start, end, _ = out.units[1]
    mid = f0[int((start + 150) / sung.FRAME_MS):int((end - 40) / sung.FRAME_MS)]
    mid = mid[mid > 0]
    assert len(mid) > 10
    semis = 12 * np.log2(np.median(mid) / info["tonic_hz"])
    degrees = [12 * o + d for o in range(-2, 3) for d in sung.SCALES[info["scale"]]]
    assert min(abs(semis - d) for d in degrees) < 0.6


@needs_pyworld
@needs_espeak
def test_sung_utterances_in_a_shard_keep_their_mouth_targets(tmp_path):
    from avatar.train.datagen import GenConfig, generate, load_shard
    from avatar.visemes import PARAM_NAMES, VISEME_INDEX

    config = GenConfig(seed=4, piper_share=0.0, shard_seconds=30, sung_share=1.0, targets="measured")
    path = generate(config, tmp_path, 30 / 3600, procs=1, progress=False)[0]
    shard = load_shard(path)
    metas = json.loads(path.with_suffix(".json").read_text())
    assert metas and all(m.get("sung") for m in metas)
    jaw = shard["params"][:, PARAM_NAMES.index("jaw_open")].astype(np.float32)
    held = 0
    for s, e, p in zip(shard["unit_times"][:, 0], shard["unit_times"][:, 1], shard["unit_phones"]):
        if p in ("AA", "AE") and e - s > 300:  # a held open vowel: the mouth stays open for the note
            a, b = int(s / 10) + 5, int(e / 10) - 5
            assert np.all(shard["visemes"][a:b] == VISEME_INDEX["aa"])
            quarter = (b - a) // 4  # the measured targets ease in and out over the phone's edges
            assert jaw[a + quarter:b - quarter].min() > 0.3
            held += 1
    assert held >= 1
    # the same config without singing makes no sung utterance and draws nothing for it
    plain = GenConfig(seed=4, piper_share=0.0, shard_seconds=30)
    path2 = generate(plain, tmp_path / "plain", 30 / 3600, procs=1, progress=False)[0]
    assert not any(m.get("sung") for m in json.loads(path2.with_suffix(".json").read_text()))
