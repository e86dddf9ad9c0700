"""`avatar train {gen,fit,evaluate}`: the lip-sync model's training-time commands (needs the [train] extra)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _gen(args: argparse.Namespace) -> int:
    from .datagen import GenConfig, generate
    config = GenConfig(seed=args.seed, split=args.split, piper_share=args.piper_share,
                       shard_seconds=args.shard_seconds, text_root=args.text)
    paths = generate(config, Path(args.out), args.hours, procs=args.procs)
    print(f"{len(paths)} shard(s) in {args.out}")
    return 0


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
    gen.add_argument("--shard-seconds", type=float, default=300.0)
    gen.add_argument("--procs", type=int, default=2, help="worker processes")
    gen.add_argument("--text", default=None,
                     help="an unpacked `fortunes` .deb (dpkg -x); default: installed fortunes, else built-in text")
    gen.set_defaults(func=_gen)
