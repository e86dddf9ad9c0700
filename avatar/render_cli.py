"""`avatar render` (offline: photo + speech → MP4) and the app's benchmarks (`avatar bench latency|render-offline`)."""
from __future__ import annotations

import argparse
import itertools
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from avatar.audio import AudioError, iter_audio
from avatar.dims import ModelDims
from avatar.engine import EngineError, create_engine, live_model_path, normalize_backend
from avatar.face import NoFaceError, PhotoError
from avatar.face.pose import FaceTurnedError
from avatar.face.assemble import open_renderer
from avatar.face.landmarks import MAX_FACES
from avatar.gui.app import default_photo
from avatar.live.offline import OFFLINE_BLOCK, render_offline
from avatar.live.pipeline import LivePipeline
from avatar.live.sources import MicSource
from avatar.live.track import neutral_params
from avatar.mic import rescan_devices
from avatar.outputs import OutputIsInputError, check_not_an_input
from avatar.record import RecordError, check_output_path, partial_path
from avatar.visemes import PARAM_NAMES, VISEME_INDEX

# exit codes of `avatar render`
EXIT_OK = 0
EXIT_FAILED = 1  # engine or encoder failure
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_BAD_INPUT = 3  # unreadable photo or audio
EXIT_NO_FACE = 4
EXIT_CANNOT_WRITE = 5
EXIT_INTERRUPTED = 130  # 128 + the signal: SIGINT (Ctrl-C) 130, SIGTERM 143

SIZE_RANGE = (64, 2048)
FPS_RANGE = (1, 120)


def _int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}")
        return value
    return parse


def frame_size(text: str) -> int | tuple[int, int]:
    """`--size`: "512" is a 512x512 portrait; "1280x720" a frame of that width and height (16:9 video framing:
    eyes a third down, the face centred, padding where the photo ends)."""
    side = _int_in(*SIZE_RANGE)
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) == 1:
        return side(parts[0])
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected N or WIDTHxHEIGHT (e.g. 512 or 1280x720), got {text!r}")
    return side(parts[0]), side(parts[1])


def add_cli(subparsers) -> None:
    """`avatar render --face PHOTO --audio SPEECH -o out.mp4 [--size 512 --fps 30 --backend auto]`."""
    p = subparsers.add_parser("render", help="render a talking-head MP4 from a photo and a speech file (offline)",
                              description="Render a talking-head video (H.264 + AAC) from one face photo and a "
                                          "speech recording, faster than real time.",
                              epilog="exit codes: 0 ok, 1 engine or encoder failure, 2 bad arguments, 3 unreadable "
                                     "input, 4 no face in the photo, 5 cannot write the output, 130 interrupted")
    p.add_argument("--face", required=True, metavar="PHOTO", help="a photo with one face (jpg, png, ...)")
    p.add_argument("--audio", required=True, metavar="SPEECH", help="speech audio (wav, mp3, flac, m4a, ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="the video to write")
    p.add_argument("--size", type=frame_size, default=512, metavar="N|WxH",
                   help="N: an N x N portrait (default 512); WxH, e.g. 1280x720 or 1920x1080: a video frame with the "
                        "eyes a third down and the face centred, the photo padded where it ends")
    p.add_argument("--fps", type=_int_in(*FPS_RANGE), default=30, help="frames per second (default 30)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, tensorrt, onnxruntime, torch, ...")
    p.add_argument("--model", help="a .safetensors or .onnx model (default: the shipped one)")
    p.add_argument("--face-index", type=_int_in(0, MAX_FACES - 1), default=0, metavar="N",
                   help="which face when the photo has several (0 = the largest, default)")
    p.add_argument("--no-liveliness", action="store_true", help="no blinks, head sway or breathing: only the mouth moves")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_render)


def _fail(message: str, code: int) -> int:
    print(f"avatar render: {message}", file=sys.stderr)
    return code


