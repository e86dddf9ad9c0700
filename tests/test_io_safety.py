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


# ----------------------------------------------------------------------------------------------------
# every CLI error a message and a documented exit code, no tracebacks


@pytest.fixture
def bad_models(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    garbage_onnx = tmp_path / "garbage.onnx"
    garbage_onnx.write_bytes(os.urandom(200))
    return {"junk": junk, "garbage": garbage_onnx, "missing": tmp_path / "nowhere.safetensors"}


def _no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("out, code, words", [
    ("missing-folder/o.tsv", 5, "does not exist"),
    ("a-folder.tsv", 5, "is a folder"),
    ("locked/o.tsv", 5, "permission denied"),
])
def test_lipsync_checks_its_output_before_reading_the_input(tmp_path, out, code, words):
    (tmp_path / "a-folder.tsv").mkdir()
    (tmp_path / "locked").mkdir(mode=0o555)
    if os.geteuid() == 0 and "locked" in out:
        pytest.skip("root writes into read-only folders")
    # the input does not exist: an output check that came after reading it would say "no such file" instead
    r = avatar(["lipsync", str(tmp_path / "absent.wav"), "-o", str(tmp_path / out)], tmp_path)
    _no_traceback(r)
    assert r.returncode == code and words in r.stderr, r.stderr
    assert not list(tmp_path.rglob("*.part"))


def test_lipsync_unwritable_output_at_the_end_leaves_no_part_file(tmp_path, speech, monkeypatch, capsys):
    """The folder is writable when checked, then the write fails (disk full): a message, code 5, no .part."""
    import errno

    from avatar import cli, lipsync

    def full_disk(track, out):
        out.with_name(out.name + ".part").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(lipsync, "write_track", full_disk)
    assert cli.main(["lipsync", str(speech), "-o", str(tmp_path / "o.tsv"), "--backend", "onnxruntime"]) == 5
    assert "No space left" in capsys.readouterr().err
    assert not list(tmp_path.glob("o.tsv*"))


@pytest.mark.parametrize("extra, code, words", [
    (["--backend", "nonsense"], 2, "unknown backend 'nonsense'"),
    (["--model", "junk"], 1, "not a readable talking-avatar model"),
    (["--model", "junk", "--backend", "onnxruntime"], 1, "not a readable talking-avatar model"),
    (["--model", "garbage"], 1, "garbage.onnx"),
    (["--model", "missing"], 1, "not found"),
])
def test_lipsync_bad_backend_or_model_is_a_message(tmp_path, speech, bad_models, extra, code, words):
    extra = [str(bad_models[a]) if a in bad_models else a for a in extra]
    r = avatar(["lipsync", str(speech), "-o", str(tmp_path / "o.tsv"), *extra], tmp_path)
    _no_traceback(r)
    assert r.returncode == code and words in r.stderr, r.stderr
    assert not list(tmp_path.glob("o.tsv*"))


def test_lipsync_unreadable_input_is_code_3(tmp_path):
    (tmp_path / "notes.wav").write_text("not audio\n" * 20)
    r = avatar(["lipsync", str(tmp_path / "notes.wav"), "-o", str(tmp_path / "o.json"), "--backend", "onnxruntime"],
               tmp_path)
    _no_traceback(r)
    assert r.returncode == 3 and "notes.wav" in r.stderr
    assert not list(tmp_path.glob("o.json*"))


def test_render_unknown_backend_exits_2_before_building_the_rig(tmp_path, speech, monkeypatch, capsys):
    from avatar import cli, render_cli

    def no_rig(*a, **k):
        raise AssertionError("the rig was built before the backend was checked")

    monkeypatch.setattr(render_cli, "open_renderer", no_rig)
    code = cli.main(["render", "--face", str(FACE), "--audio", str(speech), "-o", str(tmp_path / "o.mp4"),
                     "--backend", "nonsense", "-q"])
    assert code == 2 and "unknown backend 'nonsense'" in capsys.readouterr().err


def test_render_bad_model_is_a_message(tmp_path, speech, bad_models):
    r = avatar(["render", "--face", str(FACE), "--audio", str(speech), "-o", str(tmp_path / "o.mp4"), "--size", "128",
                "--backend", "onnxruntime", "--model", str(bad_models["junk"]), "-q"], tmp_path)
    _no_traceback(r)
    assert r.returncode == 1 and "not a readable talking-avatar model" in r.stderr


def test_window_backend_option_is_checked_and_used(monkeypatch, capsys):
    from avatar import cli, gui

    started = []
    monkeypatch.setattr(gui, "run_app", lambda argv, backend=None: started.append(backend) or 0)
    assert cli.main(["--backend", "nonsense"]) == 2
    assert "unknown backend 'nonsense'" in capsys.readouterr().err and started == []
    assert cli.main(["--backend", "ort"]) == 0 and started == ["onnxruntime"]
    assert cli.main([]) == 0 and started[-1] is None  # no option: the saved setting stays


def test_window_starts_on_the_backend_given(qapp, qsettings, monkeypatch):
    from avatar.gui import app
    from avatar.gui.settings import Preferences, save_preferences

    save_preferences(Preferences(backend="torch", photo=str(FACE)))
    seen = {}

    def fake_main_window(prefs):
        seen["backend"] = prefs.backend

        class Window:
            resize = show = lambda *a: None
        return Window()

    monkeypatch.setattr(app, "main_window", fake_main_window)
    monkeypatch.setattr(qapp, "exec", lambda: 0)
    assert app.run_app([], backend="onnxruntime") == 0 and seen["backend"] == "onnxruntime"
    assert app.run_app([]) == 0 and seen["backend"] == "torch"


def test_bench_engine_unknown_backend_exits_2(capsys):
    from avatar import cli

    assert cli.main(["bench", "engine", "--backends", "nonsense", "--iters", "1"]) == 2
    assert "unknown backend 'nonsense'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# README and CLI agree: `avatar render --face-index N`


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """The default face beside a smaller copy of itself: face 0 is the left (larger) one, face 1 the right."""
    import cv2

    face = cv2.imread(str(FACE))
    small = np.full_like(face, 200)
    sub = cv2.resize(face, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    small[:sub.shape[0], :sub.shape[1]] = sub
    path = tmp_path_factory.mktemp("faces") / "two.png"
    cv2.imwrite(str(path), np.concatenate([face, small], axis=1))
    return path, face.shape[1]


def test_render_face_index_picks_the_other_face(tmp_path, speech, two_faces, monkeypatch):
    from avatar import cli
    from avatar.face import assemble

    path, _ = two_faces
    rigs = []
    real_build_rig = assemble.build_rig

    def keep(photo, **kw):
        rig = real_build_rig(photo, **kw)
        rigs.append((kw.get("face_index"), rig))
        return rig

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(assemble, "build_rig", keep)
    for index in (0, 1):
        out = tmp_path / f"face{index}.mp4"
        assert cli.main(["render", "--face", str(path), "--audio", str(speech), "-o", str(out), "--size", "128",
                         "--fps", "10", "--face-index", str(index), "--backend", "onnxruntime", "-q"]) == 0
        assert out.stat().st_size > 0
    (first, rig0), (chosen, rig1) = rigs
    assert (first, chosen) == (0, 1)  # the rig finds the faces itself (turn check included) and takes the asked one
    assert np.abs(rig0.image.astype(int) - rig1.image.astype(int)).mean() > 5  # framed on another face


def test_render_face_index_beyond_the_faces_found_exits_4(tmp_path, speech, capsys):
    from avatar import cli

    out = tmp_path / "o.mp4"
    assert cli.main(["render", "--face", str(FACE), "--audio", str(speech), "-o", str(out),
                     "--face-index", "3", "-q"]) == 4
    assert "has 1 face(s), so face 3 does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_readme_options_of_avatar_render_exist():
    """Every `--option` the README shows on an `avatar render` line is one the command accepts."""
    import re

    from avatar.cli import build_parser

    render = build_parser()._subparsers._group_actions[0].choices["render"]
    accepted = {o for a in render._actions for o in a.option_strings}
    readme = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"--[a-z][a-z-]+", " ".join(re.findall(r"avatar render[^`\n]*", readme))))
    assert "--face-index" in shown and "--face-index" in accepted
    assert shown <= accepted, shown - accepted


