"""`avatar bench serve`: the local server's two delays, on the live pipeline with the server's own hooks.

    browser source   frame ready in the app → painted in a real browser (headless chromium via selenium): the page
                     stamps its paint (requestAnimationFrame after drawing) on the same machine's clock
    input endpoint   a pushed chunk's arrival at the server → the first frame whose mouth opening crosses half its
                     range (as `bench latency` judges it), for vowel bursts streamed in 20 ms chunks like a TTS
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import sys
import time

import numpy as np

from avatar.bench.common import add_app_arguments, bench_engine, one_torch_thread, summary_ms
from avatar.bench.signals import BURST_ATTACK, tone_bursts
from avatar.face.assemble import open_renderer
from avatar.live.pipeline import LivePipeline
from avatar.live.track import neutral_params
from avatar.paths import default_photo
from avatar.serve import frames as wire
from avatar.serve.push import PushMixer
from avatar.serve.server import LocalServer
from avatar.visemes import PARAM_NAMES

CHUNK_SECONDS = 0.02  # how a streaming TTS hands out its sound
BURST_SECONDS = 0.3
GREEN = (0, 255, 0)


def bench_serve(args) -> int:
    one_torch_thread()
    engine = bench_engine(args, live=True)
    photo = args.face or default_photo()
    renderer = open_renderer(photo, size=args.size, background=GREEN, liveliness={"enabled": False})
    wide_open = neutral_params()
    wide_open[PARAM_NAMES.index("jaw_open")] = 1.0
    closed = renderer.render(neutral_params(), 0.0)[::4, ::4].astype(np.int16)
    threshold = 0.5 * np.abs(renderer.render(wide_open, 0.0)[::4, ::4].astype(np.int16) - closed).mean()
    frames = []  # (ready, opening)
    encode_ms = []
    mixer = PushMixer()
    server = LocalServer(mixer, lambda: renderer, port=0)
    server.browser_on = server.input_on = True

    def on_frame(frame):
        frames.append((frame.ready, np.abs(frame.image[::4, ::4].astype(np.int16) - closed).mean()))
        server.offer(frame)
        if len(frames) % 10 == 0:
            start = time.perf_counter()
            wire.encode_jpeg(frame.image)
            encode_ms.append(1000 * (time.perf_counter() - start))

    pipeline = LivePipeline(engine, renderer, fps=args.fps, on_frame=on_frame)
    pipeline.mix_in = mixer.mix
    server.start()
    pipeline.start()
    driver = None
    try:
        driver = _open_browser(server.browser_url + f"&codec={args.codec}") if not args.no_browser else None
        time.sleep(1.0)
        cpu_start, wall_start = _thread_cpu("local-server"), time.monotonic()
        arrivals = _push_bursts(server.input_url, mixer, args.bursts)
        time.sleep(0.5)
        cpu = (_thread_cpu("local-server") - cpu_start) / (time.monotonic() - wall_start)
    finally:
        if driver is not None:
            driver.quit()
        pipeline.stop()
        server.stop()
    delays = []
    for arrived in arrivals:
        after = [ready for ready, opening in frames if ready > arrived and opening > threshold]
        if after and after[0] - arrived < 1.0:
            delays.append(1000 * (after[0] - arrived))
    print(f"local server at {args.fps} fps, {engine.label}, {args.size}² (green-screen matte), "
          f"{len(frames)} frames; JPEG encode {summary_ms(encode_ms)}")
    if driver is not None:
        paints = list(server.paint_delays)
        print(f"browser source ({args.codec}): app frame → chromium paint: "
              f"{summary_ms(paints) if paints else 'no paints acknowledged'}")
    print(f"the server's thread used {100 * cpu:.1f} % of a core (encoding, sending, the pushed chunks)")
    if not delays:
        print("bench serve: the pushed bursts never opened the mouth past half way (use --model probe to measure "
              "the pipeline itself)", file=sys.stderr)
        return 1
    print(f"input endpoint: pushed chunk arrival → first open-mouth frame ({len(delays)} of {len(arrivals)} "
          f"bursts, {1000 * CHUNK_SECONDS:g} ms chunks): {summary_ms(delays)}")
    return 0


def _thread_cpu(name: str) -> float:
    """CPU seconds (user + system) of this process's threads with that OS name (Linux /proc; 0 elsewhere)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for task in Path("/proc/self/task").glob("*") if Path("/proc/self/task").is_dir() else []:
        try:
            if (task / "comm").read_text().strip() == name:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:  # the thread ended meanwhile
            continue
    return total


def _open_browser(url: str):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver  # only this benchmark and the tests drive a browser
    except ImportError:
        webdriver = None
    if chromium is None or chromedriver is None or webdriver is None:
        print("bench serve: no chromium / chromedriver / selenium: the browser delay is not measured",
              file=sys.stderr)
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=600,600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.get(url)
    return driver


def _push_bursts(url: str, mixer: PushMixer, bursts: int) -> list[float]:
    """Stream vowel bursts in real-time chunks, one every ~0.7 s (shifted by a golden-ratio share of 20 ms so the
    onsets meet every phase of the audio and render clocks); returns each burst's arrival (time.monotonic)."""
    import websockets.sync.client as ws_client  # the [test] extra: the benchmark is a client like any other

    burst = tone_bursts([0.0], BURST_SECONDS, length=BURST_SECONDS, vowel=True, attack=BURST_ATTACK)
    chunk = int(16000 * CHUNK_SECONDS)
    arrivals = []
    with ws_client.connect(url) as ws:
        ws.send(json.dumps({"type": "start", "rate": 16000, "channels": 1, "format": "s16le"}))
        ws.recv()
        for i in range(bursts):
            time.sleep(0.7 + ((i * 0.6180339887) % 1.0) * CHUNK_SECONDS)
            count = mixer.pushes
            start = time.monotonic()
            for k, j in enumerate(range(0, len(burst), chunk)):
                ws.send((burst[j:j + chunk] * 32767).astype("<i2").tobytes())
                ws.recv()
                if k == 0:
                    arrivals.append(mixer.arrivals[-1][0] if mixer.pushes > count else start)
                rest = start + (k + 1) * CHUNK_SECONDS - time.monotonic()
                if rest > 0:
                    time.sleep(rest)
    return arrivals


def add_cli(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("serve", help="browser source frame→paint and pushed sound→mouth delays")
    add_app_arguments(p, "the shipped live model", fps=30)
    p.add_argument("--bursts", type=int, default=30)
    p.add_argument("--codec", choices=wire.CODECS, default="jpeg", help="frames on the wire (default %(default)s)")
    p.add_argument("--no-browser", action="store_true", help="the input endpoint only")
    p.set_defaults(func=bench_serve)
