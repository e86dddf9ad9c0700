"""`avatar bench …`: every benchmark, one module each (median and p95/p99; speed lives here, not in tests).

    engine          per-step latency of each inference backend, side by side        engine.py
    render          frame render time, CPU (and GPU), and rig build                  render.py
    faces           face finding + rig build on a 6-face group photo                 faces.py
    latency         mic→pixel through the virtual microphone                        latency.py
    render-offline  `avatar render`'s speed, × real time                             offline.py
    live-cpu        the real app window's process CPU, idle and speaking             live_cpu.py
    soak            the live app with a recording for N minutes: memory, drops, drift soak.py
    speak           Speak (Piper text to speech) → first open-mouth frame               speak.py
    vcam            the virtual camera's cost on the render thread, frames sent         vcam.py
    serve           browser source frame→paint, pushed sound→open mouth (local server) serve.py

common.py holds what the app-level ones share (engine, renderer, summary); signals.py the test bursts and the
hand-set loudness network. They time the pipeline through its hooks (LivePipeline on_frame / on_audio).
"""
from __future__ import annotations

from avatar.bench import engine, faces, latency, live_cpu, offline, render, serve, soak, speak, vcam


def add_cli(subparsers) -> None:
    """Register `avatar bench WHAT` on the top-level subparsers."""
    bench = subparsers.add_parser("bench", help="benchmarks: medians and p95/p99")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    for module in (engine, render, faces, latency, live_cpu, offline, soak, speak, vcam, serve):
        module.add_cli(bench_sub)