# ----------------------------------------------------------------------------------------------------
# photos: refused by pixel count before decoding, big ones decoded in bounded memory


def one_colour_png(path, width, height, rows=None):
    """A black RGB PNG written row by row (never held in memory): a 20000x20000 one is ~5 MB on disk.
    `rows` < height writes only that many rows: a file whose header claims more than its data holds."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    row = b"\x00" + bytes(3 * width)
    body = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


PEAK_RSS = ("import resource, sys\n"
            "from avatar.face.photo import PhotoError, load_photo\n"
            "try:\n    print('shape', load_photo(sys.argv[1]).shape)\n"
            "except PhotoError as e:\n    print('refused', e)\n"
            "print('peak_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")


def _load_in_subprocess(path):
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    return lines, float(lines["peak_mb"]), r.stderr


@pytest.fixture(scope="module")
def baseline_rss():
    """Peak RSS of the same subprocess loading a small photo: the imports' own share."""
    return _load_in_subprocess(FACE)[1]


def test_decompression_bomb_is_refused_from_its_header(tmp_path, baseline_rss):
    """20000x20000 (400 MP, exactly twice the limit, where Pillow itself only warns): 1.2 GB decoded, 5.5 GB in
    the old conversions. Refused from the header: the process stays at the size of its imports."""
    lines, peak, err = _load_in_subprocess(one_colour_png(tmp_path / "bomb.png", 20000, 20000))
    assert "refused" in lines and "20000x20000 pixels (400 megapixels)" in lines["refused"]
    assert peak < baseline_rss + 50, (peak, baseline_rss)
    assert "DecompressionBombWarning" not in err


