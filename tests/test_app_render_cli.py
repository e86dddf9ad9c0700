"""`avatar render` and the app entry point, run as a user would (subprocesses)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import decode_mp4, tone_bursts, write_wav

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "assets" / "default_face.jpg"


def render(args, tmp_path, **kw):
    """`avatar render ...` through the package's argparse (render_cli.add_cli), with the loudness network."""
    code = ("import argparse, sys\n"
            "from avatar.render_cli import add_cli\n"
            "p = argparse.ArgumentParser(prog='avatar'); add_cli(p.add_subparsers(dest='command'))\n"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", code, "render", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def probe_model(tmp_path_factory):
    """The hand-set loudness network saved as a model file (no trained model ships yet)."""
    from avatar.model import save_model
    from avatar.bench.signals import loudness_probe_model

    path = tmp_path_factory.mktemp("model") / "probe.safetensors"
    save_model(loudness_probe_model(), path)
    return path


def test_render_writes_a_synced_mp4(tmp_path, probe_model):
    onsets = [0.4, 1.2]
    write_wav(tmp_path / "speech.wav", tone_bursts(onsets, 2.0), 16000)
    out = tmp_path / "out.mp4"
    r = render(["--face", str(FACE), "--audio", str(tmp_path / "speech.wav"), "-o", str(out), "--size", "256",
                "--fps", "25", "--backend", "onnxruntime", "--model", str(probe_model), "--no-liveliness"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "real time" in r.stderr
    info = decode_mp4(out)
    assert (info["video_codec"], info["audio_codec"], info["pix_fmt"]) == ("h264", "aac", "yuv420p")
    assert info["frames"][0].shape == (256, 256, 3) and len(info["frames"]) == 50
    # the mouth (pixel change against the first, silent frame) opens with each tone, within one frame
    opening = np.array([np.abs(f.astype(int) - info["frames"][0].astype(int)).mean() for f in info["frames"]])
    is_open = opening > 0.5 * opening.max()
    opened = info["times"][1:][is_open[1:] & ~is_open[:-1]]
    np.testing.assert_allclose(opened, onsets, atol=1 / 25)


@pytest.mark.parametrize("args, code, words", [
    (["--audio", "missing.wav"], 3, "no such file"),
    (["--size", "9"], 2, "between 64 and 2048"),
    (["-o", "/nonexistent-folder/x.mp4"], 5, "does not exist"),
    (["-o", "out.avi"], 2, "must be an .mp4"),
    (["--face", "speech.wav"], 3, "speech.wav"),
])
def test_bad_arguments_give_a_message_and_an_exit_code(tmp_path, args, code, words):
    write_wav(tmp_path / "speech.wav", tone_bursts([0.1], 0.5), 16000)
    base = {"--face": str(FACE), "--audio": str(tmp_path / "speech.wav"), "-o": str(tmp_path / "o.mp4")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value if "/" in value or flag == "--size" else str(tmp_path / value)
    argv = [x for kv in base.items() for x in kv] + ["--backend", "onnxruntime", "-q"]
    r = render(argv, tmp_path)
    assert r.returncode == code, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr


def test_photo_without_a_face_exits_with_its_own_code(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((300, 300, 3), 128, np.uint8))
    write_wav(tmp_path / "speech.wav", tone_bursts([0.1], 0.5), 16000)
    r = render(["--face", str(tmp_path / "wall.png"), "--audio", str(tmp_path / "speech.wav"), "-o",
                str(tmp_path / "o.mp4"), "-q"], tmp_path)
    assert r.returncode == 4 and "No face" in r.stderr and "Traceback" not in r.stderr


def test_avatar_without_arguments_opens_the_window(x_display, tmp_path):
    """`python -m avatar` (no arguments) on the X display: the main window appears and stays up."""
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "AVATAR_CACHE_DIR": str(tmp_path / "cache"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "avatar"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, found = time.monotonic() + 30, False
        while time.monotonic() < deadline and proc.poll() is None and not found:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True).stdout
            found = "Talking Avatar" in tree
            time.sleep(0.3)
        assert found, "no 'Talking Avatar' window appeared"
        time.sleep(1.0)
        assert proc.poll() is None, "the app exited"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert "Traceback" not in out


def _bench(argv, monkeypatch, tmp_path):
    import argparse

    from avatar import bench

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    bench.add_cli(parser.add_subparsers(dest="what"))
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


def test_bench_render_offline_runs(monkeypatch, tmp_path, capsys):
    code = _bench(["render-offline", "--model", "probe", "--backend", "onnxruntime", "--size", "128",
                   "--seconds", "1", "--runs", "1"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert code == 0 and "x real time" in out and "core-seconds per second of video" in out


def test_bench_latency_runs_through_the_virtual_mic(virtual_mic, monkeypatch, tmp_path, capsys):
    code = _bench(["latency", "--model", "probe", "--backend", "onnxruntime", "--size", "128", "--bursts", "3"],
                  monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert code == 0 and "mic→pixel latency at 60 fps" in out and "(3 tone onsets, 5 ms attack)" in out


def test_bench_soak_runs_through_the_virtual_mic(virtual_mic, monkeypatch, tmp_path, capsys):
    code = _bench(["soak", "--minutes", "0.15", "--model", "probe", "--backend", "onnxruntime", "--size", "128",
                   "--sample-seconds", "1"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "RSS: start" in out and "dropped frames: view" in out and "A/V drift" in out
    audio_s = float(out.split("audio ")[1].split(" s")[0])
    assert 8.0 < audio_s < 10.0  # 9 s of recording


def test_soak_memory_growth_is_fitted_after_the_warm_up():
    from avatar.bench.soak import RSS_WARMUP_SECONDS, memory_growth_mb_per_minute

    mb = 2 ** 20
    samples = [(0.0, 100 * mb), (10.0, 300 * mb)]  # start-up: not growth
    samples += [(RSS_WARMUP_SECONDS + 60.0 * i, (300 + 2 * i) * mb) for i in range(5)]
    assert memory_growth_mb_per_minute(samples) == pytest.approx(2.0)
    assert memory_growth_mb_per_minute(samples[:3]) is None


def test_latency_bursts_are_gated_on_without_a_click():
    from avatar.bench.signals import BURST_ATTACK, tone_bursts

    sr, onset = 16000, 0.1
    i = int(onset * sr)
    abrupt = tone_bursts([onset], 0.5, length=0.2, vowel=True)
    gated = tone_bursts([onset], 0.5, length=0.2, vowel=True, attack=BURST_ATTACK)
    assert np.all(gated[:i] == 0) and np.any(gated[i:i + 16] != 0)  # starts exactly at the onset...
    first_ms = slice(i, i + sr // 1000)
    assert np.abs(gated[first_ms]).max() < 0.25 * np.abs(abrupt[first_ms]).max()  # ...rising, not stepping
    full = slice(i + int(BURST_ATTACK * sr), i + int(0.05 * sr))
    np.testing.assert_allclose(gated[full], abrupt[full], atol=1e-6)  # then the same vowel


RENDER_CODE = ("import argparse, sys\n"
               "from avatar.render_cli import add_cli\n"
               "p = argparse.ArgumentParser(prog='avatar'); add_cli(p.add_subparsers(dest='command'))\n"
               "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")


def _long_render(tmp_path, probe_model, out, seconds=120.0):
    """`avatar render` of `seconds` of tone bursts, started in the background (stderr to a file)."""
    onsets = np.arange(0.3, seconds - 0.5, 0.7)
    write_wav(tmp_path / "long.wav", tone_bursts(onsets, seconds), 16000)
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "cache")}
    stderr = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-c", RENDER_CODE, "render", "--face", str(FACE), "--audio",
                             str(tmp_path / "long.wav"), "-o", str(out), "--size", "128", "--fps", "25", "--backend",
                             "onnxruntime", "--model", str(probe_model), "--no-liveliness", "-q"],
                            cwd=ROOT, env=env, stderr=stderr,
                            # a test run started in the background (no job control) ignores SIGINT, and a child
                            # inherits that: the render must hear the signal the test sends it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, stderr


def _wait_for_fragments(partial, proc, min_bytes=60_000, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size >= min_bytes:
            return
        time.sleep(0.05)
    raise AssertionError(f"the render wrote no fragments to {partial} (exit {proc.poll()})")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_interrupted_render_keeps_a_playable_partial_and_the_previous_file(tmp_path, probe_model, how):
    """Killed or interrupted mid-render: the previous OUT.mp4 is untouched and OUT.partial.mp4 plays (fragmented
    while written; finished properly on SIGINT/SIGTERM, cut at the last fragment on kill -9)."""
    import signal

    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous render")
    # 10 minutes of sound: on a quiet machine a 2-minute 128² render can end (and replace OUT.mp4) before its partial
    # file reaches the size this waits for, and the signal would then come too late to interrupt anything
    proc, stderr = _long_render(tmp_path, probe_model, out, seconds=600.0)
    partial = tmp_path / "out.partial.mp4"
    try:
        _wait_for_fragments(partial, proc)
        proc.send_signal(getattr(signal, how))
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        stderr.close()
    message = (tmp_path / "stderr.txt").read_text()
    assert out.read_bytes() == b"the previous render", f"exit {code}, stderr: {message}"
    if how == "SIGKILL":
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + getattr(signal, how), message
        assert "interrupted" in message and str(partial) in message and "Traceback" not in message
    info = decode_mp4(partial)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert len(info["frames"]) >= 25 and len(info["audio"]) / info["sample_rate"] >= 1.0
    assert abs(info["times"][-1] + 1 / 25 - len(info["audio"]) / info["sample_rate"]) < 0.2


def test_render_replaces_the_previous_file_only_when_complete(tmp_path, probe_model):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous render")
    write_wav(tmp_path / "speech.wav", tone_bursts([0.4], 1.0), 16000)
    r = render(["--face", str(FACE), "--audio", str(tmp_path / "speech.wav"), "-o", str(out), "--size", "128",
                "--backend", "onnxruntime", "--model", str(probe_model), "-q"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(decode_mp4(out)["frames"]) == 30
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out.mp4"]  # no partial left behind


def test_full_disk_stops_the_render_with_a_message_and_a_playable_partial(tmp_path, tiny_disk, probe_model):
    rng = np.random.default_rng(0)
    write_wav(tmp_path / "noise.wav", 0.3 * rng.standard_normal(16000 * 60), 16000)  # noisy audio: big AAC
    out = tiny_disk / "out.mp4"
    r = render(["--face", str(FACE), "--audio", str(tmp_path / "noise.wav"), "-o", str(out), "--size", "256",
                "--backend", "onnxruntime", "--model", str(probe_model), "-q"], tmp_path)
    partial = tiny_disk / "out.partial.mp4"
    assert r.returncode == 5 and "disk is full" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
    if partial.exists():  # the message says which
        assert f"the part rendered so far is in {partial}" in r.stderr
        assert len(decode_mp4(partial)["frames"]) >= 30
    else:
        assert "nothing was written" in r.stderr


PEAK_RSS_CODE = RENDER_CODE.replace("sys.exit(a.func(a))", "code = a.func(a)\n"
                                    "import resource; print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF)"
                                    ".ru_maxrss, file=sys.stderr); sys.exit(code)")


def _peak_rss_of_render(tmp_path, probe_model, minutes):
    """Peak RSS (bytes) of an `avatar render` of `minutes` of speech-like audio at a small size and low fps."""
    import wave

    path = tmp_path / f"{minutes}min.wav"
    rng = np.random.default_rng(0)
    block = tone_bursts(np.arange(0.3, 59.5, 0.9), 60.0) + 0.01 * rng.standard_normal(16000 * 60)
    pcm = (np.clip(block, -1, 1) * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:  # written a minute at a time: the test itself stays small too
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        for _ in range(minutes):
            w.writeframes(pcm)
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", PEAK_RSS_CODE, "render", "--face", str(FACE), "--audio", str(path),
                        "-o", str(tmp_path / f"{minutes}.mp4"), "--size", "64", "--fps", "2", "--backend",
                        "onnxruntime", "--model", str(probe_model), "--no-liveliness", "-q"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    path.unlink()
    return int(r.stderr.split("peak-rss-kb")[1].split()[0]) * 1024


@pytest.mark.slow
def test_render_memory_does_not_grow_with_the_audio_length(tmp_path, probe_model):
    """Streamed decode and rendering: an hour of audio peaks within 10 % of 2 minutes (decoded whole and tracked
    in memory, 519 -> 723 MB, +39 %; streamed, 516 -> 498 MB)."""
    short = _peak_rss_of_render(tmp_path, probe_model, 2)
    long = _peak_rss_of_render(tmp_path, probe_model, 60)
    assert long < 1.10 * short, (short / 2**20, long / 2**20)
