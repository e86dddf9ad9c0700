"""`avatar bench faces`: face finding + rig build on a group photo.

The group photo is composed at run time from the shipped and test portraits (public domain), each face scaled to a
given width between the ears, so the figures need no photo of strangers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avatar.face import build_rig
from avatar.face.landmarks import detect_faces
from avatar.face.photo import load_photo
from avatar.paths import assets_dir

PORTRAITS = ("default_face.jpg", "astronaut.jpg")  # assets/, tests/data/face/ (public domain: see their READMEs)
EAR_LEFT, EAR_RIGHT = 234, 454  # FaceMesh points at the cheek's edge, by the ears: a face's width
PATCH_FACTOR = 1.7  # a pasted face's square patch, in face widths (hair and chin inside, little background)
GAP = 16  # pixels between pasted patches
BACKDROP = 96  # grey of the canvas between the faces
BENCH_SIZE = (1280, 886)  # the group photo issue 17 was filed with
BENCH_WIDTHS = (150, 130, 120, 110, 100, 90)  # six faces ~100-150 px between the ears, as in that photo
BENCH_RUNS = 7


@dataclass(frozen=True)
class Placed:
    """Where compose_group put a face: its centre (between the ear points) and width in canvas pixels."""
    cx: float
    cy: float
    width: float


def portrait_paths() -> list[Path]:
    here = Path(__file__).resolve().parents[2]  # the checkout: the second portrait is test data, not shipped
    candidates = [assets_dir() / PORTRAITS[0], here / "tests" / "data" / "face" / PORTRAITS[1]]
    return [p for p in candidates if p.is_file()]


def portrait_faces(paths: list[Path] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(photo, landmarks) of each portrait (one face each)."""
    out = []
    for path in paths or portrait_paths():
        image = load_photo(path)
        out.append((image, detect_faces(image)[0]))
    return out


def face_width(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[EAR_RIGHT, :2] - points[EAR_LEFT, :2]))


def face_patch(image: np.ndarray, points: np.ndarray, width: float, mirror: bool = False) -> np.ndarray:
    """The square patch around a face, scaled so that the face is `width` pixels between the ears."""
    scale = width / face_width(points)
    side = int(round(width * PATCH_FACTOR))
    cx, cy = (points[EAR_LEFT, :2] + points[EAR_RIGHT, :2]) / 2
    m = np.array([[scale, 0.0, side / 2 - scale * cx], [0.0, scale, side / 2 - scale * cy]])
    if scale < 1:  # area averaging needs resize: shrink first, then cut
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        m[:, :2] = np.eye(2)
    patch = cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return patch[:, ::-1].copy() if mirror else patch


def compose_group(faces: list[tuple[np.ndarray, np.ndarray]], widths, size: tuple[int, int],
                  ) -> tuple[np.ndarray, list[Placed]]:
    """A (h, w, 3) canvas of `size` (w, h) with one face per width (the portraits taken in turn, every other one
    mirrored), packed in rows; and where each face went, in the order of `widths`."""
    w, h = size
    canvas = np.full((h, w, 3), BACKDROP, np.uint8)
    placed = []
    x = y = GAP
    row = 0
    for i, width in enumerate(widths):
        image, points = faces[i % len(faces)]
        patch = face_patch(image, points, width, mirror=bool(i // len(faces) % 2))
        side = patch.shape[0]
        if x + side > w:
            x, y, row = GAP, y + row + GAP, 0
        if x + side > w or y + side > h:
            raise ValueError(f"{len(widths)} faces of widths {list(widths)} do not fit on a {w}x{h} canvas.")
        canvas[y:y + side, x:x + side] = patch
        placed.append(Placed(x + side / 2, y + side / 2, float(width)))
        x += side + GAP
        row = max(row, side)
    return canvas, placed


def benchmark(size: tuple[int, int] = BENCH_SIZE, widths=BENCH_WIDTHS, runs: int = BENCH_RUNS) -> dict:
    """Seconds for detect_faces alone and for build_rig (finding + rig build, what opening a photo costs) on a
    composed group photo: median and max of `runs`, after one warm-up (MediaPipe starts while composing)."""
    t0 = time.perf_counter()
    group, placed = compose_group(portrait_faces(), widths, size)
    compose = time.perf_counter() - t0
    found = len(detect_faces(group))  # the warm-up
    finding, opening = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        detect_faces(group)
        finding.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build_rig(group, canvas=512)
        opening.append(time.perf_counter() - t0)
    return {"photo": f"{size[0]}x{size[1]}", "faces placed": len(placed), "faces found": found,
            "composing the photo (incl. MediaPipe's start) s": round(compose, 3),
            "finding median s": round(statistics.median(finding), 3), "finding max s": round(max(finding), 3),
            "finding + rig build median s": round(statistics.median(opening), 3),
            "finding + rig build max s": round(max(opening), 3), "runs": runs}


def run_bench_faces(args: argparse.Namespace) -> int:
    if args.save:
        group, _ = compose_group(portrait_faces(), BENCH_WIDTHS, BENCH_SIZE)
        cv2.imwrite(args.save, cv2.cvtColor(group, cv2.COLOR_RGB2BGR))
    print(json.dumps(benchmark(runs=args.runs), indent=1))
    return 0


def add_cli(bench_subparsers) -> None:
    """`avatar bench faces`."""
    p = bench_subparsers.add_parser("faces", help="finding faces + rig build on a composed 6-face group photo")
    p.add_argument("--runs", type=int, default=BENCH_RUNS)
    p.add_argument("--save", metavar="PNG", help="also write the composed group photo here")
    p.set_defaults(func=run_bench_faces)
