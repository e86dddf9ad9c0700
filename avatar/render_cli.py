"""`avatar render`: offline, a photo + speech → an MP4 (the benchmarks are in avatar.bench)."""
from __future__ import annotations

import argparse
import itertools
import signal
import sys
import time
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from avatar.audio import AudioError, iter_audio
from avatar.engine import EngineError, create_engine, normalize_backend
from avatar.face import NoFaceError, PhotoError
from avatar.face.pose import FaceTurnedError
from avatar.face.assemble import open_renderer
from avatar.face.landmarks import MAX_FACES
from avatar.live.offline import OFFLINE_BLOCK, render_offline
from avatar.outputs import OutputIsInputError, check_not_an_input
from avatar.record import RecordError, check_output_path, partial_path

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


def int_in(lo: int, hi: int):
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
    side = int_in(*SIZE_RANGE)
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
    p.add_argument("--fps", type=int_in(*FPS_RANGE), default=30, help="frames per second (default 30)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, tensorrt, onnxruntime, torch, ...")
    p.add_argument("--model", help="a .safetensors or .onnx model (default: the shipped one)")
    p.add_argument("--face-index", type=int_in(0, MAX_FACES - 1), default=0, metavar="N",
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


class StopSignal:
    """SIGTERM (and Ctrl-C) while rendering: end the render as Ctrl-C does, the partial file finished.

    The handler raises KeyboardInterrupt at once and also keeps the signal, which render_offline asks for before
    every frame: Python runs a handler wherever the main thread is, and an exception raised there while it runs a
    finaliser (__del__, a weakref callback) is printed as "Exception ignored" and lost, so the render would run to
    its end and replace OUT.mp4 (seen once in a loaded test run). The kept signal is not lost."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __call__(self, signum, frame):
        self.signum = signum
        raise KeyboardInterrupt(signum)

    def __enter__(self) -> "StopSignal":
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self)
        # Ctrl-C only where Python listens for it: a background job started without job control ignores SIGINT
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def requested(self) -> bool:
        return self.signum is not None


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
    stop = StopSignal()
    try:
        with stop:
            render_offline(audio, engine, renderer, out, fps=args.fps, progress=progress,
                           total_samples=int(seconds * 16000) if seconds else None, interrupted=stop.requested)
    except RecordError as e:
        bar.close()
        cause = str(e).split(". ")[0].rstrip(".")  # the recorder's first sentence says why ("The disk is full")
        return _fail(f"{cause}. Rendering stopped; {kept()}.", EXIT_CANNOT_WRITE)
    except AudioError as e:
        bar.close()
        return _fail(f"{e}; {kept()}.", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        bar.close()
        return _fail(f"interrupted; {kept()}.", 128 + (stop.signum or signal.SIGINT))
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
