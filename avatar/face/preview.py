"""`avatar preview PHOTO -o sheet.png`: a contact sheet of the face in every viseme, blinking and turning."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from avatar.face import landmarks as lm
from avatar.face.landmarks import NoFaceError
from avatar.face.liveliness import LivelinessConfig
from avatar.face.photo import PhotoError
from avatar.face.render import create_renderer
from avatar.face.rig import build_rig
from avatar.paths import default_photo
from avatar.visemes import PARAM_NAMES, VISEME_POSE, VISEMES

CELL = 256  # pixels per sheet cell
COLUMNS = 6
EXTRA_POSES = (
    ("blink", {"blink": 1.0}), ("half blink", {"blink": 0.5}), ("wink", {"blink_l": 1.0}),
    ("brows up", {"brow_raise": 1.0}), ("turn left", {"head_yaw": -1.0}), ("turn right", {"head_yaw": 1.0}),
    ("nod down", {"head_pitch": 1.0}), ("chin up", {"head_pitch": -1.0}), ("tilt", {"head_roll": 1.0}),
)


def preview_poses() -> list[tuple[str, dict]]:
    poses = [("photo", {})]
    poses += [(v, dict(zip(PARAM_NAMES, VISEME_POSE[v]))) for v in VISEMES if v != "sil"]
    return poses + list(EXTRA_POSES)


def contact_sheet(renderer, poses=None, cell: int = CELL, columns: int = COLUMNS,
                  zoom_mouth: bool = True) -> np.ndarray:
    """RGB sheet: each pose (name, {parameter or extra: value}) rendered, labelled; with zoom_mouth a second row per
    row shows the mouth enlarged."""
    poses = poses or preview_poses()
    h, w = renderer.rig.image.shape[:2]
    cells = []
    for name, params in poses:
        frame = renderer.render_pose(params, 0.0)
        full = cv2.resize(frame, (cell, cell * h // w), interpolation=cv2.INTER_AREA)
        full = _label(full, name)
        if zoom_mouth:
            x0, y0, x1, y1 = _zoom_box(renderer.rig, params)
            crop = frame[y0:y1, x0:x1]
            crop = cv2.resize(crop, (cell, cell * crop.shape[0] // max(crop.shape[1], 1)),
                              interpolation=cv2.INTER_CUBIC)
            full = np.vstack([full, crop])
        cells.append(full)
    ch = max(c.shape[0] for c in cells)
    cells = [np.pad(c, ((0, ch - c.shape[0]), (0, 0), (0, 0))) for c in cells]
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return np.ascontiguousarray(np.vstack(rows))


def _zoom_box(rig, params) -> tuple[int, int, int, int]:
    """The part of the face a pose is about: the eyes for blinks and brows, the face for head turns, else the mouth."""
    g = rig.geometry
    h, w = rig.image.shape[:2]
    if any(k.startswith("head_") for k in params):
        cx, cy = g.points[:, 0].mean(), g.points[:, 1].mean()
        half_w, up, down = 0.75 * g.face_w, 0.75 * g.face_h, 0.75 * g.face_h
    elif any(k.startswith(("blink", "brow")) for k in params):
        (rx, ry), (lx, ly) = lm.eye_centers(g.points)
        cx, cy = (rx + lx) / 2, (ry + ly) / 2
        half_w, up, down = 0.95 * g.iod, 0.55 * g.iod, 0.45 * g.iod
    else:
        cx, cy = g.mouth_center
        half_w, up, down = 1.1 * g.W, 0.9 * g.W, 1.3 * g.W
    x0, x1 = int(max(cx - half_w, 0)), int(min(cx + half_w, w))
    y0, y1 = int(max(cy - up, 0)), int(min(cy + down, h))
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def run_preview(args: argparse.Namespace) -> int:
    photo = args.photo or default_photo()
    canvas = None if args.canvas == 0 else args.canvas
    try:
        rig = build_rig(photo, canvas=canvas, face_index=args.face_index)
    except (PhotoError, NoFaceError) as e:
        print(f"avatar preview: {e}")
        return 2
    renderer = create_renderer(rig, device=args.device, liveliness=LivelinessConfig(enabled=False))
    sheet = contact_sheet(renderer)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet[..., ::-1]):
        print(f"avatar preview: cannot write {out} (use a .png or .jpg name in a writable folder)")
        return 2
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {renderer.name} renderer)")
    return 0


def add_cli(subparsers) -> None:
    """Adds `preview` to the `avatar` command."""
    p = subparsers.add_parser("preview", help="contact sheet of a photo in every viseme, blink and head pose")
    p.add_argument("photo", nargs="?", help="face photo (default: the shipped default face)")
    p.add_argument("-o", "--output", default="preview.png", help="output image (PNG/JPEG)")
    p.add_argument("--canvas", type=int, default=512, help="square portrait crop size; 0 = the whole photo")
    p.add_argument("--face-index", type=int, default=0, help="which face when there are several (0 = largest)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "torch-cpu"))
    p.set_defaults(func=run_preview)