def test_photo_just_over_the_limit_is_refused_before_decoding(tmp_path):
    """Between the limit and twice it Pillow only warns; a file whose data ends after its header shows that
    nothing is decoded (decoding it would say "damaged")."""
    from avatar.face.photo import MAX_FILE_PIXELS, PhotoError, load_photo

    side = int(np.sqrt(MAX_FILE_PIXELS)) + 100
    with pytest.raises(PhotoError, match="megapixels can be opened"):
        load_photo(one_colour_png(tmp_path / "big.png", side, side, rows=2))


def test_large_photo_is_shrunk_before_its_conversions(tmp_path, baseline_rss):
    """A 36 MP RGBA photo: decoded (144 MB), scaled down at once, then converted. The old path converted the whole
    photo in float32 (peak 1.65 GB for this one); now the decoded copy and Pillow's premultiplied one (RGBA is
    resized premultiplied) are the peak, under three decoded sizes (measured 0.45 GB)."""
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGBA", (6000, 6000), (200, 120, 90, 128)).save(path, compress_level=1)
    lines, peak, _ = _load_in_subprocess(path)
    assert lines["shape"] == "(2048, 2048, 3)"
    decoded_mb = 6000 * 6000 * 4 / 2**20
    assert peak < baseline_rss + 3 * decoded_mb, (peak, baseline_rss)


def test_large_jpeg_decodes_at_a_reduced_scale(tmp_path):
    """JPEG's own 1/2..1/8 scaled decoding gives the same picture (within JPEG error) at the same size."""
    from PIL import Image

    from avatar.face.photo import load_photo

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (60, 80, 3), np.uint8)
    big = np.asarray(Image.fromarray(small).resize((8000, 6000), Image.NEAREST))
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    img = load_photo(tmp_path / "big.jpg")
    assert img.shape == (1536, 2048, 3)
    expected = np.asarray(Image.fromarray(small).resize((2048, 1536), Image.NEAREST)).astype(int)
    assert np.median(np.abs(img.astype(int) - expected)) < 8


def test_window_says_why_it_refuses_a_bomb(app_window_bomb, qtbot):
    window, bomb = app_window_bomb
    previous = window.controller.renderer
    window.open_photo(str(bomb))
    qtbot.waitUntil(lambda: bool(window.controller.last_error), timeout=20000)
    assert "megapixels can be opened" in window.controller.last_error
    assert window.controller.renderer is previous


@pytest.fixture
def app_window_bomb(qtbot, qsettings, tmp_path, monkeypatch):
    from avatar.engine import create_engine
    from avatar.gui import main_window
    from avatar.gui.settings import load_preferences
    from tests.conftest import loudness_model

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    prefs = load_preferences()
    prefs.size, prefs.output_folder, prefs.liveliness = 256, str(tmp_path), {"enabled": False}
    w = main_window(prefs, engine_factory=lambda backend: create_engine("onnxruntime", model=loudness_model()))
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.controller.renderer is not None, timeout=20000)
    yield w, one_colour_png(tmp_path / "bomb.png", 15000, 15000, rows=2)
    w.close()


# ----------------------------------------------------------------------------------------------------
# settings validated on load


def _ini(tmp_path):
    """The avatar.ini that QSettings (isolated by the qsettings fixture) reads."""
    from avatar.gui.settings import _settings

    return Path(_settings().fileName())


