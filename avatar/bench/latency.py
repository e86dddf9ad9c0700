"""`avatar bench latency`: mic→pixel through the PulseAudio virtual microphone (`.ci/av-env.sh up`), timed from
each test burst's first audible sample at its ADC time to the first frame whose mouth opening crosses half its range."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from avatar.bench.common import add_app_arguments, bench_engine, bench_renderer, one_torch_thread, summary_ms
from avatar.bench.signals import BURST_ATTACK, ONSET_LEVEL, ONSET_WALKBACK, tone_bursts
from avatar.live.pipeline import LivePipeline
from avatar.live.sources import MicSource
from avatar.live.track import neutral_params
from avatar.mic import rescan_devices
from avatar.visemes import PARAM_NAMES


def bench_latency(args) -> int:
    """Mic→pixel latency through the virtual microphone: tone onset (its ADC time) → first frame whose mouth
    opening (pixels against the closed-mouth frame) crosses half its full range. Needs `.ci/av-env.sh up`."""
    one_torch_thread()
    rescan_devices()
    engine, renderer = bench_engine(args, live=True), bench_renderer(args)
    wide_open = neutral_params()
    wide_open[PARAM_NAMES.index("jaw_open")] = 1.0
    closed = renderer.render(neutral_params(), 0.0)[::4, ::4].astype(np.int16)
    wide = renderer.render(wide_open, 0.0)[::4, ::4].astype(np.int16)
    threshold = 0.5 * np.abs(wide - closed).mean()
    frames = []  # (t, capture time of t, stream time when ready, opening)
    # (pipeline sample index, the 16 kHz block, when its first sample was captured, when the app read it: stamped
    # as it is read, since extrapolating the device clock later would drift)
    captured = []

    def measure_frame(frame):
        if frame.latency is not None:
            opening = np.abs(frame.image[::4, ::4].astype(np.int16) - closed).mean()
            frames.append((frame.t, frame.captured, frame.captured + frame.latency, opening))

    def keep_audio(block):
        if block.captured is not None:
            captured.append((block.start, block.samples.copy(), block.captured, block.read_at))

    pipeline = LivePipeline(engine, renderer, fps=args.fps, smooth=not args.no_smoothing, on_frame=measure_frame)
    period = 0.7  # a whole number of frames at 30 and 60 fps: alone, every burst would meet the same frame phase
    # so each onset is shifted by a golden-ratio fraction of a frame: the bursts sample every phase of the render
    # clock evenly, and the spread (p95) includes the wait for the next frame
    onsets = [0.5 + period * i + ((i * 0.6180339887) % 1.0) / args.fps for i in range(args.bursts)]
    audio = tone_bursts(onsets, onsets[-1] + 0.6, length=0.3, vowel=True, attack=args.attack_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "bursts.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((audio * 32767).astype("<i2").tobytes())
        pipeline.start()
        try:
            pipeline.set_source(MicSource(args.device))
            pipeline.on_audio = keep_audio  # from the microphone's first block on (not the silence before it)
            time.sleep(0.5)
            subprocess.run(["paplay", "-d", args.sink, str(wav)], check=True)
            time.sleep(0.5)
        finally:
            pipeline.stop()
    sig = np.concatenate([c[1] for c in captured])
    index = np.concatenate([c[0] + np.arange(len(c[1])) for c in captured])
    adc = np.concatenate([c[2] + np.arange(len(c[1])) / 16000 for c in captured])
    arrival = np.concatenate([np.full(len(c[1]), c[3]) for c in captured])
    k = 80  # 5 ms rms
    rms = np.sqrt(np.convolve(sig.astype(np.float64) ** 2, np.ones(k) / k, "same"))
    above = np.flatnonzero(rms > 0.05)  # bursts peak at 0.5; the vowel's RMS is ~0.15, silence ~0
    detected = above[np.r_[True, np.diff(above) > 1600]] if len(above) else above
    # the onset is the burst's first audible sample (not where its loudness is detected): from before the
    # detection (over the attack) to the end of the RMS window that detected it (a step is seen half a window early),
    # where the signal leaves the digital silence of the virtual microphone
    starts = []
    for i in detected:
        first = max(i - ONSET_WALKBACK, 0)
        starts.append(first + int(np.argmax(np.abs(sig[first:i + k]) > ONSET_LEVEL)))
    latencies, in_app = [], []
    for i in starts:
        t_onset = index[i] / 16000
        after = [f for f in frames if f[0] >= t_onset - 0.05 and f[3] > threshold]
        if after:
            latencies.append(1000 * (after[0][2] - adc[i]))
            in_app.append(1000 * (after[0][2] - arrival[i]))
    if len(starts) == 0:
        print("bench latency: no tone onset was heard through the microphone (is `.ci/av-env.sh up` running?)",
              file=sys.stderr)
        return 1
    if not latencies:
        print("bench latency: the tones were heard but the mouth never opened past half way; the model may not "
              "answer the test vowel (use --model probe to measure the pipeline itself)", file=sys.stderr)
        return 1
    if args.verbose_onsets:
        print("per onset (ms):", " ".join(f"{v:.1f}" for v in latencies))
        print("of which in the app (read → frame):", " ".join(f"{v:.1f}" for v in in_app))
    smoothing = "raw parameters" if args.no_smoothing else "smoothed"
    print(f"mic→pixel latency at {args.fps} fps, {engine.label}, {args.size}², {smoothing} "
          f"({len(latencies)} tone onsets, {args.attack_ms:g} ms attack): {summary_ms(latencies)}\n"
          f"  of which in the app (audio read from the ring → frame ready): {summary_ms(in_app)}")
    return 0


def add_cli(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("latency", help="mic→pixel latency through the virtual microphone")
    add_app_arguments(p, "the shipped live model", fps=60)
    p.add_argument("--bursts", type=int, default=30)
    p.add_argument("--device", default=None, help="input device (default: the system default)")
    p.add_argument("--sink", default="vmic_out", help="PulseAudio sink that feeds the microphone")
    p.add_argument("--no-smoothing", action="store_true", help="show the network's raw output (no spring)")
    p.add_argument("--verbose-onsets", action="store_true", help="print every onset's latency")
    p.add_argument("--attack-ms", type=float, default=1000 * BURST_ATTACK,
                   help="raised-cosine onset of each test burst (default %(default)g; 0: an abrupt step)")
    p.set_defaults(func=bench_latency)
