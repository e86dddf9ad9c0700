"""Flite (clustergen voices built from recordings) as a training-data source: timing, determinism, the share."""
import numpy as np
import pytest

from avatar.train import flite
from avatar.visemes import VISEME_INDEX

needs_flite = pytest.mark.skipif(not flite.available_voices(),
                                 reason="flite is not installed (apt-get install libflite1)")


def test_text_is_passed_as_plain_ascii():
    from avatar.train.festival import plain_ascii
    assert plain_ascii("Zoë  said\n“hi”") == "Zoe said hi"


@needs_flite
@pytest.mark.parametrize("voice", flite.available_voices() or ["none"])
def test_flite_timing_matches_its_audio(voice):
    engine = flite.Flite()
    a = engine.synth("Mama made a map of Bob's farm.", voice, stretch=1.2, seed=3)
    b = engine.synth("Mama made a map of Bob's farm.", voice, stretch=1.2, seed=3)
    np.testing.assert_array_equal(a.audio, b.audio)  # deterministic: the generator's seed decides everything
    assert a.units == b.units and a.sample_rate == 16000
    phones = [p for _, _, p in a.units]
    assert phones[0] == "SIL" and phones[-1] == "SIL" and phones.count("M") >= 4 and "B" in phones
    assert all(u[0] == v[1] for v, u in zip(a.units, a.units[1:]))  # contiguous
    assert a.units[-1][1] == pytest.approx(len(a.audio) * 1000 / a.sample_rate, abs=30)
    x = a.audio.astype(np.float64)

    def level(start_ms, end_ms):
        seg = x[int(start_ms * 16):int(end_ms * 16)]
        return 10 * np.log10(np.mean(seg ** 2) + 1)

    # the reported times fit the sound: vowels are far louder than the leading pause
    vowels = [level(s, e) for s, e, p in a.units if p in ("AA", "AE", "EY", "AH")]
    assert np.median(vowels) > level(*a.units[0][:2]) + 20
    fast = engine.synth("Mama made a map of Bob's farm.", voice, stretch=0.8)
    assert len(fast.audio) < 0.8 * len(a.audio)  # the stretch really changes the rate


@needs_flite
def test_generator_uses_flite_share_and_keeps_older_seeds():
    from avatar.train.datagen import GenConfig, generate_shard
    from avatar.train.text import BUILTIN_SENTENCES
    shard = generate_shard(GenConfig(seed=5, piper_share=0.0, flite_share=1.0, shard_seconds=8), 0,
                           list(BUILTIN_SENTENCES))
    assert {m["source"] for m in shard["meta"]} == {"flite"}
    assert {m["voice"] for m in shard["meta"]} <= set(flite.VOICES)
    speech = shard["visemes"] != VISEME_INDEX["sil"]
    assert 0.1 < speech.mean() < 0.9
    # a zero share draws exactly as before flite existed: espeak and piper only, as that seed always gave
    older = generate_shard(GenConfig(seed=5, piper_share=0.0, shard_seconds=4), 0, list(BUILTIN_SENTENCES))
    assert {m["source"] for m in older["meta"]} == {"espeak"}