@pytest.mark.parametrize("key, raw", [
    ("size", "99999"), ("size", "0"), ("size", "big"),
    ("gain_db", "nan"), ("gain_db", "inf"), ("gain_db", "1e9"),
    ("gate_db", "-nan"), ("gate_db", "0"),
    ("record_fps", "0"), ("record_fps", "-5"), ("record_fps", "100000"),
    ("fps", "7"), ("backend", "nonsense"), ("background", "plaid"), ("background_color", "red"),
    ("background_color", "#12345"), ("name_prefix", "../../etc/x"), ("name_prefix", "   "),
    ("liveliness", "[1, 2]"), ("liveliness", '{"blinks": "maybe"}'), ("recent_photos", "{}"),
])
def test_damaged_setting_is_replaced_by_its_default(qsettings, tmp_path, key, raw):
    from avatar.gui.settings import Preferences, invalid_message, load_preferences

    ini = _ini(tmp_path)
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(f"[General]\nsize=384\n{key}={raw}\n" if key != "size" else f"[General]\n{key}={raw}\n")
    prefs = load_preferences()
    assert getattr(prefs, key) == getattr(Preferences(), key)
    if key != "size":
        assert prefs.size == 384  # the good values around it are kept
    assert prefs.invalid == [key] and key in invalid_message(prefs)


def test_good_settings_load_without_a_message(qsettings):
    from avatar.gui.settings import Preferences, invalid_message, load_preferences, save_preferences

    save_preferences(Preferences(size=768, gain_db=-3.5, gate_db=-100.0, record_fps=25, backend="ort",
                                 liveliness={"blinks": False}, name_prefix="my talk"))
    prefs = load_preferences()
    assert (prefs.size, prefs.gain_db, prefs.record_fps, prefs.liveliness) == (768, -3.5, 25, {"blinks": False})
    assert invalid_message(prefs) is None


def test_window_starts_with_damaged_settings_and_says_so_once(qtbot, qsettings, tmp_path, monkeypatch):
    from avatar.engine import create_engine
    from avatar.gui import main_window
    from avatar.gui.settings import invalid_message, load_preferences
    from tests.conftest import loudness_model

    ini = _ini(tmp_path)
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("[General]\nsize=99999\ngain_db=nan\nrecord_fps=0\n")
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    w = main_window(engine_factory=lambda backend: create_engine("onnxruntime", model=loudness_model()))
    qtbot.addWidget(w)
    try:
        assert "record_fps, size, gain_db" in w.controller.last_error
        qtbot.waitUntil(lambda: w.controller.renderer is not None, timeout=20000)
        prefs = w.controller.prefs
        assert w.controller.renderer.size == (512, 512) and prefs.record_fps == 30 and prefs.gain_db == 0.0
    finally:
        w.close()
    assert invalid_message(load_preferences()) is None  # the defaults were stored: no message next time


# ----------------------------------------------------------------------------------------------------
# no network at all


# Runs avatar.cli.main(argv) with a Python audit hook that appends every socket event (family, event) to a file as
# it happens (the app is stopped with SIGTERM, so nothing is left to write at exit). Native code (ONNX Runtime's
# telemetry is C++) opens sockets without Python seeing them: strace covers that.
AUDITED = r"""
import socket, sys
log = open(sys.argv[1], "a", buffering=1)
def hook(event, args):
    if event.startswith("socket."):
        family = ""
        if event in ("socket.__new__",):
            family = getattr(args[1], "name", str(args[1]))
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            family = getattr(getattr(args[0], "family", ""), "name", "")
        log.write(f"{event} {family}\n")
sys.addaudithook(hook)
sys.argv = ["avatar", *sys.argv[2:]]
from avatar.cli import main
sys.exit(main())
"""
INET = ("AF_INET", "AF_INET6")
NAME_LOOKUPS = ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr",
                "socket.getnameinfo")
APP_SECONDS = 15  # ONNX Runtime's telemetry made its first DNS look-up ~9 s after the app started


