"""What the app-level benchmarks share: the engine and renderer they time, one torch thread, a summary line."""
from __future__ import annotations

import numpy as np

from avatar.engine import create_engine, live_model_path
from avatar.face.assemble import open_renderer
from avatar.paths import default_photo
from avatar.render_cli import FPS_RANGE, SIZE_RANGE, int_in
from avatar.bench.signals import loudness_probe_model


def add_app_arguments(parser, default_model: str, fps: int) -> None:
    """The options every app-level benchmark takes: what to run (photo, model, backend) and how big and fast."""
    parser.add_argument("--face", help="photo (default: the shipped face)")
    parser.add_argument("--model", default=None,
                        help=f"model file, or 'probe' for the hand-set loudness network (default: {default_model})")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--size", type=int_in(*SIZE_RANGE), default=512)
    parser.add_argument("--fps", type=int_in(*FPS_RANGE), default=fps)


def one_torch_thread() -> None:
    """One intra-op torch thread, where torch is installed: a fair comparison, and what live use wants."""
    try:
        import torch  # optional (the [torch] extra)
    except ImportError:
        return
    torch.set_num_threads(1)


def bench_engine(args, live: bool = False):
    """`--model probe`: the hand-set loudness network (the pipeline alone); else the model asked for, or the
    shipped one (the live view's with `live`)."""
    if args.model == "probe":
        return create_engine("torch" if args.backend == "auto" else args.backend, loudness_probe_model())
    return create_engine(args.backend, args.model or (live_model_path() if live else None))


def bench_renderer(args):
    photo = args.face
    if photo is None:
        photo = default_photo()
    # liveliness off: head sway and blinks would count as mouth motion in the latency measurement
    return open_renderer(photo, size=args.size, liveliness={"enabled": False})


def summary_ms(values_ms) -> str:
    v = np.asarray(values_ms, float)
    if v.size == 0:  # e.g. a still face: nothing drawn, nothing to time
        return "no values (n=0)"
    return (f"median {np.median(v):.1f} ms, p95 {np.percentile(v, 95):.1f} ms, p99 {np.percentile(v, 99):.1f} ms, "
            f"min {v.min():.1f}, max {v.max():.1f} (n={len(v)})")