def output_refusal(out: Path, backend: str, *inputs) -> tuple[str, int] | None:
    """Why a command must stop before it reads any input, as (message, exit code), or None: a misspelt backend or an
    output that is one of the inputs (2), an output that cannot be written (5). Shared with `avatar lipsync`."""
    try:
        normalize_backend(backend)  # before any rig or decode: a typo fails at once
        check_not_an_input(out, *inputs)
    except (ValueError, OutputIsInputError) as e:
        return str(e), EXIT_USAGE
    try:
        check_output_path(out)
    except RecordError as e:
        return str(e), EXIT_CANNOT_WRITE
    return None


def run_render(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() != ".mp4":
        return _fail(f"the output must be an .mp4 file, got {out.name}", EXIT_USAGE)
    refusal = output_refusal(out, args.backend, args.audio, args.face)
    if refusal:
        return _fail(*refusal)
    try:
        audio, seconds = _open_audio(args.audio)
    except AudioError as e:
        return _fail(str(e), EXIT_BAD_INPUT)
    if audio is None:
        return _fail(f"{args.audio}: the audio is empty", EXIT_BAD_INPUT)
    try:
        renderer = open_renderer(args.face, size=args.size, liveliness={"enabled": not args.no_liveliness},
                                 face_index=args.face_index)
    except FaceTurnedError as e:  # a side view: placing points by hand would not help
        return _fail(f"{args.face}: {e}", EXIT_NO_FACE)
    except NoFaceError as e:
        return _fail(f"{args.face}: {e} (use the app's manual placement for drawings and side views)", EXIT_NO_FACE)
    except (PhotoError, OSError) as e:
        return _fail(f"{args.face}: {e}", EXIT_BAD_INPUT)
    try:
        engine = create_engine(args.backend, args.model)
    except (EngineError, ValueError) as e:
        return _fail(str(e), EXIT_FAILED)

    return _render_to_file(args, out, audio, seconds, engine, renderer)


def _open_audio(path):
    """(the speech as a stream of 1 s blocks, its length in s from the header for the progress bar), or (None, 0)
    when it holds no sound; raises AudioError. Streamed: `avatar render` keeps no whole file in memory."""
    blocks = iter_audio(path, block=OFFLINE_BLOCK)
    first = next(blocks, None)
    if first is None or len(first) == 0:
        return None, 0.0
    try:
        seconds = audio_seconds(path)
    except Exception:  # no length in the header: the bar counts frames without a total
        seconds = 0.0
    return itertools.chain([first], blocks), seconds


def _on_signal(signum, frame):
    raise KeyboardInterrupt(signum)  # SIGTERM ends the render as Ctrl-C does: the partial file is finished


def _render_to_file(args, out: Path, audio, seconds: float, engine, renderer) -> int:
    """Render into OUT.partial.mp4 and rename it to OUT when complete; say where the partial file is otherwise."""
    partial = partial_path(out)
    bar = tqdm(total=int(np.ceil(seconds * args.fps)) or None, unit="frame", disable=args.quiet, file=sys.stderr,
               desc=out.name)
    done = [0]

    def progress(fraction):
        n = int(round(fraction * bar.total))
        bar.update(n - done[0])
        done[0] = n

    def kept() -> str:
        """What is left where, truthfully: the playable partial file, or nothing (an empty one is removed)."""
        if partial.exists() and partial.stat().st_size > 0:
            return f"the part rendered so far is in {partial}"
        partial.unlink(missing_ok=True)
        return f"nothing was written{'; ' + str(out) + ' is unchanged' if out.exists() else ''}"

    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        render_offline(audio, engine, renderer, out, fps=args.fps, progress=progress,
                       total_samples=int(seconds * 16000) if seconds else None)
    except RecordError as e:
        bar.close()
        cause = str(e).split(". ")[0].rstrip(".")  # the recorder's first sentence says why ("The disk is full")
        return _fail(f"{cause}. Rendering stopped; {kept()}.", EXIT_CANNOT_WRITE)
    except AudioError as e:
        bar.close()
        return _fail(f"{e}; {kept()}.", EXIT_BAD_INPUT)
    except KeyboardInterrupt as e:
        bar.close()
        signum = e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT
        return _fail(f"interrupted; {kept()}.", 128 + signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    wall = time.perf_counter() - t0
    if not args.quiet:
        seconds = audio_seconds(out)
        print(f"{out}: {seconds:.1f} s of video in {wall:.1f} s ({seconds / wall:.1f}x real time, "
              f"{engine.label})", file=sys.stderr)
    return EXIT_OK


def audio_seconds(path) -> float:
    """Length of a file's (first) audio track from its header (0 when the header does not say)."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return float(stream.duration * stream.time_base) if stream.duration else (c.duration or 0) / av.time_base


# ----------------------------------------------------------------------------------------------------
# benchmarks


def loudness_probe_model():
    """A LipSyncNet with hand-set weights: jaw_open ≈ 1 while the mean log-mel is above -8.5 (a 0.5-amplitude tone
    gives -7.1, digital silence -10), ≈ 0 otherwise. Memoryless (lookahead 0), so the latency benchmark measures the
    pipeline, not how long a trained network takes to make up its mind."""
    import torch  # torch (and the model, which is torch): 2 s to import, only for `--model probe`

    from avatar.model import LipSyncNet

    net = LipSyncNet(ModelDims(n_hidden=8, n_layers=1, cell="rnn", lookahead=0))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.input[0].weight[0, :] = 1.0 / net.dims.n_mels  # u0 = tanh(mean log-mel + 8.5)
        net.input[0].bias[0] = 8.5
        net.rnn.weight_ih_l0[0, 0] = 3.0  # h0 = tanh(3 u0): ±0.99
        net.param_head.weight[0, 0] = 6.0  # jaw_open = sigmoid(6 h0)
        net.param_head.bias[1:] = -6.0  # the other parameters stay near 0
        net.viseme_head.weight[VISEME_INDEX["aa"], 0] = 6.0
        net.viseme_head.weight[VISEME_INDEX["sil"], 0] = -6.0
    return net.eval()


BURST_ATTACK = 0.005  # s: the latency bursts' raised-cosine onset; an abrupt step is a click, which reads as a
# plosive release (measured: a 0 ms look-ahead network opens a frame later on it than on a 5-20 ms attack)
ONSET_LEVEL = 1e-3  # a burst starts at its first sample above this (-60 dBFS; the virtual mic's silence is 0)...
ONSET_WALKBACK = 480  # ...searched up to 30 ms before its loudness is detected
VOWEL_F0 = 120.0  # Hz: a low voice
VOWEL_FORMANTS = ((730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0))  # "aa": (centre, bandwidth) Hz


def _vowel(t: np.ndarray) -> np.ndarray:
    """A steady "aa" by additive synthesis: harmonics of VOWEL_F0 weighted by the formant resonances."""
    out = np.zeros_like(t)
    for k in range(1, int(4000 / VOWEL_F0)):
        f = k * VOWEL_F0
        gain = sum(1.0 / np.hypot(1.0, (f - fc) / (bw / 2)) for fc, bw in VOWEL_FORMANTS)
        out += gain * np.sin(2 * np.pi * f * t)
    return out / np.abs(out).max()


def tone_bursts(onsets, seconds, sr=16000, length=0.25, freq=1000.0, amplitude=0.5, vowel=False,
                attack=0.0) -> np.ndarray:
    """Silence with bursts starting at `onsets` (s): the latency and A/V-sync test signal. Each burst is a pure
    tone, or with `vowel` a synthetic "aa", which the trained lip-sync model opens the mouth for (a pure tone is
    not speech, and it rightly stays closed). `attack` > 0 gates each burst on with a raised-cosine ramp of that
    many seconds (no click at the onset: no voice starts with one)."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for onset in onsets:
        k = (t >= onset) & (t < onset + length)
        tb = t[k] - onset
        gate = 0.5 - 0.5 * np.cos(np.pi * np.clip(tb / attack, 0.0, 1.0)) if attack > 0 else 1.0
        out[k] = amplitude * gate * (_vowel(tb) if vowel else np.sin(2 * np.pi * freq * tb))
    return out.astype(np.float32)


def _bench_engine(args, live: bool = False):
    if args.model == "probe":
        return create_engine("torch" if args.backend == "auto" else args.backend, loudness_probe_model())
    return create_engine(args.backend, args.model or (live_model_path() if live else None))


def _bench_renderer(args):
    photo = args.face
    if photo is None:
        photo = default_photo()
    # liveliness off: head sway and blinks would count as mouth motion in the latency measurement
    return open_renderer(photo, size=args.size, liveliness={"enabled": False})


def _summary(values_ms) -> str:
    v = np.asarray(values_ms, float)
    return (f"median {np.median(v):.1f} ms, p95 {np.percentile(v, 95):.1f} ms, p99 {np.percentile(v, 99):.1f} ms, "
            f"min {v.min():.1f}, max {v.max():.1f} (n={len(v)})")


def bench_latency(args) -> int:
    """Mic→pixel latency through the virtual microphone: tone onset (its ADC time) → first frame whose mouth
    opening (pixels against the closed-mouth frame) crosses half its full range. Needs `.ci/av-env.sh up`."""
    import torch  # 2 s to import: only the benchmarks need it

    torch.set_num_threads(1)
    rescan_devices()
    engine, renderer = _bench_engine(args, live=True), _bench_renderer(args)
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
          f"({len(latencies)} tone onsets, {args.attack_ms:g} ms attack): {_summary(latencies)}\n"
          f"  of which in the app (audio read from the ring → frame ready): {_summary(in_app)}")
    return 0


def bench_render_offline(args) -> int:
    """Offline render speed: × real time for `--seconds` of audio at `--size`², `--fps`, median of `--runs`."""
    import torch  # 2 s to import: only the benchmarks need it

    torch.set_num_threads(1)
    engine, renderer = _bench_engine(args), _bench_renderer(args)
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


def add_bench_cli(bench_subparsers) -> None:
    """`avatar bench latency`, `avatar bench render-offline` and `avatar bench soak`."""
    for name, fn, help_text in (("latency", bench_latency, "mic→pixel latency through the virtual microphone"),
                                ("render-offline", bench_render_offline, "offline render speed (x real time)")):
        p = bench_subparsers.add_parser(name, help=help_text)
        p.add_argument("--face", help="photo (default: the shipped face)")
        p.add_argument("--model", default=None,
                       help="model file, or 'probe' for the hand-set loudness network (default: the shipped "
                       + ("live model)" if name == "latency" else "model)"))
        p.add_argument("--backend", default="auto")
        p.add_argument("--size", type=_int_in(*SIZE_RANGE), default=512)
        if name == "latency":
            p.add_argument("--fps", type=_int_in(*FPS_RANGE), default=60)
            p.add_argument("--bursts", type=int, default=30)
            p.add_argument("--device", default=None, help="input device (default: the system default)")
            p.add_argument("--sink", default="vmic_out", help="PulseAudio sink that feeds the microphone")
            p.add_argument("--no-smoothing", action="store_true", help="show the network's raw output (no spring)")
            p.add_argument("--verbose-onsets", action="store_true", help="print every onset's latency")
            p.add_argument("--attack-ms", type=float, default=1000 * BURST_ATTACK,
                           help="raised-cosine onset of each test burst (default %(default)g; 0: an abrupt step)")
        else:
            p.add_argument("--fps", type=_int_in(*FPS_RANGE), default=30)
            p.add_argument("--seconds", type=float, default=10.0)
            p.add_argument("--runs", type=int, default=3)
        p.set_defaults(func=fn)
    from avatar import bench_soak  # it imports this module: a top-level import would be a cycle

    bench_soak.add_bench_cli(bench_subparsers)
