"""Shared fixtures: a real virtual microphone (PulseAudio) and a real X display (Xvfb).

Both are started by `.ci/av-env.sh` (the same script CI uses). When the environment already provides them
(`PULSE_SERVER` / `DISPLAY` reachable) they are reused; when the binaries are missing the tests that need them
skip with the reason. Qt tests get a QApplication on the X display when there is one, offscreen otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

AV_ENV = Path(__file__).resolve().parent.parent / ".ci" / "av-env.sh"
PULSE_BINARIES = ("pulseaudio", "pactl", "paplay", "pacat")
X_BINARIES = ("Xvfb", "xdpyinfo")


def _missing(binaries) -> list[str]:
    return [b for b in binaries if shutil.which(b) is None]


def _apply_exports(text: str) -> None:
    """Apply the `export A=1 B=2` lines printed by `av-env.sh up` to this process."""
    for line in text.splitlines():
        if line.startswith("export "):
            for pair in line[len("export "):].split():
                key, _, value = pair.partition("=")
                os.environ[key] = value


def _pulse_reachable() -> bool:
    if not os.environ.get("PULSE_SERVER") or shutil.which("pactl") is None:
        return False
    out = subprocess.run(["pactl", "list", "short", "sources"], capture_output=True, text=True, timeout=5)
    return out.returncode == 0 and "\tvmic\t" in out.stdout


def _display_reachable() -> bool:
    if not os.environ.get("DISPLAY") or shutil.which("xdpyinfo") is None:
        return False
    return subprocess.run(["xdpyinfo"], capture_output=True, timeout=5).returncode == 0


class _AvEnv:
    """One `av-env.sh up <part>` in its own folder, torn down with `down`."""

    def __init__(self, part: str, extra_env: dict | None = None):
        self.dir = tempfile.mkdtemp(prefix=f"avatar-{part}-")
        self.env = {**os.environ, "AV_DIR": self.dir, **(extra_env or {})}
        out = subprocess.run(["bash", str(AV_ENV), "up", part], env=self.env, capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0:
            self.down()
            raise RuntimeError(f"av-env.sh up {part} failed: {out.stderr.strip()}")
        _apply_exports(out.stdout)

    def down(self):
        subprocess.run(["bash", str(AV_ENV), "down"], env=self.env, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def virtual_mic():
    """A PulseAudio daemon whose default source `vmic` plays back whatever `feed(wav)` sends to sink `vmic_out`.

    Yields a function `feed(path)` that plays a sound file into the virtual microphone (blocking).
    """
    started = None
    if not _pulse_reachable():
        missing = _missing(PULSE_BINARIES)
        if missing:
            pytest.skip(f"no virtual microphone: {', '.join(missing)} not installed (see .ci/av-env.sh install)")
        started = _AvEnv("pulse")
    import sounddevice as sd

    # PortAudio enumerates devices when it is initialised: re-scan so the daemon is seen.
    sd._terminate()
    sd._initialize()

    def feed(path, wait=True):
        proc = subprocess.Popen(["paplay", "-d", "vmic_out", str(path)])
        if wait:
            proc.wait(timeout=60)
        return proc

    yield feed
    if started:
        started.down()
        sd._terminate()
        sd._initialize()


@pytest.fixture(scope="session")
def x_display():
    """A reachable X display (Xvfb started when none is set); skips when Xvfb is not installed."""
    started = None
    if not _display_reachable():
        missing = _missing(X_BINARIES)
        if missing:
            pytest.skip(f"no X display: {', '.join(missing)} not installed (see .ci/av-env.sh install)")
        free = [n for n in range(90, 100) if not os.path.exists(f"/tmp/.X{n}-lock")]
        if not free:
            pytest.skip("no free X display number between :90 and :99 for Xvfb")
        display = os.environ.get("AVATAR_TEST_DISPLAY", f":{free[os.getpid() % len(free)]}")
        started = _AvEnv("x", {"XDISP": display})
        # stopped at exit, after Qt has let go of the display (a fixture teardown would come first)
        import atexit

        atexit.register(started.down)
    yield os.environ["DISPLAY"]


@pytest.fixture(scope="session")
def qapp_cls(request):
    """pytest-qt's QApplication on the real X display when one can be had, offscreen otherwise."""
    from PySide6.QtWidgets import QApplication

    if "QT_QPA_PLATFORM" not in os.environ:
        try:
            request.getfixturevalue("x_display")
            os.environ["QT_QPA_PLATFORM"] = "xcb"
        except pytest.skip.Exception:
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
    return QApplication


