"""`avatar bench engine`: per-chunk step latency of every available backend, side by side in one run."""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

from avatar.bench.common import one_torch_thread
from avatar.engine import create_engine, default_model_path, normalize_backend, probe_backends

CHUNK_FRAMES = 4  # 40 ms at 100 frames/s: one live step
WARMUP_STEPS = 50


@dataclass
class Timing:
    name: str
    median_us: float
    p99_us: float
    n: int
    note: str = ""


def time_calls(fn, iters: int, warmup: int = WARMUP_STEPS) -> np.ndarray:
    """Seconds per call of `fn()` over `iters` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return times


def summarize(name: str, seconds: np.ndarray, note: str = "") -> Timing:
    return Timing(name, float(np.median(seconds) * 1e6), float(np.percentile(seconds, 99) * 1e6), len(seconds), note)


def format_table(rows: list[Timing], title: str) -> str:
    width = max([len(r.name) for r in rows] + [7])
    lines = [title, f"{'backend':<{width}}  {'median µs':>10}  {'p99 µs':>10}  {'steps':>6}  note"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.median_us:>10.1f}  {r.p99_us:>10.1f}  {r.n:>6}  {r.note}")
    return "\n".join(lines)


def bench_engines(model=None, chunk: int = CHUNK_FRAMES, iters: int = 2000, backends=None) -> list[Timing]:
    """Time `step` on a `chunk`-frame input for each available backend, the same model and input for all."""
    rows = []
    for status in probe_backends():
        if backends and status.backend not in backends:
            continue
        if not status.available:
            rows.append(Timing(status.backend, float("nan"), float("nan"), 0, f"skipped: {status.detail}"))
            continue
        try:
            engine = create_engine(status.backend, model)
        except Exception as e:  # report and go on: one broken backend must not hide the others' numbers
            rows.append(Timing(status.backend, float("nan"), float("nan"), 0, f"failed: {e}"))
            continue
        x = np.random.default_rng(0).standard_normal((chunk, engine.dims.n_mels)).astype(np.float32)
        seconds = time_calls(lambda: engine.step(x), iters)
        rows.append(summarize(status.backend, seconds, engine.label))
        engine.close()
    return rows


def run_engine_bench(args) -> int:
    backends = None
    if args.backends:
        try:  # an unknown name would otherwise match nothing and print an empty table
            backends = [normalize_backend(b) for b in args.backends]
        except ValueError as e:
            print(f"avatar bench engine: {e}", file=sys.stderr)
            return 2
    model = args.model or (default_model_path() if default_model_path().exists() else None)
    if model is None:  # no shipped weights yet: time a freshly initialised network of the default size
        from avatar.model import LipSyncNet, ModelDims  # torch (the [torch] extra)

        model = LipSyncNet(ModelDims(cell=args.cell))
    one_torch_thread()  # and one intra-op thread for every CPU backend (ONNX Runtime's is set by its engine)
    rows = bench_engines(model, chunk=args.chunk, iters=args.iters, backends=backends)
    cpu = platform.processor() or platform.machine()
    title = (f"engine step, {args.chunk} frames ({args.chunk * 10} ms) per step, batch 1 — "
             f"{os.cpu_count()} CPU cores ({cpu}), 1 thread per CPU backend, python {platform.python_version()}")
    print(format_table(rows, title))
    return 0


def add_cli(bench_subparsers) -> None:
    """`avatar bench engine`."""
    be = bench_subparsers.add_parser("engine", help="per-step latency of every available backend, side by side")
    be.add_argument("--model", help="a .safetensors or .onnx model (default: the shipped one)")
    be.add_argument("--cell", default="gru", choices=["gru", "lstm", "rnn"],
                    help="cell of the untrained stand-in network when no model ships yet")
    be.add_argument("--chunk", type=int, default=CHUNK_FRAMES, help="frames per step (default 4 = 40 ms)")
    be.add_argument("--iters", type=int, default=2000)
    be.add_argument("--backends", nargs="*", help="only these backends")
    be.set_defaults(func=run_engine_bench)
