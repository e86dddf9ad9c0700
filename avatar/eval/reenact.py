"""`avatar eval reenact CLIP...`: self-reenactment of the video avatar, beside the photo renderer.

For each real talking clip: a video avatar is built from its first BUILD_SHARE (60 %) of frames; its last 40 %'s
audio drives, through the shipped lip-sync model and `avatar render`'s offline path, both the video avatar and
the photo renderer (the clip's first frame as the photo, as `avatar eval video` does); each rendering is held
against the real last 40 % by the ruler of avatar.eval.video (FaceMesh in video mode on all three, eye-aligned):

- PSNR and SSIM of the eye-aligned mouth crop (the ruler's montage crop, centred on the real frames' mean mouth
  centre for all three sequences alike), frame by frame;
- the inner-lip contour distance (inter-ocular units x 1000) and its frozen-mouth baseline;
- the inner-mouth colour difference (CIELAB ΔE) on the 20 % most open real frames;
- the opening's r against the real one;
- the flicker ratio: the mouth crop's mean change from frame to frame over the real one's (1: as lively).

Montages (real | video avatar | photo) go to --out; they are made of the clips' pixels: never commit them.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from avatar.audio import SAMPLE_RATE
from avatar.eval.video import (CONTOUR_SCALE, OPEN_SHARE, ClipError, MouthMeasure, amplitude, command_setup,
                               contour_distance, delta_e, iter_frames, measure_mouths, model_path, montage_frames, pearson,
                               read_clip, render_clip, save_montage)
from avatar.face.video_avatar import VideoAvatarError, fileformat
from avatar.face.video_avatar.build import build
from avatar.face.video_avatar.renderer import open_video_avatar
from avatar.live.offline import render_offline

MIN_BUILD_SECONDS = 0.5  # the GRID clips are 3 s: the avatar is built from 1.8 s (the CLI refuses under 3 s)
BUILD_SHARE = 0.6  # the avatar is built from this share of the clip; the rest is the truth it is held against
SSIM_SIGMA = 1.5  # SSIM's Gaussian window (Wang et al. 2004)
SSIM_C1, SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
RENDERERS = ("video_avatar", "photo")
KEYS = ("psnr_db", "ssim", "inner_lip_distance", "inner_mouth_delta_e", "opening_r", "width_r", "flicker_ratio")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two RGB images (on their luma), Gaussian window."""
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    blur = lambda z: cv2.GaussianBlur(z, (0, 0), SSIM_SIGMA)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    return float(s.mean())


def frame_change(crops: dict, frames: list[int]) -> float:
    """Mean absolute change of the mouth crop from one frame to the next (0..255): how much the mouth moves or
    flickers; a rendering's over the real one's is its flicker ratio (1: as lively as the real mouth)."""
    steps = [np.abs(crops[k].astype(np.float32) - crops[k - 1].astype(np.float32)).mean()
             for k in frames if k - 1 in crops and k in crops]
    return float(np.mean(steps)) if steps else float("nan")


def compare(real: MouthMeasure, rendered: MouthMeasure) -> dict:
    """The figures of one rendering against the real tail (frames paired by index)."""
    n = min(len(real.opening), len(rendered.opening))
    both = [k for k in range(n) if k in real.crops and k in rendered.crops]
    ps = [psnr(real.crops[k], rendered.crops[k]) for k in both]
    ss = [ssim(real.crops[k], rendered.crops[k]) for k in both]
    dist = contour_distance(real.inner[:n], rendered.inner[:n])
    ro = real.opening[:n]
    open_cut = np.nanpercentile(ro, 100 * (1 - OPEN_SHARE))
    most_open = np.isfinite(ro) & (ro >= open_cut)
    de = delta_e(real.inner_lab[:n][most_open], rendered.inner_lab[:n][most_open])
    return {"psnr_db": float(np.mean(ps)) if ps else float("nan"), "ssim": float(np.mean(ss)) if ss else float("nan"),
            "inner_lip_distance": float(np.nanmean(dist) * CONTOUR_SCALE),
            "inner_mouth_delta_e": float(np.nanmean(de)) if np.isfinite(de).any() else float("nan"),
            "opening_r": pearson(rendered.opening[:n], ro),
            "opening_amplitude_ratio": amplitude(rendered.opening[:n]) / amplitude(ro),
            "width_r": pearson(rendered.width[:n], real.width[:n]),
            "width_amplitude_ratio": amplitude(rendered.width[:n]) / amplitude(real.width[:n]),
            "flicker_ratio": frame_change(rendered.crops, both) / max(frame_change(real.crops, both), 1e-9),
            "frames": len(both)}


