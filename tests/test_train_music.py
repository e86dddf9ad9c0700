"""Instrumental music and room noise as training negatives, and the held-out music check of `avatar train evaluate`."""
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from avatar.train import augment, music
from avatar.train.evaluate import MUSIC_OPEN_JAW, Track, evaluate_music, music_metrics, music_section
from avatar.visemes import PARAM_NAMES, VISEME_INDEX, VISEME_POSE

JAW = PARAM_NAMES.index("jaw_open")
needs_recordings = pytest.mark.skipif(not music.recordings(), reason="no Debian game music installed "
                                      "(apt-get install wesnoth-1.16-music asc-music fb-music-high)")
needs_midi = pytest.mark.skipif(not music.can_render_midi(),
                                reason="fluidsynth / fluid-soundfont-gm not installed (apt-get install them)")
needs_any_music = pytest.mark.skipif(not music.recordings() and not music.can_render_midi(),
                                     reason="neither Debian game music nor fluidsynth + fluid-soundfont-gm installed")
needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason="espeakng-loader not installed (pip install '.[train]')")


def _read_vlq(data: bytes, i: int) -> tuple[int, int]:
    n = 0
    while True:
        n = (n << 7) | (data[i] & 0x7F)
        i += 1
        if not data[i - 1] & 0x80:
            return n, i


def parse_midi(data: bytes) -> tuple[int, list[list[tuple[int, bytes]]]]:
    """(ticks per beat, tracks of (absolute tick, event)): a reader independent of music.midi_file."""
    assert data[:4] == b"MThd" and int.from_bytes(data[4:8], "big") == 6
    n_tracks, division = int.from_bytes(data[10:12], "big"), int.from_bytes(data[12:14], "big")
    tracks, i = [], 14
    for _ in range(n_tracks):
        assert data[i:i + 4] == b"MTrk"
        end = i + 8 + int.from_bytes(data[i + 4:i + 8], "big")
        i, now, events = i + 8, 0, []
        while i < end:
            delta, i = _read_vlq(data, i)
            now += delta
            status = data[i]
            if status == 0xFF:
                length, j = _read_vlq(data, i + 2)
                events.append((now, data[i:j + length]))
                i = j + length
            else:
                size = 2 if status >> 4 in (0xC, 0xD) else 3
                events.append((now, data[i:i + size]))
                i += size
        assert i == end and events[-1][1] == b"\xff\x2f\x00"  # every track ends with end-of-track
        tracks.append(events)
    assert i == len(data)
    return division, tracks


# ----------------------------------------------------------------------------------------------------
# composed MIDI


@pytest.mark.parametrize("n,encoded", [(0, b"\x00"), (0x7F, b"\x7f"), (0x80, b"\x81\x00"), (0x3FFF, b"\xff\x7f"),
                                       (0x200000, b"\x81\x80\x80\x00")])
def test_variable_length_quantities(n, encoded):
    assert music._vlq(n) == encoded  # the examples of the Standard MIDI File spec


def test_midi_file_round_trips_through_an_independent_reader():
    notes = music._notes(2, [(0.0, 1.0, 60, 100), (1.0, 0.5, 64, 90)])
    division, tracks = parse_midi(music.midi_file([[(0, bytes([0xC2, 41]))] + notes], tempo_bpm=120.0))
    assert division == music.TICKS_PER_BEAT
    assert tracks[0][0] == (0, b"\xff\x51\x03" + (500000).to_bytes(3, "big"))  # 120 bpm = 500000 us a beat
    assert tracks[1][:-1] == [(0, b"\xc2\x29"), (0, b"\x92\x3c\x64"), (480, b"\x82\x3c\x00"),
                              (480, b"\x92\x40\x5a"), (720, b"\x82\x40\x00")]  # the off sorts before the next on


def _programs_and_kits(midi: bytes) -> tuple[set, set]:
    programs, kits = set(), set()
    for events in parse_midi(midi)[1]:
        for _, e in events:
            if e[0] >> 4 == 0xC:
                (kits if e[0] & 0x0F == 9 else programs).add(e[1])
    return programs, kits


def test_compositions_keep_their_split_programs_and_kits():
    seen = {"train": set(), "eval": set()}
    for split in seen:
        for seed in range(40):
            programs, kits = _programs_and_kits(music.compose(seed, 8.0, split)[0])
            assert programs and all(p in music.INSTRUMENT_PROGRAMS for p in programs)  # no voices or effects
            assert all((p in music.HELD_OUT_PROGRAMS) == (split == "eval") for p in programs)
            assert kits <= set(music.DRUM_KITS[split])
            seen[split] |= programs
    assert not seen["train"] & seen["eval"]
    assert len(seen["train"]) > 30 and len(seen["eval"]) > 10  # and they do vary


