"""Inputs, outputs and privacy (issue 15): outputs never overwrite inputs, decompression bombs, no network,
models only from the package, damaged settings and caches, CLI errors as messages. See docs/faults.md."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tone_bursts, write_wav

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "assets" / "default_face.jpg"


def avatar(args, tmp_path, cwd=ROOT, env=None, timeout=180):
    """`python -m avatar ARGS` as a user runs it, with its caches in tmp_path."""
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "avatar", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def speech(tmp_path):
    path = tmp_path / "speech.wav"
    write_wav(path, tone_bursts([0.1], 0.5), 16000)
    return path


# ----------------------------------------------------------------------------------------------------
# outputs never overwrite inputs


def _aliases(tmp_path, target: Path):
    """The target itself, a hard link to it and a symlink to it, each as an output path."""
    hard, soft = tmp_path / f"hard{target.suffix}", tmp_path / f"soft{target.suffix}"
    os.link(target, hard)
    soft.symlink_to(target)
    return {"same": target, "hard link": hard, "symlink": soft}


@pytest.mark.parametrize("kind", ["same", "hard link", "symlink"])
@pytest.mark.parametrize("which", ["--audio", "--face"])
def test_render_refuses_to_overwrite_its_input(tmp_path, speech, capsys, kind, which):
    from avatar import cli

    face = tmp_path / "face.mp4"  # a photo named like the output (the check compares files, not names)
    face.write_bytes(FACE.read_bytes())
    audio = tmp_path / "speech.mp4"
    audio.write_bytes(speech.read_bytes())
    target = audio if which == "--audio" else face
    before = target.read_bytes()
    out = _aliases(tmp_path, target)[kind]
    code = cli.main(["render", "--face", str(face), "--audio", str(audio), "-o", str(out), "-q"])
    assert code == 2
    assert "is the input file" in capsys.readouterr().err
    assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["same", "hard link", "symlink"])
def test_lipsync_refuses_to_overwrite_its_input(tmp_path, capsys, kind):
    from avatar import cli

    track = tmp_path / "x.tsv"  # a file PyAV can read as audio yet named like a track
    write_wav(track, tone_bursts([0.1], 0.5), 16000)
    before = track.read_bytes()
    out = _aliases(tmp_path, track)[kind]
    assert cli.main(["lipsync", str(track), "-o", str(out), "--backend", "onnxruntime"]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert track.read_bytes() == before
    assert not list(tmp_path.glob("*.part"))


def test_output_beside_its_input_is_fine(tmp_path):
    from avatar.outputs import check_not_an_input

    a = tmp_path / "a.wav"
    a.write_bytes(b"x")
    check_not_an_input(tmp_path / "a.tsv", a, None)  # a new file
    (tmp_path / "b.wav").write_bytes(b"x")
    check_not_an_input(tmp_path / "b.wav", a)  # an existing other file with the same contents
