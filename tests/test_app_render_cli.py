"""`avatar render` and the app entry point, run as a user would (subprocesses)."""
import os
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
    from avatar.render_cli import loudness_probe_model

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

    from avatar.render_cli import add_bench_cli

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    add_bench_cli(parser.add_subparsers(dest="what"))
    args = parser.parse_args(argv)
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


def test_latency_bursts_are_gated_on_without_a_click():
    from avatar.render_cli import BURST_ATTACK, tone_bursts

    sr, onset = 16000, 0.1
    i = int(onset * sr)
    abrupt = tone_bursts([onset], 0.5, length=0.2, vowel=True)
    gated = tone_bursts([onset], 0.5, length=0.2, vowel=True, attack=BURST_ATTACK)
    assert np.all(gated[:i] == 0) and np.any(gated[i:i + 16] != 0)  # starts exactly at the onset...
    first_ms = slice(i, i + sr // 1000)
    assert np.abs(gated[first_ms]).max() < 0.25 * np.abs(abrupt[first_ms]).max()  # ...rising, not stepping
    full = slice(i + int(BURST_ATTACK * sr), i + int(0.05 * sr))
    np.testing.assert_allclose(gated[full], abrupt[full], atol=1e-6)  # then the same vowel