@pytest.fixture
def x_platform(qapp):
    """Skip unless the QApplication draws onto a real X server (screenshots need one)."""
    if qapp.platformName() != "xcb":
        pytest.skip(f"needs an X display; Qt runs on '{qapp.platformName()}' (Xvfb not installed?)")
    return qapp


@pytest.fixture
def qsettings(tmp_path, qapp):
    """Isolated QSettings storage for one test."""
    from PySide6.QtCore import QSettings

    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path / "settings"))
    yield


def write_wav(path, audio, samplerate: int) -> None:
    """16-bit mono WAV with the standard library (what paplay and the app's decoders read)."""
    import wave

    import numpy as np

    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(samplerate)
        w.writeframes(pcm.tobytes())


def decode_mp4(path):
    """Decode an MP4 with PyAV: codecs, pixel format, video frames with their times, audio samples (mono)."""
    import av
    import numpy as np

    frames, times, audio = [], [], []
    with av.open(str(path)) as c:
        info = {"video_codec": c.streams.video[0].codec_context.name if c.streams.video else None,
                "audio_codec": c.streams.audio[0].codec_context.name if c.streams.audio else None,
                "pix_fmt": c.streams.video[0].codec_context.pix_fmt if c.streams.video else None}
        audio_start = None
        for fr in c.decode(*c.streams.video, *c.streams.audio):
            if isinstance(fr, av.VideoFrame):
                frames.append(fr.to_ndarray(format="rgb24"))
                times.append(float(fr.time))
            else:
                if audio_start is None:
                    audio_start = float(fr.time)
                info["sample_rate"] = fr.sample_rate
                audio.append(fr.to_ndarray().reshape(-1) if fr.format.is_planar else fr.to_ndarray()[0])
    info.update(frames=frames, times=np.array(times), audio=np.concatenate(audio) if audio else np.zeros(0),
                audio_start=audio_start)
    return info


# ----------------------------------------------------------------------------------------------------
# a real engine whose behaviour is known exactly: the mouth opens while the input is loud


from avatar.bench.signals import loudness_probe_model as loudness_model, tone_bursts  # noqa: E402


@pytest.fixture
def loudness_engine(tmp_path_factory, monkeypatch):
    """The loudness network on ONNX Runtime (the app's CPU backend); its ONNX export goes to a temporary cache."""
    from avatar.engine import create_engine

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path_factory.mktemp("engine-cache")))
    return create_engine("onnxruntime", model=loudness_model())


class SimpleFrames:
    """Test frame source until the face renderer is joined: a mouth-sized dark box that opens with jaw_open."""

    def __init__(self, size=128):
        self.size = size

    def render(self, params, t):
        import numpy as np

        from avatar.visemes import PARAM_NAMES

        img = np.full((self.size, self.size, 3), 200, np.uint8)
        h = int(params[PARAM_NAMES.index("jaw_open")] * self.size / 3)
        c = self.size // 2
        img[c + self.size // 6 - h // 2:c + self.size // 6 + h // 2 + 1, c - 20:c + 20] = 20
        return img


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a disk that fills up within seconds of video (needs root to mount)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if not (shutil.which("mount") and shutil.which("umount")):
        pytest.skip("mount/umount not available to make a small disk")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)
