"""`avatar bench speak`: text → first open mouth through Controller.speak (the window's Speak button), with the Piper
voice and the shipped live model: the delay from the call to the first frame whose jaw_open reaches OPEN_LEVEL,
and to the first speech sample heard (played, or due by the clock without an output). Needs the [tts] extra."""
from __future__ import annotations

import tempfile
import time


from avatar.bench.common import add_app_arguments, bench_engine, bench_renderer, one_torch_thread, summary_ms
from avatar.controller import SOURCE_SPEECH, Controller
from avatar.preferences import Preferences
from avatar.visemes import PARAM_NAMES

OPEN_LEVEL = 0.3  # jaw_open of an open mouth: a third of the widest "aa" (the voice's vowels reach 0.6-0.8)
DEFAULT_TEXT = "Hello there, how are you today?"
SETTLE_SECONDS = 0.7  # silence between runs: the mouth closes again
RUN_TIMEOUT_SECONDS = 30


def bench_speak(args) -> int:
    one_torch_thread()
    engine, renderer = bench_engine(args, live=True), bench_renderer(args)
    jaw = PARAM_NAMES.index("jaw_open")
    frames: list[tuple[float, float]] = []  # (monotonic when ready, jaw_open)
    with tempfile.TemporaryDirectory() as tmp:
        c = Controller(Preferences(output_folder=tmp, fps=args.fps), lambda backend: engine,
                       lambda photo, prefs, landmarks=None: renderer,
                       on_frame=lambda frame: frames.append((frame.ready, float(frame.params[jaw]))))
        c.pipeline.renderer = renderer
        c.start()
        try:
            mouth, heard, note = [], [], None
            time.sleep(SETTLE_SECONDS)
            for run in range(args.runs + 1):  # run 0 loads the voice (cold)
                started = time.monotonic()
                c.speak(args.text)
                source = c.pipeline.source
                source_start = source.now()
                note = source.playback_note
                deadline = started + RUN_TIMEOUT_SECONDS
                while c.source_kind == SOURCE_SPEECH and time.monotonic() < deadline:
                    time.sleep(0.01)
                opened = [t for t, j in frames if t >= started and j >= OPEN_LEVEL]
                first = source.first_speech_index
                if not opened or first is None:
                    print(f"run {run}: the mouth did not open (errors: {list(c.pipeline.errors)})")
                    return 1
                heard_ms = 1000 * (source.capture_time(first) - source_start)
                mouth_ms = 1000 * (opened[0] - started)
                if run == 0:
                    print(f"cold (voice loaded by the first Speak): heard after {heard_ms:.0f} ms, mouth open after "
                          f"{mouth_ms:.0f} ms")
                else:
                    mouth.append(mouth_ms)
                    heard.append(heard_ms)
                time.sleep(SETTLE_SECONDS)
        finally:
            c.close()
    print(f"text: {args.text!r}; {note or 'played through the default output'}")
    print(f"Speak → first speech heard:        {summary_ms(heard)}")
    print(f"Speak → first open-mouth frame:    {summary_ms(mouth)}  (jaw_open ≥ {OPEN_LEVEL})")
    return 0


def add_cli(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("speak", help="Speak (Piper text to speech) → first open-mouth frame")
    add_app_arguments(p, "the shipped live model", fps=30)
    p.add_argument("--runs", type=int, default=7, help="warm runs after the first (cold) one")
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.set_defaults(func=bench_speak)
