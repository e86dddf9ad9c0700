"""`avatar eval`: the app held against reality (real talking clips); see avatar/eval/video.py."""
from __future__ import annotations

from avatar.eval.fit_shapes import run as _run_fit_shapes
from avatar.eval.reenact import run as _run_reenact
from avatar.eval.video import run as _run_video


def add_cli(subparsers) -> None:
    """Register `avatar eval video CLIP... [--model M] [--out DIR]` on the top-level subparsers."""
    ev = subparsers.add_parser("eval", help="measure against real people on camera")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    p = ev_sub.add_parser("video", help="lip-sync and renderer against real talking clips (FaceMesh on both)")
    p.add_argument("clips", nargs="+", metavar="CLIP", help="real talking videos with their own audio")
    p.add_argument("--model", default="default",
                   help="default (the files model), live (the live view's model), or a .safetensors/.onnx path")
    p.add_argument("--backend", default="auto", help="inference backend (see `avatar engine info`)")
    p.add_argument("--out", metavar="DIR", help="write report.md, report.json and a montage PNG per clip here")
    p.add_argument("--av-offset", action="append", metavar="CLIP=MS",
                   help="a clip whose sound trails its picture by MS in the file (repeatable); the sound is moved "
                        "back before measuring. Default: none, the figures of the issue's exact ruler")
    p.add_argument("--no-render", action="store_true", help="only the motion figures (no render, no chain figures)")
    p.set_defaults(func=_run_video)
    f = ev_sub.add_parser("fit-shapes", help="fit the mouth mapping (avatar/face/shapes.py) to real talking clips")
    f.add_argument("clips", nargs="+", metavar="CLIP",
                   help="real talking videos with their own audio (the shipped table: the GRID clips only)")
    f.add_argument("--model", default="default", help="default, live, or a .safetensors/.onnx path")
    f.add_argument("--backend", default="auto", help="inference backend (see `avatar engine info`)")
    f.add_argument("--out", metavar="JSON", help="write the fitted table here (shipped: avatar/face/fitted_shapes.json; "
                                                 "the live network's: fitted_shapes_live.json)")
    f.set_defaults(func=_run_fit_shapes)
    r = ev_sub.add_parser("reenact", help="self-reenactment: a video avatar built from a clip's first 60 %% driven "
                          "by its last 40 %%'s audio, against the real frames, beside the photo renderer")
    r.add_argument("clips", nargs="+", metavar="CLIP", help="real talking videos with their own audio")
    r.add_argument("--model", default="default", help="default, live, or a .safetensors/.onnx path")
    r.add_argument("--backend", default="auto", help="inference backend (see `avatar engine info`)")
    r.add_argument("--out", metavar="DIR", help="write reenact.md, reenact.json and a montage PNG per clip here "
                   "(the montages show the clips' pixels: never commit them)")
    r.add_argument("--av-offset", action="append", metavar="CLIP=MS",
                   help="a clip whose sound trails its picture by MS in the file (repeatable), as `eval video`: "
                        "scored so, and its avatar built so; without it the build finds the offset itself, as "
                        "`make-avatar` does, and the clip is scored as the file has it")
    r.add_argument("--no-calibration", dest="calibrate", action="store_false",
                   help="build the avatars without the person's own mouth width (the shared mapping only), "
                        "to compare")
    r.add_argument("--whole-sound", action="store_true",
                   help="drive both renderers with the whole clip's sound and score their last 40 %% (the network's "
                        "state carried through, as in continuous speech); default: the last 40 %%'s sound alone")
    r.set_defaults(func=_run_reenact)