def test_compositions_are_reproducible_and_differ_by_seed_and_split():
    a = music.compose(5, 10.0, "train")[0]
    assert music.compose(5, 10.0, "train")[0] == a
    assert music.compose(6, 10.0, "train")[0] != a
    assert music.compose(5, 10.0, "eval")[0] != a
    division, tracks = parse_midi(a)
    last_tick = max(t for events in tracks for t, _ in events)
    bpm = 60e6 / int.from_bytes(tracks[0][0][1][3:], "big")
    assert 10.0 <= last_tick / division * 60 / bpm < 10.0 + 2 * 4 * 60 / bpm  # whole bars covering the length


@needs_midi
def test_fluidsynth_renders_16k_mono_reproducibly():
    midi = music.compose(3, 4.0, "train")[0]
    a = music.render(midi, seconds=4.0)
    assert a.dtype == np.float32 and a.ndim == 1 and len(a) == 4 * music.SAMPLE_RATE
    assert augment.rms_dbfs(a) > -45.0  # music, not silence
    assert np.array_equal(a, music.render(midi, seconds=4.0))
    # 16 kHz: nothing above the 8 kHz Nyquist can exist, and the energy sits where instruments play
    spectrum = np.abs(np.fft.rfft(a)) ** 2
    freqs = np.fft.rfftfreq(len(a), 1 / music.SAMPLE_RATE)
    assert spectrum[(freqs > 60) & (freqs < 4000)].sum() > 0.8 * spectrum.sum()


# ----------------------------------------------------------------------------------------------------
# recordings and the source


def test_the_split_of_a_recording_depends_on_its_name_only():
    a, b = music.Recording(Path("/a/battle.ogg")), music.Recording(Path("/elsewhere/battle.mp3"))
    assert a.split == b.split
    splits = [music.Recording(Path(f"/x/track{i}.ogg")).split for i in range(400)]
    assert 0.1 < splits.count("eval") / len(splits) < 0.3  # about 1 in HELD_OUT_MODULUS


@needs_recordings
def test_train_and_held_out_recordings_never_overlap():
    train, held_out = music.recordings("train"), music.recordings("eval")
    assert held_out and train
    assert not {r.name for r in train} & {r.name for r in held_out}  # not even the same tune in two packages
    assert sorted(train + held_out, key=lambda r: r.path) == music.recordings()


@needs_recordings
def test_a_source_draws_only_its_split_and_is_reproducible_for_a_seed():
    for split in ("train", "eval"):
        source = music.MusicSource(split)
        names = {r.name for r in music.recordings(split)}
        for seed in range(3):
            a, info = source.segment(3 * music.SAMPLE_RATE, np.random.default_rng(seed))
            b, _ = source.segment(3 * music.SAMPLE_RATE, np.random.default_rng(seed))
            assert a.dtype == np.float32 and len(a) == 3 * music.SAMPLE_RATE
            assert np.array_equal(a, b)
            if "track" in info:
                assert info["track"] in names
            else:
                assert info["midi"]["split"] == split


@needs_recordings
def test_recordings_decode_at_16k_including_the_tracker_module():
    rec = min((r for r in music.recordings() if r.path.suffix != ".xm"), key=lambda r: r.path.stat().st_size)
    audio = music.decode(rec.path)
    import av
    with av.open(str(rec.path)) as c:
        seconds = c.duration / 1e6
    assert audio.dtype == np.float32 and abs(len(audio) / music.SAMPLE_RATE - seconds) < 0.1
    xm = [r for r in music.recordings() if r.path.suffix == ".xm"]
    if xm and shutil.which("ffmpeg"):
        assert len(music.decode(xm[0].path)) > music.MIN_RECORDING_SECONDS * music.SAMPLE_RATE


def test_no_music_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(music, "RECORDING_GLOBS", ())
    monkeypatch.setattr(music, "SOUNDFONT_PATHS", ("/nonexistent/none.sf2",))
    with pytest.raises(music.MusicUnavailable, match="apt-packages"):
        music.MusicSource("train")
    with pytest.raises(music.MusicUnavailable):
        music.held_out_music()
    results, lines = music_section({})
    assert "skipped" in results and any(line.startswith("skipped: ") for line in lines)