def _network_env(tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "AVATAR_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the package must set it itself
    return env, home


def _audited(argv, tmp_path, seconds=None):
    """Run `avatar ARGV` under the audit hook (and strace -f when present): (python events, strace lines,
    stdout+stderr, HOME). `seconds`: stop it with SIGTERM after that long (the window runs until closed)."""
    import shutil
    import signal
    import time

    env, home = _network_env(tmp_path)
    events = tmp_path / "audit.txt"
    trace = tmp_path / "strace.txt"
    cmd = [sys.executable, "-c", AUDITED, str(events), *argv]
    if shutil.which("strace"):
        cmd = ["strace", "-f", "-qq", "-e", "trace=socket,connect,bind,sendto,sendmsg", "-o", str(trace), *cmd]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if seconds is None:
        out = proc.communicate(timeout=300)[0]
    else:
        time.sleep(seconds)
        assert proc.poll() is None, proc.communicate()[0]
        # strace -f: signal the traced python (strace's child), then strace ends with it
        child = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0]
                    ) if cmd[0] == "strace" else proc.pid
        os.kill(child, signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    lines = events.read_text().splitlines() if events.exists() else []
    traced = trace.read_text().splitlines() if trace.exists() else None
    return lines, traced, out, home


def _assert_offline(lines, traced, home):
    inet = [e for e in lines if e.split(" ")[-1] in INET or e.split(" ")[0] in NAME_LOOKUPS]
    assert not inet, inet
    # AF_UNIX sockets are fine: PulseAudio's server, the X server, D-Bus are on this machine
    if traced is not None:
        native = [t for t in traced if ("connect(" in t or "sendto(" in t or "sendmsg(" in t or "bind(" in t)
                  and ("AF_INET" in t)]
        assert not native, native
    assert not (home / ".cache" / "Microsoft").exists(), "ONNX Runtime wrote its telemetry queue"


def _strace_or_skip(traced):
    if traced is None:
        pytest.skip("strace is not installed (.ci/apt-packages.txt): native sockets unchecked; Python's were")


def test_cli_uses_no_network(tmp_path, speech):
    lines, traced, out, home = _audited(["lipsync", str(speech), "-o", str(tmp_path / "o.tsv"), "--backend",
                                         "onnxruntime"], tmp_path)
    assert "50 frames" in out, out
    _assert_offline(lines, traced, home)
    lines, traced, out, home = _audited(["--self-test"], tmp_path)
    assert "self-test" in out and "Traceback" not in out, out
    _assert_offline(lines, traced, home)
    _strace_or_skip(traced)


def test_app_uses_no_network(tmp_path):
    lines, traced, out, home = _audited([], tmp_path, seconds=APP_SECONDS)
    assert "Traceback" not in out, out
    assert any(e.startswith("socket.") for e in lines) or traced  # the hook was live (X/Pulse/D-Bus sockets)
    _assert_offline(lines, traced, home)
    _strace_or_skip(traced)


SERVED = r"""
import socket, sys, time
log = open(sys.argv[1], "a", buffering=1)
def hook(event, args):
    if event in ("socket.bind", "socket.connect"):
        log.write(f"{event} {getattr(getattr(args[0], 'family', ''), 'name', '')} {args[1]!r}\n")
sys.addaudithook(hook)
from avatar.controller import Controller
from avatar.gui.app import real_engine_factory, real_renderer_factory
from avatar.preferences import Preferences
c = Controller(Preferences(output_folder=sys.argv[2], serve_port=0), real_engine_factory, real_renderer_factory)
c.start()
time.sleep(1)
log.write("-- turned on\n")
print(c.set_browser_source(True), c.set_input_endpoint(True), flush=True)
time.sleep(1)
c.set_browser_source(False), c.set_input_endpoint(False)
log.write("-- turned off\n")
time.sleep(1)
c.close()
"""


def test_only_a_server_the_user_turns_on_listens_and_only_on_loopback(tmp_path):
    """The browser source / input endpoint (avatar.serve): no AF_INET socket before they are turned on (as in the
    app's start above), then one bound to 127.0.0.1 only, none after; strace checks the native side too."""
    import shutil

    env, home = _network_env(tmp_path)
    events, trace = tmp_path / "audit.txt", tmp_path / "strace.txt"
    cmd = [sys.executable, "-c", SERVED, str(events), str(tmp_path)]
    if shutil.which("strace"):
        cmd = ["strace", "-f", "-qq", "-e", "trace=socket,connect,bind,listen", "-o", str(trace), *cmd]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "http://127.0.0.1:" in out.stdout, out.stderr[-3000:]
    lines = events.read_text().splitlines()
    on, off = lines.index("-- turned on"), lines.index("-- turned off")
    inet = [i for i, e in enumerate(lines) if e.split(" ")[1] in INET]
    assert inet and all(on < i < off for i in inet), lines  # nothing before the user turns it on, nothing after
    assert all(lines[i].startswith("socket.bind AF_INET ('127.0.0.1',") for i in inet), lines
    if trace.exists():
        binds = [t for t in trace.read_text().splitlines() if "bind(" in t and "AF_INET" in t]
        assert binds and all('inet_addr("127.0.0.1")' in t for t in binds), binds
        connects = [t for t in trace.read_text().splitlines() if "connect(" in t and "AF_INET" in t]
        assert not connects, connects
    assert not (home / ".cache" / "Microsoft").exists()


# ----------------------------------------------------------------------------------------------------
# models only from the package's own paths


PLANTED = ("face_landmark/face_landmark_with_attention.tflite", "face_landmark/face_landmark.tflite",
           "face_detection/face_detection_short_range.tflite", "selfie_segmentation/selfie_segmentation.tflite")


def test_models_planted_in_the_current_folder_are_not_loaded(tmp_path):
    """MediaPipe opens "mediapipe/modules/..." from the current folder and ./bazel-bin before its own: junk planted
    in both must not be read (junk made FaceMesh fail; another model would have been used silently)."""
    for base in (tmp_path, tmp_path / "bazel-bin"):
        for name in PLANTED:
            junk = base / "mediapipe" / "modules" / name
            junk.parent.mkdir(parents=True, exist_ok=True)
            junk.write_bytes(b"TFL3 planted junk, not a model")
    code = ("import numpy as np\nfrom PIL import Image\nfrom avatar.face.landmarks import detect_faces\n"
            f"faces = detect_faces(np.asarray(Image.open({str(FACE)!r}).convert('RGB')))\n"
            "print('faces', len(faces), round(float(np.ptp(faces[0][:, 0]))))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("faces 1 "), r.stdout


def test_pinned_solution_works_for_a_solution_without_calculator_options(tmp_path, monkeypatch):
    """SelfieSegmentation (the background fill's person mask) passes no calculator options: pinned all the same."""
    import mediapipe as mp

    from avatar.face.landmarks import pinned_solution

    junk = tmp_path / "mediapipe" / "modules" / "selfie_segmentation" / "selfie_segmentation.tflite"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"planted junk")
    monkeypatch.chdir(tmp_path)
    image = np.asarray(__import__("PIL.Image").Image.open(FACE).convert("RGB"))
    with pinned_solution(mp.solutions.selfie_segmentation.SelfieSegmentation)(model_selection=0) as seg:
        mask = seg.process(image).segmentation_mask
    assert mask.shape == image.shape[:2] and mask.max() > 0.5 > mask.min()


def test_background_fill_person_mask_ignores_a_planted_model(tmp_path, monkeypatch):
    from avatar.face.assemble import person_mask

    junk = tmp_path / "mediapipe" / "modules" / "selfie_segmentation" / "selfie_segmentation.tflite"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"planted junk")
    monkeypatch.chdir(tmp_path)
    mask = person_mask(np.asarray(__import__("PIL.Image").Image.open(FACE).convert("RGB")))
    assert mask.ndim == 3 and mask.max() > 0.5 > mask.min()


