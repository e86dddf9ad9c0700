"""Festival (recorded-voice synthesizers) as a training-data source: segment parsing, timing, determinism."""
import numpy as np
import pytest

from avatar.train import festival as fest
from avatar.visemes import VISEME_INDEX

needs_festival = pytest.mark.skipif(not fest.available_voices(),
                                    reason="festival and its voices are not installed (apt-get install festival "
                                           "festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k)")

SEGS = """#
0.1650 100 pau
0.2100 100 dh
0.2500 100 ax
0.3000 100 em
0.3100 100 h#
0.4000 100 pau
0.4500 100 zz
"""


def test_segments_become_arpabet_units():
    segments = fest.parse_segs(SEGS)
    assert segments[0] == (0.0, 165.0, "pau") and segments[1] == (165.0, 210.0, "dh")
    units = fest.segments_to_units(segments)
    phones = [p for _, _, p in units]
    # ax -> AH; syllabic em -> AH + M (40/60); h# and pau merge into one silence; an unknown name is silence
    assert phones == ["SIL", "DH", "AH", "AH", "M", "SIL"]
    assert units[3] == (250.0, 270.0, "AH") and units[4] == (270.0, 300.0, "M")
    assert units[-1] == (300.0, 450.0, "SIL")
    assert all(b[0] == a[1] for a, b in zip(units, units[1:]))  # contiguous


def test_other_languages_phones_become_arpabet():
    segments = fest.parse_segs("#\n0.1 100 pau\n0.2 100 m\n0.3 100 a1\n0.35 100 J\n0.4 100 O1\n0.5 100 rr\n0.6 100 e:\n"
                               "0.7 100 tS\n0.8 100 ##\n0.9 100 xx\n")
    phones = [p for _, _, p in fest.segments_to_units(segments, fest.foreign_to_arpa)]
    # stress digits and length marks dropped; silences (and anything unknown) merge into one silence
    assert phones == ["SIL", "M", "AA", "N", "AO", "R", "EH", "CH", "SIL"]


@pytest.mark.skipif(not fest.available_foreign_voices(),
                    reason="no other-language festival voice (apt-get install festvox-ca-ona-hts festvox-suopuhe-lj)")
def test_other_languages_voices_only_when_named():
    from avatar.train.datagen import GenConfig, generate_shard
    from avatar.train.text import BUILTIN_SENTENCES
    voice = fest.available_foreign_voices()[0]
    shard = generate_shard(GenConfig(seed=5, piper_share=0.0, festival_share=1.0, shard_seconds=6,
                                     festival_voices=(voice,)), 0, list(BUILTIN_SENTENCES))
    assert {m["voice"] for m in shard["meta"]} == {voice}
    assert (shard["visemes"] == VISEME_INDEX["PP"]).any() and (shard["visemes"] == VISEME_INDEX["aa"]).any()
    assert voice not in fest.available_voices()  # the default (every installed voice) stays English


def test_scheme_string_is_safe():
    s = fest.scheme_string('He said "hi" to Zoë \\ (ok)')
    assert s == '"He said \'hi\' to Zoe (ok)"'
    assert s.startswith('"') and s.endswith('"') and s.count('"') == 2 and "\\" not in s and s.isascii()


@needs_festival
@pytest.mark.parametrize("voice", fest.available_voices() or ["none"])
def test_festival_timing_matches_its_audio(voice):
    engine = fest.Festival()
    a = engine.synth("Mama made a map of Bob's farm.", voice, stretch=1.2)
    b = engine.synth("Mama made a map of Bob's farm.", voice, stretch=1.2)
    np.testing.assert_array_equal(a.audio, b.audio)  # deterministic: the generator's seed decides everything
    assert a.units == b.units
    phones = [p for _, _, p in a.units]
    assert phones[0] == "SIL" and phones[-1] == "SIL" and phones.count("M") >= 4 and "B" in phones
    assert a.units[-1][1] == pytest.approx(len(a.audio) * 1000 / a.sample_rate, abs=60)
    # the reported times fit the sound: vowels are far louder than the leading pause
    x = a.audio.astype(np.float64)

    def level(start_ms, end_ms):
        seg = x[int(start_ms * a.sample_rate / 1000):int(end_ms * a.sample_rate / 1000)]
        return 10 * np.log10(np.mean(seg ** 2) + 1)

    vowels = [level(s, e) for s, e, p in a.units if p in ("AA", "AE", "EY", "AH")]
    assert np.median(vowels) > level(*a.units[0][:2]) + 20
    slow = engine.synth("Mama made a map of Bob's farm.", voice, stretch=0.8)
    assert len(slow.audio) < len(a.audio)  # the stretch really changes the rate


@needs_festival
def test_generator_uses_festival_share():
    from avatar.train.datagen import GenConfig, generate_shard
    from avatar.train.text import BUILTIN_SENTENCES
    shard = generate_shard(GenConfig(seed=5, piper_share=0.0, festival_share=1.0, shard_seconds=8), 0,
                           list(BUILTIN_SENTENCES))
    assert {m["source"] for m in shard["meta"]} == {"festival"}
    assert {m["voice"] for m in shard["meta"]} <= set(fest.VOICES)
    speech = shard["visemes"] != VISEME_INDEX["sil"]
    assert 0.1 < speech.mean() < 0.9
    only = generate_shard(GenConfig(seed=5, piper_share=0.0, festival_share=1.0, shard_seconds=8,
                                    festival_voices=(fest.available_voices()[-1],)), 0, list(BUILTIN_SENTENCES))
    assert {m["voice"] for m in only["meta"]} == {fest.available_voices()[-1]}
