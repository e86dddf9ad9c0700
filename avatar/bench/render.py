"""`avatar bench render`: frame render times (median, p99) at 512² and 1024², CPU and GPU, and rig build time."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cv2
import numpy as np

from avatar.face import landmarks as lm  # the module, not its function: tests replace lm.detect_faces
from avatar.face.liveliness import LivelinessConfig
from avatar.face.photo import load_photo
from avatar.face.render import create_renderer
from avatar.face.rig import build_rig
from avatar.paths import assets_dir
from avatar.visemes import PARAM_NAMES

BENCH_FRAMES = 200
WARMUP_FRAMES = 10
CANVASES = (512, 1024)


def speech_params(i: int, fps: float = 60.0) -> np.ndarray:
    """Hand-made parameter curves that look like talking: a syllable every ~180 ms, rounding and spreading; the
    mouth parameter array (PARAM_NAMES order, float32) as the engine hands it over."""
    t = i / fps
    jaw = max(0.0, math.sin(2 * math.pi * 2.7 * t)) ** 1.5 * (0.55 + 0.4 * math.sin(0.9 * t))
    named = {"jaw_open": jaw, "lip_spread": 0.5 + 0.5 * math.sin(1.3 * t), "lip_round": max(0.0, math.sin(0.7 * t)),
             "lip_press": max(0.0, -math.sin(2 * math.pi * 2.7 * t)) ** 4}
    return np.array([named[k] for k in PARAM_NAMES], np.float32)


def time_renderer(renderer, frames: int = BENCH_FRAMES, sync=None) -> tuple[np.ndarray, np.ndarray]:
    """(wall seconds, process CPU seconds) per render over `frames` frames of speech-like parameters.

    CPU seconds count the work of all threads; on a shared machine they vary less than wall time."""
    for i in range(WARMUP_FRAMES):
        renderer.render(speech_params(i), i / 60)
    wall, cpu = np.empty(frames), np.empty(frames)
    for i in range(frames):
        params = speech_params(i)
        c0, t0 = time.process_time(), time.perf_counter()
        renderer.render(params, i / 60)
        if sync is not None:
            sync()
        wall[i], cpu[i] = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu


def benchmark(photo: str | Path | None = None, canvases=CANVASES, frames: int = BENCH_FRAMES,
              gpu: bool = True, threads: int | None = None,
              landmarks: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Times in milliseconds: {'<device> <size>': {'median': ms, 'p99': ms, 'cpu': ms}, 'rig build': {...}}.

    With stored `landmarks` (photo pixels) the rigs are built from them and the landmark rows are left out:
    GPU machines need not have mediapipe."""
    if threads:
        cv2.setNumThreads(threads)
    photo = photo or assets_dir() / "default_face.jpg"
    results: dict[str, dict[str, float]] = {}
    image = load_photo(photo)
    if landmarks is None:
        t0 = time.perf_counter()
        lm.detect_faces(image)
        results["first landmarks (incl. mediapipe start)"] = {"median": (time.perf_counter() - t0) * 1e3,
                                                               "p99": math.nan}
    builds = []
    for _ in range(5):
        t0 = time.perf_counter()
        build_rig(image, canvas=512, landmarks=landmarks)
        builds.append(time.perf_counter() - t0)
    results["rig build 512 (stored landmarks)" if landmarks is not None else "landmarks + rig build 512"] = \
        _stats(np.array(builds))
    live = LivelinessConfig(enabled=True, seed=0)
    rigs = {size: build_rig(image, canvas=size, landmarks=landmarks) for size in canvases}
    for size, rig in rigs.items():
        results[f"cpu {size}"] = _stats(*time_renderer(create_renderer(rig, "cpu", live), frames))
    if gpu:
        try:
            import torch  # here: optional, and seconds to import; only GPU timings need it
        except ImportError:
            torch = None
        if torch is not None and torch.cuda.is_available():
            for size, rig in rigs.items():
                r = create_renderer(rig, "cuda", live)
                results[f"cuda {size} (incl. copy to host)"] = _stats(*time_renderer(r, frames, torch.cuda.synchronize))
    return results


def _stats(seconds: np.ndarray, cpu_seconds: np.ndarray | None = None) -> dict[str, float]:
    out = {"median": float(np.median(seconds) * 1e3), "p99": float(np.percentile(seconds, 99) * 1e3)}
    if cpu_seconds is not None:
        out["cpu"] = float(np.median(cpu_seconds) * 1e3)
    return out


def format_results(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'stage':<44} {'median ms':>10} {'p99 ms':>10} {'cpu ms':>10}"]
    for name, r in results.items():
        p99 = "" if math.isnan(r["p99"]) else f"{r['p99']:.2f}"
        cpu = f"{r['cpu']:.2f}" if "cpu" in r else ""
        lines.append(f"{name:<44} {r['median']:10.2f} {p99:>10} {cpu:>10}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines.append(f"(wall times; 'cpu ms' = median process CPU time per frame; load average {load:.1f} "
                 f"on {os.cpu_count()} CPUs; {cv2.getNumThreads()} OpenCV threads)")
    return "\n".join(lines)


def run_bench_render(args=None) -> int:
    """Entry for `avatar bench render [--photo P | --face NAME.avatar] [--frames N]`."""
    photo = getattr(args, "photo", None)
    frames = getattr(args, "frames", None) or BENCH_FRAMES
    face = getattr(args, "face", None)
    if face is not None:  # a video avatar (avatar.bench.render_avatar)
        from avatar.bench.render_avatar import benchmark_avatar, format_avatar_results
        from avatar.face.video_avatar import VideoAvatarError

        try:
            print(format_avatar_results(face, benchmark_avatar(face, frames=frames)))
        except VideoAvatarError as e:
            print(f"error: {e}")
            return 2
        return 0
    landmarks = getattr(args, "landmarks", None)
    if landmarks is not None:
        try:
            landmarks = np.load(landmarks, allow_pickle=False)
        except (OSError, ValueError) as e:
            print(f"error: cannot read landmarks from {args.landmarks}: {e}")
            return 2
    print(format_results(benchmark(photo, frames=frames, threads=getattr(args, "threads", None),
                                   landmarks=landmarks)))
    return 0


def add_cli(bench_subparsers) -> None:
    """`avatar bench render`."""
    parser = bench_subparsers.add_parser("render", help="frame render time (CPU, GPU when present) and rig build time")
    parser.add_argument("--photo", help="face photo (default: the shipped default face)")
    parser.add_argument("--face", metavar="NAME.avatar", help="time a video avatar (avatar make-avatar) instead")
    parser.add_argument("--frames", type=int, default=BENCH_FRAMES, help="frames timed per size")
    parser.add_argument("--landmarks", metavar="NPY",
                        help="the photo's landmarks as a (478, 2|3) .npy in photo pixels: skips landmark detection "
                             "(for machines without mediapipe)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenCV threads (default: OpenCV's choice, one per core)")
    parser.set_defaults(func=run_bench_render)
