"""`avatar bench render-offline`: offline render speed, × real time and CPU-seconds per second of video."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from avatar.bench.common import add_app_arguments, bench_engine, bench_renderer, one_torch_thread
from avatar.bench.signals import tone_bursts
from avatar.live.offline import render_offline


def bench_render_offline(args) -> int:
    """Offline render speed: × real time for `--seconds` of audio at `--size`², `--fps`, median of `--runs`."""
    one_torch_thread()
    engine, renderer = bench_engine(args), bench_renderer(args)
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, args.seconds - 0.3, int(args.seconds * 2)))
    audio = tone_bursts(onsets, args.seconds, length=0.2, vowel=True) + 0.01 * rng.standard_normal(int(args.seconds * 16000))
    speeds, cpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            render_offline(audio.astype(np.float32), engine, renderer, Path(tmp) / f"{run}.mp4", fps=args.fps)
            speeds.append(args.seconds / (time.perf_counter() - t0))
            cpu.append((time.process_time() - c0) / args.seconds)
    # CPU time says what the work costs whatever else the machine is doing; wall time is what a user waits
    print(f"offline render {args.size}² {args.fps} fps, {engine.label}: median {statistics.median(speeds):.1f}x "
          f"real time, min {min(speeds):.1f}x, max {max(speeds):.1f}x ({args.runs} runs of {args.seconds:.0f} s); "
          f"CPU {statistics.median(cpu):.3f} core-seconds per second of video")
    return 0


def add_cli(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("render-offline", help="offline render speed (x real time)")
    add_app_arguments(p, "the shipped model", fps=30)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.set_defaults(func=bench_render_offline)