@needs_any_music
def test_held_out_music_uses_no_training_track():
    clips = music.held_out_music(recording_seconds=2.0, midi_pieces=2, midi_seconds=2.0)
    train_names = {r.name for r in music.recordings("train")}
    assert clips and not {name for name, _ in clips} & train_names
    assert all(a.dtype == np.float32 and len(a) == 2 * music.SAMPLE_RATE for _, a in clips)
    for name, audio in clips:  # the excerpt is the recording's own samples from EVAL_OFFSET_S
        rec = next((r for r in music.recordings("eval") if r.name == name), None)
        if rec is not None and rec.path.suffix != ".xm":
            a = int(music.EVAL_OFFSET_S * music.SAMPLE_RATE)
            assert np.array_equal(audio, music.decode(rec.path)[a:a + len(audio)])
            break


# ----------------------------------------------------------------------------------------------------
# room noise


@pytest.mark.parametrize("kind", sorted(augment.NOISE_KINDS))
def test_room_noises_are_unit_rms_and_reproducible(kind):
    make = augment.NOISE_KINDS[kind]
    a = make(4 * augment.SAMPLE_RATE, np.random.default_rng(2))
    assert a.dtype == np.float32 and len(a) == 4 * augment.SAMPLE_RATE
    assert abs(augment.rms_dbfs(a)) < 0.1
    assert np.array_equal(a, make(4 * augment.SAMPLE_RATE, np.random.default_rng(2)))
    assert not np.array_equal(a, make(4 * augment.SAMPLE_RATE, np.random.default_rng(3)))


def _frame_db(x: np.ndarray) -> np.ndarray:
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)


