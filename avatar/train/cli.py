"""`avatar train {gen,fit,evaluate}`: the lip-sync model's training-time commands (needs the [train] extra)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from avatar.engine import create_engine
from . import real_head, real_mouths, voice_gate
from .datagen import GenConfig, ShardsFailed, generate
from .evaluate import run_evaluation
from .fit import BATCH, BILABIAL_WEIGHT, LEARNING_RATE, SEGMENT, FitConfig, fit
from .music import MusicSource, MusicUnavailable
from .realspeech import RealSpeechUnavailable, aligner_agreement

# Not here: avatar.model (torch, ~2 s to import; only `ship` needs it), and each synthesizer's and aligner's own
# library, which those modules load when they are first used.


def _label_check(args: argparse.Namespace) -> int:
    rows = aligner_agreement(args.per_voice, Path(args.text) if args.text else None, progress=True)
    print("| voice | clips | jaw_open r (aligned vs exact) | viseme frames agreeing |\n|---|---|---|---|")
    for voice, row in sorted(rows.items(), key=lambda kv: kv[0] == "all"):
        print(f"| {voice} | {row['clips']} | {row['r']:.3f} | {100 * row['viseme']:.1f}% |")
    return 0


def _gen(args: argparse.Namespace) -> int:
    if args.music_share > 0:
        try:
            MusicSource(args.split)  # say so before any worker starts, not from inside each one
        except MusicUnavailable as e:
            print(f"avatar train gen: {e}")
            return 1
    config = GenConfig(seed=args.seed, split=args.split, piper_share=args.piper_share,
                       festival_share=args.festival_share,
                       festival_voices=tuple(args.festival_voices.split(",")) if args.festival_voices else None,
                       flite_share=args.flite_share, shard_seconds=args.shard_seconds, text_root=args.text,
                       speed_range=(args.speed_min, args.speed_max), targets=args.targets,
                       music_share=args.music_share, noise_share=args.noise_share,
                       sung_share=args.sung_share)
    try:
        paths = generate(config, Path(args.out), args.hours, procs=args.procs)
    except ShardsFailed as e:
        print(f"avatar train gen: {e}")
        return 1
    print(f"{len(paths)} shard(s) in {args.out}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    config = FitConfig(cell=args.cell, n_hidden=args.hidden, n_layers=args.layers, lookahead=args.lookahead,
                       batch=args.batch, segment=args.segment, lr=args.lr,
                       minutes=None if args.steps else args.minutes, steps=args.steps, seed=args.seed,
                       threads=args.threads, device=args.device, init=args.init, onset_weight=args.onset_weight,
                       bilabial_weight=args.bilabial_weight, targets=args.targets)
    fit(config, [Path(d) for d in args.data], Path(args.out), val=Path(args.val) if args.val else None)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    targets = tuple(args.targets.split(","))
    if not set(targets) <= {"hand", "measured"}:
        print(f"avatar train evaluate: --targets takes hand, measured or hand,measured, got {args.targets!r}",
              file=sys.stderr)
        return 2
    try:
        results, report = run_evaluation([Path(m) for m in args.models], Path(args.synthetic) if args.synthetic else None,
                                         not args.no_real, Path(args.real_cache) if args.real_cache else None,
                                         limit=args.limit, bench=not args.no_bench, targets=targets,
                                         music=not args.no_music, lead_in=args.lead_in)
    except (RealSpeechUnavailable, FileNotFoundError) as e:
        print(f"avatar train evaluate: {e}", file=sys.stderr)
        return 1
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(report)
    return 0


def _ship(args: argparse.Namespace) -> int:
    from avatar.model import export_onnx, load_model, read_extra, save_model  # torch
    assets = Path(args.assets)
    weights, onnx_path = assets / f"{args.name}.safetensors", assets / f"{args.name}.onnx"
    model = load_model(args.model)  # (weights saved before the core or the gate had a start state get one here)
    save_model(model, weights, extra=read_extra(args.model))
    export_onnx(model, onnx_path)
    # the shipped pair must give the same numbers: step both through a stream in uneven chunks
    torch_engine, ort_engine = create_engine("torch", weights), create_engine("onnxruntime", onnx_path)
    x = np.random.default_rng(0).normal(-4, 2, (300, model.dims.n_mels)).astype(np.float32)
    worst = 0.0
    for a, b in [(0, 1), (1, 5), (5, 64), (64, 300)]:
        t, o = torch_engine.step(x[a:b]), ort_engine.step(x[a:b])
        worst = max(worst, float(np.abs(t.params - o.params).max()), float(np.abs(t.visemes - o.visemes).max()))
    print(f"{weights} ({weights.stat().st_size // 1024} KiB), {onnx_path} ({onnx_path.stat().st_size // 1024} KiB); "
          f"onnxruntime vs torch max difference {worst:.2e}")
    return 0 if worst < 1e-4 else 1


def add_cli(subparsers) -> None:
    """Register `avatar train ...` on the top-level argparse subparsers."""
    train = subparsers.add_parser("train", help="make training data, train and evaluate the lip-sync model")
    sub = train.add_subparsers(dest="train_command", required=True)

    gen = sub.add_parser("gen", help="generate synthetic speech with exact phone timing (sharded, multiprocess)")
    gen.add_argument("--out", required=True, help="dataset folder (shards are added; existing ones kept)")
    gen.add_argument("--hours", type=float, default=2.0, help="hours of audio, silence gaps included")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--split", choices=["train", "eval"], default="train",
                     help="eval: held-out sentences and espeak voices")
    gen.add_argument("--piper-share", type=float, default=0.3, help="share of utterances from piper TTS")
    gen.add_argument("--festival-share", type=float, default=0.0,
                     help="share of utterances from festival's recorded voices (needs Debian festival + festvox "
                          "voices; see avatar/train/festival.py)")
    gen.add_argument("--festival-voices", default=None,
                     help="comma-separated festival voices (default: every installed one: cmu_us_slt_arctic_hts, "
                          "kal_diphone, ked_diphone)")
    gen.add_argument("--flite-share", type=float, default=0.0,
                     help="share of utterances from flite's recorded-voice models awb, rms, slt (needs Debian "
                          "libflite1; see avatar/train/flite.py)")
    gen.add_argument("--shard-seconds", type=float, default=300.0)
    gen.add_argument("--speed-min", type=float, default=0.9, help="slowest resampling speed factor")
    gen.add_argument("--speed-max", type=float, default=1.1,
                     help="fastest resampling speed factor (1.2 moves a male voice's formants towards a female's)")
    gen.add_argument("--music-share", type=float, default=0.0,
                     help="share of utterances with instrumental music before them (alone, labelled closed) and "
                          "in half the cases under them, quieter (needs the Debian music packages or fluidsynth + "
                          "fluid-soundfont-gm; see avatar/train/music.py)")
    gen.add_argument("--noise-share", type=float, default=0.0,
                     help="share of segments with room noise: hum, keyboard typing, fan or traffic rumble")
    gen.add_argument("--sung-share", type=float, default=0.0,
                     help="share of utterances sung: vowels held on a melody (WORLD vocoder, pyworld), 80 %% of "
                          "them over instrumental music; positives, so music negatives do not silence songs")
    gen.add_argument("--procs", type=int, default=2, help="worker processes")
    gen.add_argument("--targets", choices=["hand", "measured"], default="hand",
                     help="mouth targets: hand (the 2026-11-28 table the shipped models learnt) or measured (from real "
                          "faces: `avatar train measure-targets`)")
    gen.add_argument("--text", default=None,
                     help="an unpacked `fortunes` .deb (dpkg -x); default: installed fortunes, else built-in text")
    gen.set_defaults(func=_gen)

    fit = sub.add_parser("fit", help="train with truncated BPTT over long streams, the state carried between segments")
    fit.add_argument("--data", required=True, nargs="+", help="training dataset folder(s) (from `avatar train gen`)")
    fit.add_argument("--val", help="validation dataset folder (e.g. --split eval), evaluated during training")
    fit.add_argument("--out", required=True, help="weights to write (.safetensors)")
    fit.add_argument("--cell", choices=["gru", "lstm", "rnn"], default="gru")
    fit.add_argument("--hidden", type=int, default=128)
    fit.add_argument("--layers", type=int, default=2)
    fit.add_argument("--lookahead", type=int, default=2, help="output delay in 10 ms frames (0..4)")
    fit.add_argument("--minutes", type=float, default=35.0, help="wall-clock budget")
    fit.add_argument("--steps", type=int, help="a fixed number of steps instead of a time budget")
    fit.add_argument("--batch", type=int, default=BATCH)
    fit.add_argument("--segment", type=int, default=SEGMENT, help="frames per truncated-BPTT segment")
    fit.add_argument("--lr", type=float, default=LEARNING_RATE)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    fit.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    fit.add_argument("--init", help="start from these weights (fine-tuning; same dims, any look-ahead)")
    fit.add_argument("--bilabial-weight", type=float, default=BILABIAL_WEIGHT,
                     help="weight of p/b/m frames (their closures are short but the most visible error)")
    fit.add_argument("--onset-weight", type=float, default=1.0,
                     help="weight of the 50 ms after each silence->speech onset (>1: a live mouth that opens sooner)")
    fit.add_argument("--targets", choices=["hand", "measured"], default=None,
                     help="recompute the mouth targets from the shards' timed phones by these rules (default: the "
                          "targets stored in the shards)")
    fit.set_defaults(func=_fit)

    ev = sub.add_parser("evaluate", help="metrics on held-out synthetic voices and real speech, beside an energy baseline")
    ev.add_argument("models", nargs="+", help="trained weights (.safetensors)")
    ev.add_argument("--synthetic", help="held-out synthetic dataset (`avatar train gen --split eval`)")
    ev.add_argument("--no-real", action="store_true", help="skip the asterisk real-speech set")
    ev.add_argument("--real-cache", default=None, help="JSON file caching the pocketsphinx alignments")
    ev.add_argument("--limit", type=int, help="only the first N real-speech prompts")
    ev.add_argument("--no-bench", action="store_true", help="skip the per-step timing")
    ev.add_argument("--targets", default="hand",
                    help="mouth targets of the real-speech labels: hand (the 2026-11-28 table), measured (from real "
                         "faces, `measure-targets`) or both as hand,measured")
    ev.add_argument("--no-music", action="store_true",
                    help="skip the held-out instrumental music check (run whenever the music packages or "
                         "fluidsynth are installed)")
    ev.add_argument("--lead-in", action="store_true",
                    help="run each clip as `avatar render` runs a file (a clip that starts at once is first heard "
                         "backwards up to its first pause); default: from a quiet room, as the live view")
    ev.add_argument("--json", help="write all results here")
    ev.add_argument("--markdown", help="write the report tables here")
    ev.set_defaults(func=_evaluate)

    lc = sub.add_parser("label-check", help="how well pocketsphinx labels match exact synthesizer timing (the "
                                             "ceiling for scores against labelled real speech)")
    lc.add_argument("--per-voice", type=int, default=12, help="held-out sentences per synthesizer voice")
    lc.add_argument("--text", default=None, help="an unpacked `fortunes` .deb, as for `gen`")
    lc.set_defaults(func=_label_check)

    real_mouths.add_cli(sub)
    real_head.add_cli(sub)
    voice_gate.add_cli(sub)

    ship = sub.add_parser("ship", help="copy trained weights into assets/ and export the ONNX beside them")
    ship.add_argument("model", help="trained weights (.safetensors)")
    ship.add_argument("--assets", default=str(Path(__file__).resolve().parents[2] / "assets"))
    ship.add_argument("--name", default="lipsync_gru")
    ship.set_defaults(func=_ship)