# ----------------------------------------------------------------------------------------------------
# the ONNX export cache: checksummed, rebuilt when damaged


@pytest.mark.parametrize("damage", ["flipped bytes", "truncated", "no checksum"])
def test_damaged_onnx_export_is_rebuilt(tmp_path, monkeypatch, damage):
    pytest.importorskip("torch")
    from avatar.engine import create_engine, resolve_onnx
    from avatar.engine.cache import verify_checksum
    from avatar.model import save_model
    from tests.conftest import loudness_model

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    lone = tmp_path / "m.safetensors"  # no .onnx beside it: ONNX Runtime runs the cached export
    save_model(loudness_model(), lone)
    cached = resolve_onnx(lone)
    good = cached.read_bytes()
    x = np.random.default_rng(0).standard_normal((4, 40)).astype(np.float32)
    expected = create_engine("onnxruntime", lone).step(x).params
    for backend in ("auto", "onnxruntime"):
        if damage == "flipped bytes":
            cached.write_bytes(good[:100] + bytes(b ^ 0xFF for b in good[100:400]) + good[400:])
        elif damage == "truncated":
            cached.write_bytes(good[: len(good) // 2])
        else:  # a cache written before checksums existed, or its sidecar lost
            cached.with_suffix(".json").unlink()
        engine = create_engine(backend, lone)
        assert engine.name == "onnxruntime", engine.selection
        np.testing.assert_allclose(engine.step(x).params, expected, atol=1e-6)
        assert cached.read_bytes() == good and verify_checksum(cached)
