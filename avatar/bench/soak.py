"""`avatar bench soak --minutes N`: the live pipeline with a recording running, for a long time.

Microphone (the virtual one, fed with speech-like vowel bursts in a loop, or a real one with `--no-feed`) → engine →
renderer at the display rate → MP4 recorder. Reports the process's resident memory over time (growth = a leak),
frames the render thread and the recorder dropped, microphone gaps, and the saved recording's A/V drift at the end
(audio length against video length and against the wall time it ran).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import av
import numpy as np

from avatar.live.pipeline import LivePipeline
from avatar.live.sources import MicSource
from avatar.mic import MicError, rescan_devices
from avatar.record import RecordError
from avatar.bench.common import add_app_arguments, bench_engine, bench_renderer, one_torch_thread
from avatar.bench.signals import BURST_ATTACK, tone_bursts
from avatar.render_cli import FPS_RANGE, int_in

FEED_SECONDS = 30.0  # the looped feed: vowel bursts at random onsets, like speech with pauses
FEED_BURSTS_PER_SECOND = 1.5
START_SETTLE_SECONDS = 3.0  # the audio worker catches up with the microphone after the engine's first steps
RSS_WARMUP_SECONDS = 60.0  # memory growth is fitted after this: models, caches and encoder buffers settle first
BYTES_PER_MB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; getrusage's peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource  # Unix only, and only where /proc is missing

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def feed_signal(seconds: float = FEED_SECONDS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    onsets = np.sort(rng.uniform(0.2, seconds - 0.5, int(seconds * FEED_BURSTS_PER_SECOND)))
    onsets = onsets[np.r_[True, np.diff(onsets) > 0.35]]  # bursts do not overlap
    return tone_bursts(onsets, seconds, length=0.3, vowel=True, attack=BURST_ATTACK)


class LoopedFeed:
    """Plays a WAV into a PulseAudio sink again and again (`paplay`), until stopped. `env`: the environment paplay
    runs in (the sound server to reach: PULSE_SERVER); None, this process's."""

    def __init__(self, wav: Path, sink: str, env: dict | None = None):
        self.wav, self.sink, self.env = wav, sink, env
        self.plays = 0
        self._stop = threading.Event()
        self._proc = None
        self._thread = threading.Thread(target=self._run, name="soak-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(["paplay", "-d", self.sink, str(self.wav)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=self.env)
            self._proc.wait()
            self.plays += 1
            if self._proc.returncode != 0:
                self._stop.wait(1.0)  # the sound server is away: try again shortly

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        self._thread.join(timeout=5)


def recording_lengths(path: Path) -> tuple[float, float, int]:
    """(audio seconds, video seconds, frames) of an MP4, from its packets (no decoding: fast on long files)."""
    with av.open(str(path)) as c:
        audio_end = video_end = 0.0
        frames = 0
        for packet in c.demux():
            if packet.pts is None or packet.duration is None:
                continue
            end = float((packet.pts + packet.duration) * packet.time_base)
            if packet.stream.type == "audio":
                audio_end = max(audio_end, end)
            elif packet.stream.type == "video":
                video_end = max(video_end, end)
                frames += 1
    return audio_end, video_end, frames


def _unread_seconds(source: MicSource) -> float:
    """Sound the microphone has captured that the audio worker has not read yet: a recording started now begins
    that much before the click (its length against the wall clock is off by as much)."""
    mic = source.mic  # None while a lost stream is being reopened
    return 0.0 if mic is None else (mic.ring.written - mic.ring.read_pos) / mic.samplerate


def memory_growth_mb_per_minute(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time after the warm-up, MB per minute (None with too few samples)."""
    late = [(t, b) for t, b in samples if t >= RSS_WARMUP_SECONDS]
    if len(late) < 3:
        return None
    t, b = np.array(late, float).T
    return float(np.polyfit(t / 60.0, b / BYTES_PER_MB, 1)[0])


def _write_wav(path: Path, audio: np.ndarray, samplerate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(samplerate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def bench_soak(args) -> int:
    """Run the live pipeline with a recording for `args.minutes`; print memory, drops and A/V drift."""
    one_torch_thread()
    rescan_devices()
    engine, renderer = bench_engine(args, live=True), bench_renderer(args)
    messages: list[str] = []
    pipeline = LivePipeline(engine, renderer, fps=args.fps, on_event=messages.append).start()
    seconds = args.minutes * 60.0
    with tempfile.TemporaryDirectory() as tmp:
        feed = None
        try:
            try:
                source = MicSource(args.device)
            except MicError as e:
                print(f"bench soak: {e} (is `.ci/av-env.sh up` running?)", file=sys.stderr)
                return 1
            pipeline.set_source(source)
            if not args.no_feed:
                _write_wav(Path(tmp) / "feed.wav", feed_signal())
                feed = LoopedFeed(Path(tmp) / "feed.wav", args.sink)
            deadline = time.monotonic() + 10
            while pipeline.latest is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(START_SETTLE_SECONDS)
            backlog = _unread_seconds(source)
            recording = pipeline.start_recording(Path(tmp) / "soak.mp4", fps=args.record_fps)
            started = time.monotonic()
            samples = [(0.0, rss_bytes())]
            while time.monotonic() - started < seconds and recording.error is None:
                time.sleep(min(args.sample_seconds, max(0.0, seconds - (time.monotonic() - started))))
                samples.append((time.monotonic() - started, rss_bytes()))
                if args.verbose:
                    print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1] / BYTES_PER_MB:7.1f} MB", flush=True)
            wall = time.monotonic() - started
            recorder_dropped = recording.sink.dropped_frames
            delivered = recording.sink.recorder.audio_seconds  # the audio handed to the encoder by now
            try:
                path = pipeline.stop_recording()
            except RecordError as e:
                print(f"bench soak: the recording failed: {e}", file=sys.stderr)
                return 1
            audio_s, video_s, frames = recording_lengths(path)
            size_mb = path.stat().st_size / BYTES_PER_MB
        finally:
            if feed is not None:
                feed.stop()
            pipeline.stop()
    rss = np.array([b for _, b in samples], float) / BYTES_PER_MB
    growth = memory_growth_mb_per_minute(samples)
    gaps = source.gaps
    stats = pipeline.stats()
    print(f"soak {wall / 60:.1f} min, {engine.label}, {args.size}², view {args.fps} fps, recording {args.record_fps} "
          f"fps{'' if args.no_feed else ', virtual mic fed with vowel bursts'}:\n"
          f"  RSS: start {rss[0]:.0f} MB, end {rss[-1]:.0f} MB, max {rss.max():.0f} MB, growth after "
          f"{RSS_WARMUP_SECONDS:.0f} s: " + ("n/a" if growth is None else f"{growth:+.2f} MB/min")
          + f" ({len(samples)} samples)\n"
          f"  dropped frames: view {stats.dropped_frames}, recorder {recorder_dropped} of {frames} written; "
          f"microphone gaps: {len(gaps)} ({sum(g for _, g in gaps):.2f} s), PortAudio overflow/underflow flags: "
          f"{source.mic.status_errors if source.mic is not None else 'n/a'}\n"
          f"  recording {size_mb:.0f} MB: audio {audio_s:.3f} s, video {video_s:.3f} s, A/V drift "
          f"{1000 * (video_s - audio_s):+.0f} ms; against the wall clock {1000 * (audio_s - wall):+.0f} ms (the "
          f"encoder had {1000 * (delivered - wall):+.0f} ms when it stopped; sound not yet read when it started: "
          f"{1000 * backlog:.0f} ms)")
    for message in messages:
        print(f"  message: {message}")
    return 0


def add_cli(bench_subparsers) -> None:
    """`avatar bench soak`."""
    p = bench_subparsers.add_parser("soak", help="live pipeline with a recording for N minutes: memory, drops, "
                                                 "A/V drift")
    p.add_argument("--minutes", type=float, default=15.0, help="how long (default %(default)g)")
    add_app_arguments(p, "the shipped live model", fps=60)  # --fps: the view's rate
    p.add_argument("--record-fps", type=int_in(*FPS_RANGE), default=30, help="recording rate (default 30)")
    p.add_argument("--device", default=None, help="input device (default: the system default)")
    p.add_argument("--sink", default="vmic_out", help="PulseAudio sink that feeds the microphone")
    p.add_argument("--no-feed", action="store_true", help="feed nothing (a real microphone: speak into it)")
    p.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling period (default 10)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each RSS sample")
    p.set_defaults(func=bench_soak)
