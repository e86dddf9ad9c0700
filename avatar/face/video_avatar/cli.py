"""`avatar make-avatar VIDEO -o NAME.avatar`: a video avatar from a short video of one person talking."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from avatar.face.video_avatar import AVATAR_SUFFIX, VideoInputError, VideoNoFaceError
from avatar.face.video_avatar.build import MIN_SECONDS, build

# exit codes, as `avatar render`'s
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_NO_FACE, EXIT_CANNOT_WRITE = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
MAX_AV_OFFSET_MS = 5000  # a file further out of step than this is not a muxing slip


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "make-avatar", help="make a video avatar (NAME.avatar) from a short video of one person talking",
        description="Make a talking avatar from a video of one person facing the camera (at least 3 s; 10-30 s "
                    "with speech and a few quiet moments is best): their own head motion, blinks, teeth and lips. "
                    "Open it like a photo: `avatar render --face NAME.avatar`, or File → Open photo… in the app.",
        epilog="exit codes: 0 ok, 1 failure, 2 bad arguments, 3 unusable video (too short, cuts, several people, "
               "unreadable), 4 no face, 5 cannot write the output, 130 interrupted")
    p.add_argument("video", help="the video (mp4, mov, mkv, webm, ...); a phone's rotation is applied, 4K scaled")
    p.add_argument("-o", "--output", required=True, metavar="NAME.avatar", help="the avatar file to write")
    p.add_argument("--min-seconds", type=float, default=MIN_SECONDS,
                   help=f"refuse videos shorter than this (default {MIN_SECONDS:g}; evaluation builds from less)")
    p.add_argument("--no-calibration", dest="calibrate", action="store_false",
                   help="keep the shared mouth mapping (by default the mouth's width is fitted to the person's own "
                        "speech in the video)")
    p.add_argument("--av-offset", type=float, default=None, metavar="MS",
                   help="the file's sound trails its picture by MS (negative: leads it); by default found from the "
                        "video, where the mouth the sound drives follows the person's clearly better off step")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _fail(message: str, code: int) -> int:
    print(f"avatar make-avatar: {message}", file=sys.stderr)
    return code


def run(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() != AVATAR_SUFFIX:
        return _fail(f"the output must end in {AVATAR_SUFFIX}, got {out.name}", EXIT_USAGE)
    if out.resolve() == Path(args.video).resolve():
        return _fail("the output is the input video", EXIT_USAGE)
    if not out.parent.is_dir():
        return _fail(f"{out.parent}: no such folder", EXIT_CANNOT_WRITE)
    if not 0 < args.min_seconds <= 60:
        return _fail(f"--min-seconds must be between 0 and 60, got {args.min_seconds:g}", EXIT_USAGE)
    if args.av_offset is not None and not abs(args.av_offset) <= MAX_AV_OFFSET_MS:
        return _fail(f"--av-offset must be within +-{MAX_AV_OFFSET_MS} ms, got {args.av_offset:g}", EXIT_USAGE)
    bar = None if args.quiet else tqdm(total=1, unit="frame", file=sys.stderr, leave=False)

    def progress(done, total, stage):
        if bar is not None:
            bar.total = total
            if bar.desc != stage:
                bar.set_description(stage, refresh=False)
            bar.update(done - bar.n)  # tqdm redraws at most every mininterval

    t0 = time.perf_counter()
    try:
        report = build(args.video, out, min_seconds=args.min_seconds, progress=progress,
                       calibrate_mouth=args.calibrate, av_offset_ms=args.av_offset)
    except VideoNoFaceError as e:
        return _fail(str(e), EXIT_NO_FACE)
    except VideoInputError as e:
        return _fail(str(e), EXIT_BAD_INPUT)
    except PermissionError as e:
        return _fail(f"cannot write {out}: {e.strerror}", EXIT_CANNOT_WRITE)
    except OSError as e:
        return _fail(f"cannot write {out}: {e}", EXIT_CANNOT_WRITE)
    finally:
        if bar is not None:
            bar.close()
    notes = f" ({'; '.join(report.notes)})" if report.notes else ""
    print(f"{out}: {report.frames} frames at {report.fps:g} fps{notes}; base loop {report.base_frames} frames from "
          f"{report.base_start_s:.2f} s, {report.library} mouths; {report.mouth_note}; "
          f"{out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK
