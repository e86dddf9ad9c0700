"""`avatar --self-test`: the whole app path, headless, in a few seconds: default photo -> rig -> engine on a
test tone -> rendered frames -> Qt image -> a short MP4 -> read back. Exit 0 only if every step worked.
Used by the source install's tests and by the packaged bundle (packaging/build.sh)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TONE_SECONDS = 2.0
TEST_FPS = 30
TEST_SIZE = 256


def process_age() -> float:
    """Seconds since this process started (Linux /proc; elsewhere since this module was imported)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def test_signal(seconds: float = TONE_SECONDS, sr: int = 16000) -> np.ndarray:
    """Silence, then a vowel-like buzz (150 Hz harmonics), then silence."""
    t = np.arange(int(seconds * sr)) / sr
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    gate = ((t > seconds * 0.25) & (t < seconds * 0.75)).astype(np.float32)
    return (0.2 * buzz * gate).astype(np.float32)


def run(backend: str = "auto", out_dir: str | None = None) -> int:
    def step(name: str, detail: str = ""):
        print(f"  [{process_age():6.2f} s] {name}{': ' + detail if detail else ''}", flush=True)

    print("talking-avatar self-test")
    try:  # each stage's imports sit in its step: a broken install fails as that step, and its load time is timed
        from avatar.engine import create_engine, live_model_path
        from avatar.face import LivelinessConfig, build_rig, create_renderer
        from avatar.paths import assets_dir

        photo = assets_dir() / "default_face.jpg"
        rig = build_rig(photo, canvas=TEST_SIZE)
        step("photo + landmarks + rig", photo.name)
        from avatar.face.shapes import FITTED_FILES

        missing = [path.name for path in FITTED_FILES.values() if not path.is_file()]
        if missing:  # the renderer would fall back to the hand-set mapping without a word
            raise RuntimeError(f"the fitted mouth tables are missing: {', '.join(missing)}")
        step("mouth tables", ", ".join(path.name for path in FITTED_FILES.values()))
        renderer = create_renderer(rig, device="cpu", liveliness=LivelinessConfig(enabled=True, seed=0))
        engine = create_engine(backend, live_model_path())
        step("engine", engine.label)

        from avatar.audio import log_mel

        audio = test_signal()
        out = engine.step(log_mel(audio))
        if not (np.isfinite(out.params).all() and np.isfinite(out.visemes).all()):
            raise RuntimeError("the engine produced non-finite output")
        frame = renderer.render(out.params[0], 0.0)
        step("first frame", f"{frame.shape[1]}x{frame.shape[0]}")
        first_frame_age = process_age()

        from PySide6.QtGui import QGuiApplication, QImage

        app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
        image = QImage(frame.data, frame.shape[1], frame.shape[0], frame.strides[0], QImage.Format.Format_RGB888)
        if image.isNull() or image.width() != frame.shape[1]:
            raise RuntimeError("Qt could not wrap a rendered frame")
        step("Qt image", app.platformName())

        from avatar.live.offline import render_offline

        folder = Path(out_dir or tempfile.mkdtemp(prefix="avatar-selftest-"))
        video = render_offline(audio, engine, renderer, folder / "selftest.mp4", fps=TEST_FPS)
        step("MP4 written", str(video))

        import av

        with av.open(str(video)) as container:
            codecs = sorted(s.codec_context.name for s in container.streams)
            frames = sum(1 for _ in container.decode(video=0))
        if codecs != ["aac", "h264"]:
            raise RuntimeError(f"the MP4 holds {codecs}, expected aac + h264")
        expected = int(round(TONE_SECONDS * TEST_FPS))
        if abs(frames - expected) > 1:
            raise RuntimeError(f"the MP4 holds {frames} frames, expected {expected}")
        step("MP4 read back", f"{frames} frames, {' + '.join(codecs)}")
    except Exception as e:  # a self-test reports every failure as a failed step, never a traceback
        print(f"SELF-TEST FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"self-test passed; cold start to first frame {first_frame_age:.2f} s")
    return 0