def _share_below(x: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    return float(spectrum[np.fft.rfftfreq(len(x), 1 / augment.SAMPLE_RATE) < hz].sum() / spectrum.sum())


def test_room_noises_have_their_character():
    rng = np.random.default_rng(4)
    n = 10 * augment.SAMPLE_RATE
    keys = _frame_db(augment.keyboard_clicks(n, rng))
    assert np.mean(keys < np.max(keys) - 40) > 0.3  # clicks with quiet between them, not a steady hiss
    assert np.mean(keys > np.max(keys) - 20) > 0.01  # ...and the clicks are there
    fan = augment.fan(n, rng)
    assert np.percentile(_frame_db(fan), 95) - np.percentile(_frame_db(fan), 5) < 6  # steady
    assert _share_below(fan, 60) < 0.05 and _share_below(fan, 5000) > 0.95  # band-limited
    traffic = augment.traffic(n, rng)
    assert _share_below(traffic, 25) < 0.1 and _share_below(traffic, 800) > 0.95  # low rumble, not DC drift
    smooth = np.convolve(_frame_db(traffic), np.ones(50) / 50, "valid")  # 0.5 s level
    assert np.ptp(smooth) > 6  # swells


# ----------------------------------------------------------------------------------------------------
# training shards with music


@needs_espeak
@needs_any_music
def test_music_in_a_shard_is_labelled_closed_and_speech_still_speaks(tmp_path):
    import json

    from avatar.train.datagen import GenConfig, generate, load_shard
    # through `generate`: the shard is made in its own process, so espeak's state stays out of this one
    # 80 s: about 8 utterances, so that (each with music under it at P_MUSIC_UNDER_SPEECH = 0.5) some have it
    # under them whatever music is installed (the draws depend on the installed tracks)
    config = GenConfig(seed=3, piper_share=0.0, shard_seconds=80, music_share=1.0, noise_share=0.5)
    path = generate(config, tmp_path, 80 / 3600, procs=1, progress=False)[0]
    shard = dict(load_shard(path), meta=json.loads(path.with_suffix(".json").read_text()))
    audio = shard["audio"].astype(np.float32) / 32768
    sil = np.array(VISEME_POSE["sil"], np.float32)
    checked = under = 0
    for meta in shard["meta"]:
        m = meta["music"]  # music_share 1: every utterance has music before it
        a = int(m["start_ms"] / 10) + 1
        b = int(meta["start_ms"] / 10) - 1  # the frames before the voice begins
        assert b - a > 50  # music alone lasts at least MUSIC_ALONE_S
        assert np.all(shard["visemes"][a:b] == VISEME_INDEX["sil"])
        assert np.allclose(shard["params"][a:b].astype(np.float32), sil, atol=1e-3)
        alone = audio[a * 160:(a + min(b - a, int(m["seconds"] * 100) - 60)) * 160]  # before any fade-out
        assert augment.rms_dbfs(alone) > m["level_dbfs"] - 12  # the music is really there
        checked += 1
        if m["under_speech"]:
            under += 1
            s, e = int(meta["start_ms"] / 10), int(meta["end_ms"] / 10)
            assert np.mean(shard["visemes"][s:e] != VISEME_INDEX["sil"]) > 0.5  # speech over music moves
            assert shard["params"][s:e, JAW].astype(np.float32).max() > 0.3
    assert checked >= 2 and under >= 1
    assert any("room_noise" in meta for meta in shard["meta"])


def test_gen_with_music_but_none_installed_says_so(monkeypatch, tmp_path, capsys):
    from avatar.cli import main
    monkeypatch.setattr(music, "RECORDING_GLOBS", ())
    monkeypatch.setattr(music, "SOUNDFONT_PATHS", ("/nonexistent/none.sf2",))
    assert main(["train", "gen", "--out", str(tmp_path / "d"), "--hours", "0.001", "--music-share", "0.3"]) == 1
    assert "no music source" in capsys.readouterr().out
    assert not (tmp_path / "d").exists()  # nothing started


# ----------------------------------------------------------------------------------------------------
# the evaluation's music metric


def test_music_metric_counts_open_frames():
    jaw = np.array([0.0, 0.1, MUSIC_OPEN_JAW, 0.25, 0.5, 0.9, 0.0, 0.05])
    vis = np.array([VISEME_INDEX["sil"]] * 4 + [VISEME_INDEX["aa"]] * 2 + [VISEME_INDEX["sil"]] * 2)
    m = music_metrics([Track(vis[:5], jaw[:5]), Track(vis[5:], jaw[5:])])
    assert m["frames"] == 8
    assert m["open_share"] == 3 / 8  # 0.25, 0.5, 0.9: exactly MUSIC_OPEN_JAW is not above it
    assert m["mean_jaw"] == pytest.approx(jaw.mean())
    assert m["speech_viseme_share"] == 2 / 8


def test_music_evaluation_runs_each_predictor_on_each_clip():
    # a hand-made "model": the jaw opens 0.5 on every frame louder than -30 dBFS
    def loud_opens(audio):
        jaw = np.where(_frame_db(audio) > -30, 0.5, 0.0)
        return Track(np.where(jaw > 0, VISEME_INDEX["aa"], VISEME_INDEX["sil"]), jaw)

    def clip(loud_frames, n=100):
        a = np.full(n * 160, 1e-3, np.float32)
        a[: loud_frames * 160] = 0.3
        return a

    clips = [("wanderer", clip(30)), ("midi-eval-0", clip(10)), ("midi-eval-1", clip(0))]
    res = evaluate_music({"fake": loud_opens, "closed": lambda a: Track(np.zeros(len(a) // 160, int),
                                                                        np.zeros(len(a) // 160))}, clips)
    assert res["fake"]["all"]["open_share"] == pytest.approx(40 / 300)
    assert res["fake"]["recorded"]["open_share"] == pytest.approx(30 / 100)
    assert res["fake"]["midi"]["open_share"] == pytest.approx(10 / 200)
    assert res["closed"]["all"]["open_share"] == 0.0 and res["closed"]["all"]["mean_jaw"] == 0.0


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_evaluate_reports_the_music_table_for_each_model(monkeypatch):
    from avatar.model import read_dims
    from avatar.train.evaluate import run_evaluation
    weights = Path(__file__).resolve().parents[1] / "assets" / "lipsync_gru.safetensors"
    rng = np.random.default_rng(0)
    clips = [("wanderer", 0.1 * rng.standard_normal(16000).astype(np.float32)),
             ("midi-eval-0", np.zeros(16000, np.float32))]
    monkeypatch.setattr(music, "held_out_music", lambda: clips)
    results, report = run_evaluation([weights], None, False, None, bench=False)
    metrics = results["music"]["metrics"]
    name = f"lipsync_gru (gru, look-ahead {read_dims(weights).lookahead * 10} ms)"
    assert set(metrics) == {"energy baseline", name}
    assert all(m["all"]["frames"] == 200 and m["midi"]["frames"] == 100 for m in metrics.values())
    assert "### held-out instrumental music" in report and f"jaw_open > {MUSIC_OPEN_JAW}" in report
    assert f"| {name} |" in report.split("### held-out instrumental music")[1]
    _, without = run_evaluation([weights], None, False, None, bench=False, music=False)
    assert "instrumental music" not in without
