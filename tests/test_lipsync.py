"""`avatar lipsync`: file in, mouth track out (JSON / CSV / Rhubarb TSV), bad input handled."""
import csv
import json
import wave

import numpy as np
import pytest

from avatar.audio import AudioError
from avatar.lipsync import (LipsyncError, MouthTrack, add_cli, mouth_shapes, track_audio_file,
                                  write_track)
from avatar.visemes import PARAM_NAMES, VISEME_INDEX, VISEMES

torch = pytest.importorskip("torch")


def _write_wav(path, audio, rate=16000, channels=1):
    x = np.clip(np.asarray(audio) * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


def _speechlike(seconds, rate=16000, seed=0):
    """Silence, a buzzy vowel-like tone burst, silence."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sign(np.sin(2 * np.pi * 140 * t)) * np.exp(-(((t - seconds / 2) / (seconds / 6)) ** 2))
    return x + 1e-4 * np.random.default_rng(seed).standard_normal(len(t))


@pytest.fixture(scope="module")
def engine():
    from avatar.dims import ModelDims
    from avatar.engine.torch_engine import TorchEngine
    from avatar.model import LipSyncNet
    torch.manual_seed(0)
    return TorchEngine(LipSyncNet(ModelDims(lookahead=3)).eval())


def test_streamed_file_equals_one_pass_over_the_clip(engine, tmp_path):
    from avatar.audio import load_audio
    from avatar.train.evaluate import predict
    path = _write_wav(tmp_path / "a.wav", _speechlike(2.345))
    track = track_audio_file(path, engine)
    assert track.n_frames == int(2.345 * 16000) // 160
    v, p = predict(engine.model, load_audio(path))  # whole clip at once, output delay removed the same way
    np.testing.assert_allclose(track.params, p, atol=1e-4)
    np.testing.assert_allclose(track.visemes, v, atol=1e-4)


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2), (48000, 2)])
def test_any_rate_and_stereo_give_100_frames_per_second(engine, tmp_path, rate, channels):
    mono = _speechlike(1.5, rate)
    audio = np.repeat(mono[:, None], channels, axis=1).reshape(-1) if channels == 2 else mono
    track = track_audio_file(_write_wav(tmp_path / "x.wav", audio, rate, channels), engine)
    assert abs(track.n_frames - 150) <= 1
    assert np.all(np.isfinite(track.params)) and np.allclose(track.visemes.sum(1), 1, atol=1e-4)


def test_bad_input_gets_a_clear_message(engine, tmp_path):
    with pytest.raises(LipsyncError, match="no audio"):
        track_audio_file(_write_wav(tmp_path / "empty.wav", np.zeros(0)), engine)
    (tmp_path / "notes.wav").write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match="notes.wav"):
        track_audio_file(tmp_path / "notes.wav", engine)
    with pytest.raises(AudioError, match="no such file"):
        track_audio_file(tmp_path / "missing.wav", engine)
    clipped = np.clip(_speechlike(1.0) * 50, -1, 1)  # hard-clipped input still works
    assert np.all(np.isfinite(track_audio_file(_write_wav(tmp_path / "c.wav", clipped), engine).params))


def _track(n=120):
    rng = np.random.default_rng(0)
    v = rng.random((n, len(VISEMES))).astype(np.float32)
    v[:40] = 0
    v[:40, VISEME_INDEX["sil"]] = 1
    v[40:80, VISEME_INDEX["aa"]] += 5
    v /= v.sum(1, keepdims=True)
    return MouthTrack(rng.random((n, 4)).astype(np.float32), v)


def test_json_csv_and_rhubarb_tsv_exports(tmp_path):
    track = _track()
    write_track(track, tmp_path / "o.json")
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["fps"] == 100 and set(data["params"]) == set(PARAM_NAMES) and set(data["visemes"]) == set(VISEMES)
    assert all(len(x) == 120 for x in [*data["params"].values(), *data["visemes"].values()])
    assert data["params"]["jaw_open"][7] == pytest.approx(track.params[7, 0], abs=1e-4)
    assert data["mouth_shapes"][0] == [0.0, "X"] and data["mouth_shapes"][1] == [0.4, "D"]

    write_track(track, tmp_path / "o.csv")
    rows = list(csv.reader(open(tmp_path / "o.csv")))
    assert rows[0][:5] == ["time", *PARAM_NAMES] and rows[0][-1] == "mouth_shape" and len(rows) == 121
    assert rows[41][0] == "0.40" and rows[41][-1] == "D"

    write_track(track, tmp_path / "o.tsv")
    lines = [line.split("\t") for line in (tmp_path / "o.tsv").read_text().splitlines()]
    times = [float(t) for t, _ in lines]
    assert lines[0] == ["0.00", "X"] and lines[1] == ["0.40", "D"] and lines[-1] == ["1.20", "X"]
    assert times == sorted(times) and all(s in "ABCDEFGHX" for _, s in lines)
    with pytest.raises(LipsyncError, match="format"):
        write_track(track, tmp_path / "o.mp4")


def test_mouth_shapes_merge_single_frame_flicker():
    v = np.zeros((30, len(VISEMES)), np.float32)
    v[:, VISEME_INDEX["aa"]] = 1
    v[10, :] = 0
    v[10, VISEME_INDEX["PP"]] = 1  # one 10 ms frame of "A": no animator wants that
    v[20:, :] = 0
    v[20:, VISEME_INDEX["PP"]] = 1
    shapes = mouth_shapes(v)
    assert shapes[10] == "D" and shapes[20:] == ["A"] * 10


def test_cli_writes_and_reports(engine, tmp_path, capsys, monkeypatch):
    import argparse

    from avatar import lipsync
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    monkeypatch.setattr("avatar.lipsync.create_engine", lambda backend, model: engine)
    path = _write_wav(tmp_path / "in.wav", _speechlike(1.0))
    args = parser.parse_args(["lipsync", str(path), "-o", str(tmp_path / "out.tsv")])
    assert args.func(args) == 0 and (tmp_path / "out.tsv").exists()
    assert "100 frames" in capsys.readouterr().out
    args = parser.parse_args(["lipsync", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "o.json")])
    assert args.func(args) == 3 and "no such file" in capsys.readouterr().err
    args = parser.parse_args(["lipsync", str(path), "-o", str(tmp_path / "o.txt")])
    assert args.func(args) == 2 and "must end in" in capsys.readouterr().err
    assert lipsync.FORMATS == (".json", ".csv", ".tsv")


@pytest.mark.parametrize("which", ["default", "live"])
def test_shipped_model_on_real_speech_closes_in_silence_and_opens_on_vowels(tmp_path, which):
    """A real human prompt (Debian's asterisk sounds) between half-seconds of room silence."""
    from avatar.audio import load_audio
    from avatar.engine import create_engine, default_model_path, live_model_path
    from avatar.train.realspeech import ASTERISK_SOUNDS, Aligner, normalize_transcript
    model = {"default": default_model_path, "live": live_model_path}[which]()
    if not model.is_file():
        pytest.skip(f"no shipped model at {model}")
    prompt = ASTERISK_SOUNDS / "agent-pass.g722"
    if not prompt.is_file():
        pytest.skip("asterisk prompts not installed (apt-get install asterisk-core-sounds-en-g722)")
    pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (pip install '.[train]')")
    speech = load_audio(prompt)
    units = Aligner().align(speech, normalize_transcript("Please enter your password followed by the pound key."))
    pad = np.random.default_rng(0).normal(0, 3e-4, 8000).astype(np.float32)  # 0.5 s of quiet room
    path = _write_wav(tmp_path / "real.wav", np.concatenate([pad, speech, pad]))
    out = tmp_path / "real.json"
    write_track(track_audio_file(path, create_engine("onnxruntime", model)), out)
    jaw = np.array(json.loads(out.read_text())["params"]["jaw_open"])
    assert len(jaw) == (len(speech) + 16000) // 160
    silence = np.concatenate([jaw[5:45], jaw[-45:-5]])
    assert np.mean(silence < 0.15) >= 0.95, silence.round(2)
    vowels = [(50 + int(s) // 10 + 1, 50 + int(e) // 10 - 1) for s, e, p in units
              if p in ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "EY", "OW") and e - s >= 60]
    assert len(vowels) >= 4
    peaks = np.array([jaw[a:b].max() for a, b in vowels])
    assert np.mean(peaks > 0.3) >= 0.75, peaks.round(2)