def reenact_clip(path: str | Path, engine, out_dir: Path | None = None, av_offset_ms: float | None = None,
                 calibrate_mouth: bool = True, whole_sound: bool = False) -> dict:
    """One clip's figures. whole_sound: the renderers are driven by the whole clip's sound and only their tail is
    scored (the network's state carried from the clip's start, as in continuous speech); by default the tail's
    sound alone drives them, from a fresh state, mid-sentence."""
    clip = read_clip(path, av_offset_ms or 0.0)
    n = len(clip.frame_times)
    split = int(round(BUILD_SHARE * n))
    fps = clip.fps
    tail_audio = clip.audio[int(round(split / fps * SAMPLE_RATE)):]
    with tempfile.TemporaryDirectory(prefix="avatar-reenact-") as tmp:
        tmp = Path(tmp)
        avatar = tmp / "clip.avatar"
        report = build(clip.path, avatar, min_seconds=MIN_BUILD_SECONDS, stop=split, av_offset_ms=av_offset_ms,
                       calibrate_mouth=calibrate_mouth)
        calibration = fileformat.read_meta(avatar).get("mouth_calibration") or {}
        tail = n - split
        # the real tail, measured once to find where its mouths sit (every crop is centred there), then cropped
        centre = np.nanmean(measure_mouths(itertools.islice(iter_frames(clip.path), split, None)).centre, axis=0)
        real = measure_mouths(itertools.islice(iter_frames(clip.path), split, None), crop_at=set(range(tail)),
                              crop_centre=centre)
        renders = {"video_avatar": tmp / "video_avatar.mp4"}
        drive = clip.audio if whole_sound else tail_audio
        skip = split if whole_sound else 0  # rendered frames before the tail's first
        render_offline(drive, engine, open_video_avatar(avatar), renders["video_avatar"], fps=max(1, round(fps)))
        photo_clip = replace(clip, audio=drive)  # the clip's first frame as the photo (avatar eval video)
        renders["photo"] = render_clip(photo_clip, tmp, engine)
        measured = {name: measure_mouths(itertools.islice(iter_frames(mp4), skip, None), crop_at=set(range(tail)),
                                         crop_centre=centre)
                    for name, mp4 in renders.items()}
    figures = {name: compare(real, m) for name, m in measured.items()}
    valid = [c for c in real.inner if np.isfinite(c).all()]
    frozen = contour_distance(real.inner, valid[0][None]) if valid else np.full(1, np.nan)
    result = {"clip": Path(path).name, "frames": n, "fps": fps, "build_frames": split,
              "base_loop_frames": report.base_frames, "library": report.library, "av_offset_ms": av_offset_ms or 0.0,
              "sound_offset_found": report.sound_offset,
              "whole_sound": whole_sound,
              "calibration": {name: entry.get("evidence") for name, entry in calibration.items()},
              "frozen_inner_lip_distance": float(np.nanmean(frozen) * CONTOUR_SCALE), **figures}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        picks = montage_frames(real.opening)
        side = {k: np.hstack([measured["video_avatar"].crops[k], np.full((real.crops[k].shape[0], 4, 3), 255, np.uint8),
                              measured["photo"].crops[k]])
                for k in picks if k in measured["video_avatar"].crops and k in measured["photo"].crops}
        save_montage(out_dir / f"{Path(path).stem}_reenact.png", real.crops, side, picks, fps)
    return result


def _fmt(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}" if abs(x) < 10 \
        else f"{x:.1f}"


def report_table(results: list[dict]) -> str:
    head = ["clip", "build frames"] + [f"{k} ({r})" for k in KEYS for r in ("video", "photo")] + ["frozen dist"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [[r["clip"], str(r["build_frames"])] + [_fmt(r[name][k]) for k in KEYS for name in RENDERERS]
            + [_fmt(r["frozen_inner_lip_distance"])] for r in results]
    if len(results) > 1:
        mean = [f"mean of {len(results)}", ""] + [
            _fmt(float(np.nanmean([r[name][k] for r in results]))) for k in KEYS for name in RENDERERS] + [
            _fmt(float(np.nanmean([r["frozen_inner_lip_distance"] for r in results])))]
        rows.append(mean)
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run(args) -> int:
    setup = command_setup(args, "avatar eval reenact")
    if isinstance(setup, int):
        return setup
    offsets, engine, out_dir = setup
    model = model_path(args.model)
    results = []
    for clip in args.clips:
        try:
            results.append(reenact_clip(clip, engine, out_dir, offsets.get(Path(clip).name),
                                        getattr(args, "calibrate", True), getattr(args, "whole_sound", False)))
        except (ClipError, VideoAvatarError) as e:
            print(f"avatar eval reenact: {e}", file=sys.stderr)
            return 3
        print(report_table(results[-1:]).splitlines()[-1], file=sys.stderr)
    calibration = "the person's own mouth width" if getattr(args, "calibrate", True) else "the shared mapping only"
    driven = "the whole clip's sound, the tail scored" if getattr(args, "whole_sound", False) else \
        "the tail's sound from a fresh state"
    text = f"model: {Path(model).name}; video avatars with {calibration}; driven by {driven}\n\n" + \
        report_table(results)
    print(text)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "reenact.md").write_text(text + "\n")
        (out_dir / "reenact.json").write_text(json.dumps({"model": model, "clips": results}, indent=1))
    return 0
