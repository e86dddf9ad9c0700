"""Evaluation metrics, the energy baseline and the real-speech labels."""
import numpy as np
import pytest

from avatar.train.evaluate import (CLOSED_JAW, Labels, Track, energy_baseline, markdown_table, mouth_metrics)
from avatar.train.realspeech import normalize_transcript
from avatar.visemes import VISEME_INDEX

UNITS = [(0, 400, "SIL"), (400, 480, "M"), (480, 700, "AA"), (700, 760, "P"), (760, 1000, "IY"),
         (1000, 1100, "T"), (1100, 1400, "UW"), (1400, 2000, "SIL")]


def _labels():
    return Labels.from_units(UNITS, 200)


def _perfect(y):
    from avatar.train.evaluate import PRESS
    return Track(y.visemes.astype(int), y.params[:, 0].copy(), y.params[:, PRESS].copy())


def test_perfect_prediction_scores_perfectly():
    y = _labels()
    m = mouth_metrics([_perfect(y)], [y])
    assert m["viseme_acc"] == 1 and m["six_class_acc"] == 1 and m["openness_r"] == pytest.approx(1)
    assert m["openness_mae"] == 0 and m["bilabial_closure_recall"] == 1 and m["bilabial_segments"] == 2
    assert m["silence_closed"] == 1 and m["best_lag_ms"] == 0
    assert m["jitter"] == pytest.approx(m["label_jitter"])


def test_a_late_mouth_is_caught():
    y = _labels()
    late = _perfect(y)
    late.jaw = np.concatenate([np.zeros(6), late.jaw[:-6]])  # 60 ms late
    m = mouth_metrics([late], [y])
    assert m["best_lag_ms"] == 60 and m["openness_r"] < 0.9


def test_opening_delay_counts_lateness_and_look_ahead():
    y = _labels()
    perfect = mouth_metrics([_perfect(y)], [y])
    assert perfect["onsets_timed"] == 1 and perfect["opening_delay_ms"] == 0  # one pause -> speech onset
    late = _perfect(y)
    late.jaw = np.concatenate([np.zeros(3), late.jaw[:-3]])  # opens 30 ms late...
    late.delay = 2  # ...and is shown 20 ms after it is heard (look-ahead)
    assert mouth_metrics([late], [y])["opening_delay_ms"] == 50
    shut = _perfect(y)
    shut.jaw[:] = 0
    m = mouth_metrics([shut], [y])
    assert m["onsets_timed"] == 0 and m["onsets_never_opened"] == 1


def test_a_mouth_that_never_closes_on_p_b_m_is_caught():
    y = _labels()
    t = _perfect(y)
    t.press[:] = 0
    near = np.convolve(y.bilabial, np.ones(7), "same") > 0  # the segments and their tolerance
    t.jaw[near] = 0.5
    m = mouth_metrics([t], [y])
    assert m["bilabial_closure_recall"] == 0 and m["silence_closed"] == 1


def test_pressed_lips_count_as_closed():
    y = _labels()
    t = _perfect(y)
    t.jaw = np.maximum(t.jaw, 0.3)  # jaw never below the threshold...
    m = mouth_metrics([t], [y])
    assert m["bilabial_closure_recall"] == 1  # ...but lip_press shows the closures
    assert m["silence_closed"] == 0  # silence has no press and the jaw stays open: no silent frame shows closed
    t.press[y.visemes == VISEME_INDEX["sil"]] = 1.0  # the lips pressed through the silences instead
    assert mouth_metrics([t], [y])["silence_closed"] == 1


def test_energy_baseline_opens_with_loudness():
    rng = np.random.default_rng(0)
    audio = 1e-4 * rng.standard_normal(32000).astype(np.float32)
    audio[8000:24000] += 0.3 * np.sin(np.arange(16000) * 0.1).astype(np.float32)
    b = energy_baseline(audio)
    assert len(b.jaw) == 200 and b.press is None
    assert b.jaw[60:140].min() > CLOSED_JAW and b.jaw[:40].max() < CLOSED_JAW
    assert set(np.unique(b.visemes)) == {VISEME_INDEX["sil"], VISEME_INDEX["aa"]}
    assert len(energy_baseline(np.zeros(0, np.float32)).jaw) == 0


def test_markdown_table_lists_every_model():
    y = _labels()
    table = markdown_table({"a": mouth_metrics([_perfect(y)], [y])})
    assert "| a | 100.0% |" in table and "openness r" in table


@pytest.mark.parametrize("text,words", [
    ("Please enter 1 or 2, followed by #.", "please enter one or two followed by pound"),
    ("Press *72 now!", "press star seventy two now"),
    ("It's 100% done", "it's one hundred percent done"),
])
def test_transcripts_become_dictionary_words(text, words):
    assert normalize_transcript(text) == words


def test_real_prompts_align_when_installed():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (pip install '.[train]')")
    from avatar.train.realspeech import RealSpeechUnavailable, asterisk_clips
    try:
        clips, skipped = asterisk_clips(limit=2)
    except RealSpeechUnavailable as e:
        pytest.skip(str(e))
    assert len(clips) == 2
    for c in clips:
        assert c.audio.dtype == np.float32 and len(c.audio) > 8000
        assert all(e > s for s, e, _ in c.units)
        assert c.units[-1][1] <= len(c.audio) / 16 + 20  # ms, within the clip
        assert {p for _, _, p in c.units} - {"SIL"}


def test_aligner_labels_agree_with_exact_synthesizer_timing():
    """`avatar train label-check`: the ceiling for scores against aligned real speech is measured, not assumed."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (pip install '.[train]')")
    from avatar.train.realspeech import aligner_agreement
    rows = aligner_agreement(per_voice=2)
    voices = [k for k in rows if k != "all"]
    assert voices and rows["all"]["clips"] == sum(rows[k]["clips"] for k in voices) >= 2
    assert rows["all"]["r"] > 0.75 and rows["all"]["viseme"] > 0.6
