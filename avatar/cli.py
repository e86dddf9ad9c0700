"""`avatar`: the desktop app with no arguments, tools as subcommands."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from avatar import __version__
from avatar import eval as evaluation
from avatar import lipsync, render_cli
from avatar import bench
from avatar.engine import (BACKENDS, EngineError, create_engine, default_model_path, live_model_path,
                           normalize_backend, probe_backends)
from avatar.face import preview
from avatar.face.video_avatar import cli as make_avatar

# Not imported here: the [train] tools (absent from runtime-only installs), the self-test (it times its own
# imports) and the GUI (PySide6: only when the app opens).


def _engine_info(args) -> int:
    rows = probe_backends()
    width = max(len(r.backend) for r in rows)
    for r in rows:
        print(f"{r.backend:<{width}}  {'yes' if r.available else 'no ':3}  {r.detail}")
    if args.select:
        try:
            engine = create_engine("auto", args.model)
        except EngineError as e:
            print(f"\nauto: {e}", file=sys.stderr)
            return 1
        print("\nauto selection:")
        for backend, outcome in engine.selection:
            print(f"  {backend:<{width}}  {outcome}")
    return 0


def _engine_build(args) -> int:
    # both shipped models unless one is named: the app's live view runs one, files the other
    models = [args.model] if args.model else [default_model_path(), live_model_path()]
    for model in models:
        t0 = time.perf_counter()
        try:
            engine = create_engine(args.backend, model)
        except (EngineError, ValueError) as e:
            print(f"avatar engine build: {e}", file=sys.stderr)
            return 1
        built = getattr(engine, "built_now", None)
        what = {True: "built and cached", False: "loaded from the cache", None: "ready (nothing to build)"}[built]
        print(f"{Path(model).name}, {engine.label}: {what} in {time.perf_counter() - t0:.2f} s")
        cache = getattr(engine, "cache", None)
        if cache is not None:
            print(f"engine cache: {cache.folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar", description="A single face photo that talks, live, from your microphone. "
                                     "Run without arguments to open the app.")
    parser.add_argument("--version", action="version", version=f"talking-avatar {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--self-test", action="store_true",
                        help="run the whole app path headless (photo, engine, frames, MP4) and exit 0 if it works")
    parser.add_argument("--backend", help=f"inference backend for the app (kept as its setting) and --self-test: "
                        f"{', '.join(BACKENDS)}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    engine = sub.add_parser("engine", help="inference backends: what this machine has, building TensorRT engines")
    engine_sub = engine.add_subparsers(dest="engine_command", metavar="ACTION", required=True)
    info = engine_sub.add_parser("info", help="which backends this machine has, and why not the others")
    info.add_argument("--select", action="store_true", help="also show what `auto` picks for the model")
    info.add_argument("--model", help="a .safetensors or .onnx model (default: the shipped one)")
    info.set_defaults(func=_engine_info)
    build = engine_sub.add_parser("build", help="build and cache the engine for a backend (TensorRT by default)")
    build.add_argument("--backend", default="tensorrt", help=f"one of: {', '.join(BACKENDS)}")
    build.add_argument("--model", help="a .safetensors or .onnx model (default: both shipped ones)")
    build.set_defaults(func=_engine_build)

    bench.add_cli(sub)
    preview.add_cli(sub)

    render_cli.add_cli(sub)
    make_avatar.add_cli(sub)

    lipsync.add_cli(sub)
    evaluation.add_cli(sub)
    try:  # the [train] tools are absent from runtime-only installs such as the desktop bundle
        from avatar.train.cli import add_cli as add_train_cli
    except ImportError:
        pass
    else:
        add_train_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.backend is not None and (args.self_test or args.command is None):
        try:
            args.backend = normalize_backend(args.backend)
        except ValueError as e:
            print(f"avatar: {e}", file=sys.stderr)
            return 2
    if args.self_test:
        from avatar.selftest import run

        return run(backend=args.backend or "auto")
    if args.command is None:
        try:
            from avatar.gui import run_app
        except ImportError as e:
            print(f"avatar: the desktop app is not available in this install ({e})", file=sys.stderr)
            return 1
        return run_app(argv, backend=args.backend)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:  # an optional extra that this install lacks: say which, no traceback
        extra = "train" if args.command == "train" else "torch"
        print(f"avatar {args.command}: needs {e.name}, which is not installed "
              f"(pip install 'talking-avatar[{extra}]')", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
