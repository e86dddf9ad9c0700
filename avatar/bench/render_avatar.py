"""`avatar bench render --face NAME.avatar`: the video avatar's load time and frame render time (median, p95, p99,
process CPU per frame) at 512² and 1024², with the same speech-like parameters as the photo renderer's bench."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np

from avatar.bench.render import BENCH_FRAMES, CANVASES, time_renderer
from avatar.face.video_avatar import fileformat
from avatar.face.video_avatar.renderer import VideoAvatarRenderer, open_video_avatar

LOAD_RUNS = 5


def benchmark_avatar(path, canvases=CANVASES, frames: int = BENCH_FRAMES) -> dict[str, dict[str, float]]:
    results = {}
    loads, ready = [], []
    for _ in range(LOAD_RUNS):
        t0 = time.perf_counter()
        renderer = open_video_avatar(path)
        loads.append(time.perf_counter() - t0)
        renderer.wait_ready()  # the base frames decode in the background after the load returns
        ready.append(time.perf_counter() - t0)
    results["load (first frame can render) 512"] = _stats(np.array(loads))
    results["all base frames decoded 512"] = _stats(np.array(ready))
    data = fileformat.load(path)
    for size in canvases:
        renderer = VideoAvatarRenderer(data, size=size)
        renderer.wait_ready()
        results[f"cpu {size}"] = _stats(*time_renderer(renderer, frames))
    return results


def _stats(seconds: np.ndarray, cpu: np.ndarray | None = None) -> dict[str, float]:
    out = {"median": float(np.median(seconds) * 1e3), "p95": float(np.percentile(seconds, 95) * 1e3),
           "p99": float(np.percentile(seconds, 99) * 1e3)}
    if cpu is not None:
        out["cpu"] = float(np.median(cpu) * 1e3)
    return out


def format_avatar_results(path, results: dict[str, dict[str, float]]) -> str:
    lines = [f"video avatar {path}", f"{'stage':<36} {'median ms':>10} {'p95 ms':>10} {'p99 ms':>10} {'cpu ms':>10}"]
    for name, r in results.items():
        cpu = f"{r['cpu']:.2f}" if "cpu" in r else ""
        lines.append(f"{name:<36} {r['median']:10.2f} {r['p95']:10.2f} {r['p99']:10.2f} {cpu:>10}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"(wall times; 'cpu ms' = median process CPU time per frame; load average {load:.1f} on "
                 f"{os.cpu_count()} CPUs; {cv2.getNumThreads()} OpenCV threads)")
    return "\n".join(lines)
