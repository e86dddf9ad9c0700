"""`avatar bench vcam`: what the virtual camera costs the render thread (VirtualCamera.offer: the frame's copy into
the queue) and what reaches the device: frames per second sent, dropped, the interval between sends. The device
is a pyvirtualcam backend registered here that only counts (no v4l2loopback needed); `--device-backend
v4l2loopback` (or obs) sends to a real one instead. Needs the [vcam] extra."""
from __future__ import annotations

import time

import numpy as np

from avatar.bench.common import add_app_arguments, bench_engine, bench_renderer, one_torch_thread, summary_ms
from avatar.live.pipeline import LivePipeline
from avatar.live.virtual_camera import VirtualCamera

COUNTING_BACKEND = "avatar-bench-counter"


class CountingBackend:
    """A pyvirtualcam backend that keeps when each frame arrived (the interface of pyvirtualcam.Backend)."""

    times: list[float] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        CountingBackend.times = []

    def send(self, frame):
        CountingBackend.times.append(time.monotonic())

    def close(self):
        pass

    def device(self):
        return "counter"

    def native_fourcc(self):
        return None


def bench_vcam(args) -> int:
    import pyvirtualcam  # the [vcam] extra

    one_torch_thread()
    pyvirtualcam.register_backend(COUNTING_BACKEND, CountingBackend)
    engine, renderer = bench_engine(args, live=True), bench_renderer(args)
    offer_ms: list[float] = []
    camera = None

    def on_frame(frame):
        if camera is not None:
            t = time.perf_counter()
            camera.offer(frame.image)
            offer_ms.append(1000 * (time.perf_counter() - t))

    pipeline = LivePipeline(engine, renderer, fps=args.fps, on_frame=on_frame).start()
    try:
        while pipeline.latest is None:
            time.sleep(0.01)
        height, width = pipeline.latest.image.shape[:2]
        camera = VirtualCamera(width, height, args.fps, backend=args.device_backend or COUNTING_BACKEND)
        time.sleep(args.seconds)
        offered, dropped = camera.offered, camera.dropped
        camera.close()
        sent = camera.sent
    finally:
        pipeline.stop()
    print(f"{width} × {height} at {args.fps} fps to {camera.device} ({camera.backend}), {args.seconds:g} s")
    print(f"render thread, offer (copy + queue): {summary_ms(offer_ms)}")
    print(f"frames: {offered} offered, {sent} sent, {dropped} dropped; {sent / args.seconds:.1f} sent per second")
    if args.device_backend is None and len(CountingBackend.times) > 1:
        print(f"interval between sends: {summary_ms(1000 * np.diff(CountingBackend.times))}")
    return 0


def add_cli(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("vcam", help="the virtual camera's cost on the render thread, frames sent")
    add_app_arguments(p, "the shipped live model", fps=30)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device-backend", default=None,
                   help="pyvirtualcam backend to send to (v4l2loopback, obs; default: one that only counts)")
    p.set_defaults(func=bench_vcam)
