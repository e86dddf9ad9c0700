"""`avatar lipsync INPUT -o OUT`: the mouth track of an audio file for animators.

- ``.json``: ``{"fps": 100, "params": {"jaw_open": [...], ...}, "visemes": {"sil": [...], ...},
  "mouth_shapes": [[seconds, "X"], ...]}``: per-frame mouth parameters and viseme posteriors.
- ``.csv``: one row per 10 ms frame: time, the four mouth parameters, the 15 viseme posteriors, the shape.
- ``.tsv``: Rhubarb Lip Sync's format: ``seconds<TAB>shape`` at every change of mouth shape (A-F, G, H, X).

Audio is decoded, resampled and run through the streaming engine block by block (constant memory for the
audio, however long the file); only the output track is kept. Needs no training tools.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from avatar.audio import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE, AudioError, iter_audio
from avatar.engine import EngineError, create_engine
from avatar.mouth_stream import MouthStream
from avatar.render_cli import EXIT_BAD_INPUT, EXIT_CANNOT_WRITE, EXIT_FAILED, EXIT_OK, EXIT_USAGE, output_refusal
from avatar.visemes import PARAM_NAMES, RHUBARB_SHAPE, VISEMES

FORMATS = (".json", ".csv", ".tsv")
BLOCK_SECONDS = 0.5  # audio decoded and run per step (50 frames, within the engine's MAX_CHUNK)
RHUBARB_SHAPES = "ABCDEFGHX"
MIN_SHAPE_FRAMES = 4  # shapes shorter than 40 ms are merged into the one before: no single-frame flicker
DECIMALS = 4


class LipsyncError(ValueError):
    """Input or output that cannot be used, with a sentence a person can act on."""


@dataclass
class MouthTrack:
    params: np.ndarray  # (T, 4) float32
    visemes: np.ndarray  # (T, 15) float32 posteriors

    @property
    def n_frames(self) -> int:
        return len(self.params)


def track_audio_file(path: str | Path, engine) -> MouthTrack:
    """Run `engine` over the file, state carried from block to block; frame i describes samples [i*160, (i+1)*160)."""
    return track_audio(iter_audio(path, block=int(BLOCK_SECONDS * SAMPLE_RATE)), engine, source=path)


def track_audio(blocks: Iterable[np.ndarray], engine, source: str | Path = "the audio",
                lead_in: bool = True) -> MouthTrack:
    """Run `engine` over 16 kHz mono blocks of any size, state carried; frame i describes samples [i*160, (i+1)*160).
    lead_in: a file's opening sound is heard backwards first where it starts at once (avatar.mouth_stream), as
    `avatar render` does."""
    stream = MouthStream(engine)
    rows = stream.run(blocks, lead_in=lead_in)
    if stream.samples_in < HOP_LENGTH:
        raise LipsyncError(f"{source}: the file holds no audio ({stream.samples_in} samples)")
    return MouthTrack(rows.params, rows.visemes)


def mouth_shapes(visemes: np.ndarray) -> list[str]:
    """Rhubarb shape per frame: the shape with the most posterior mass, short flickers merged away."""
    shape_of = np.array([RHUBARB_SHAPES.index(RHUBARB_SHAPE[v]) for v in VISEMES])
    mass = np.zeros((len(visemes), len(RHUBARB_SHAPES)), np.float32)
    for k in range(len(VISEMES)):
        mass[:, shape_of[k]] += visemes[:, k]
    best = mass.argmax(axis=1)
    start = 0
    for i in range(1, len(best) + 1):  # runs shorter than MIN_SHAPE_FRAMES take the previous shape
        if i == len(best) or best[i] != best[start]:
            if i - start < MIN_SHAPE_FRAMES and start > 0:
                best[start:i] = best[start - 1]
            start = i
    return [RHUBARB_SHAPES[b] for b in best]


def shape_changes(shapes: list[str]) -> list[tuple[float, str]]:
    return [(i / FRAMES_PER_SECOND, s) for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]


def _write_json_numbers(f, values: np.ndarray, block: int = 10000) -> None:
    f.write("[")
    for i in range(0, len(values), block):
        text = ", ".join(f"{x:.{DECIMALS}f}".rstrip("0").rstrip(".") for x in values[i:i + block])
        f.write(("" if i == 0 else ", ") + text)
    f.write("]")


def write_track(track: MouthTrack, out: Path) -> None:
    kind = out.suffix.lower()
    if kind not in FORMATS:
        raise LipsyncError(f"{out}: unknown output format {kind!r}; use one of {', '.join(FORMATS)}")
    shapes = mouth_shapes(track.visemes)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if kind == ".json":  # written column by column: an hour of frames never becomes Python lists
            f.write(f'{{"fps": {FRAMES_PER_SECOND}, ')
            for key, names, values in (("params", PARAM_NAMES, track.params), ("visemes", VISEMES, track.visemes)):
                f.write(f'"{key}": {{')
                for k, name in enumerate(names):
                    f.write(("" if k == 0 else ", ") + f'"{name}": ')
                    _write_json_numbers(f, values[:, k])
                f.write("}, ")
            f.write('"mouth_shapes": ' + json.dumps([[round(t, 2), s] for t, s in shape_changes(shapes)]) + "}")
        elif kind == ".csv":
            w = csv.writer(f)
            w.writerow(["time", *PARAM_NAMES, *VISEMES, "mouth_shape"])
            for i in range(track.n_frames):
                w.writerow([f"{i / FRAMES_PER_SECOND:.2f}", *(f"{x:.{DECIMALS}f}" for x in track.params[i]),
                            *(f"{x:.{DECIMALS}f}" for x in track.visemes[i]), shapes[i]])
        else:  # Rhubarb Lip Sync TSV: the shape from each time on, and X at the end
            for t, s in shape_changes(shapes):
                f.write(f"{t:.2f}\t{s}\n")
            f.write(f"{track.n_frames / FRAMES_PER_SECOND:.2f}\tX\n")
    tmp.replace(out)


def _fail(message: str, code: int) -> int:
    print(f"avatar lipsync: {message}", file=sys.stderr)
    return code


def _run(args) -> int:
    """Arguments and the output path are checked before any audio is read: a bad one fails at once."""
    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        return _fail(f"{out}: the output must end in {', '.join(FORMATS)}", EXIT_USAGE)
    refusal = output_refusal(out, args.backend, args.input)
    if refusal:
        return _fail(*refusal)
    try:
        engine = create_engine(args.backend, args.model)
    except EngineError as e:
        return _fail(str(e), EXIT_FAILED)
    part = out.with_name(out.name + ".part")  # write_track's temporary file: never left behind
    try:
        track = track_audio_file(args.input, engine)
        write_track(track, out)
    except (AudioError, LipsyncError) as e:
        return _fail(str(e), EXIT_BAD_INPUT)
    except EngineError as e:
        return _fail(str(e), EXIT_FAILED)
    except OSError as e:
        return _fail(f"cannot write {out}: {e.strerror or e}", EXIT_CANNOT_WRITE)
    finally:
        part.unlink(missing_ok=True)
    print(f"{out}: {track.n_frames} frames ({track.n_frames / FRAMES_PER_SECOND:.2f} s) at {FRAMES_PER_SECOND} fps "
          f"by {engine.label}")
    return EXIT_OK


def add_cli(subparsers) -> None:
    """Register `avatar lipsync INPUT -o OUT` on the top-level argparse subparsers."""
    p = subparsers.add_parser("lipsync", help="mouth track of an audio file for animators (.json, .csv, Rhubarb .tsv)",
                              epilog="exit codes: 0 ok, 1 engine or model failure, 2 bad arguments, 3 unreadable "
                                     "input, 5 cannot write the output, 130 interrupted")
    p.add_argument("input", help="any audio file (wav, mp3, flac, m4a, ogg...)")
    p.add_argument("-o", "--output", required=True, help="out.json | out.csv | out.tsv (Rhubarb Lip Sync)")
    p.add_argument("--model", help="a .safetensors or .onnx model (default: the shipped one)")
    p.add_argument("--backend", default="auto", help="inference backend (see `avatar engine info`)")
    p.set_defaults(func=_run)
