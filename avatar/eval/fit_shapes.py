"""`avatar eval fit-shapes CLIP... [--model live] [--out JSON]`: the mouth mapping fitted to real mouths.

The network hands the renderer four parameters (jaw_open, lip_spread, lip_round, lip_press); avatar.face.shapes maps
them onto the rig's motions. This command measures how far the real mouth opens and widens on each frame of real
talking clips, how far the rig's motions open and widen the rendered mouth of the same face, and fits the mapping so
the rendered mouth moves as the real one did:

1. **Real mouths.** FaceMesh (video mode) on every frame, eye-aligned exactly as `avatar eval video` measures
   (avatar.eval.video): inner-lip opening |13-14| and mouth width |61-291|, inter-ocular units.
2. **The network.** The clip's audio through the engine and the offline path's own smoothing and sampling
   (avatar.live.offline.render_offline), so frame k gets exactly the parameters `avatar render` would draw there.
3. **The rig's response.** The clip's first frame as the photo (the renderer `avatar render` builds), each mouth
   motion rendered alone at full weight and FaceMesh (photo mode) re-detecting the result: opening and width per
   unit of each motion's weight, on this face.
4. **The fit**, pooled over the clips, each clip centred on its own mean (the photo's rest differs per clip):
   - *the rounding floor*: the network's lip_round on its quiet frames (jaw_open under QUIET_JAW, lips not pressed),
     its QUIET_ROUND_PCT percentile; the width reads lip_round from there up (ShapeMap.round_from), so a silent
     mouth is the photo's, not pursed;
   - *width*: the real width's least-squares direction in the four parameters and the squares of two (which of
     them the real width follows; the network's lip_spread barely does, and not linearly), each parameter's share
     given to the spread motion where it widens and to the rounding motion where it narrows (divided by the
     motion's measured width per unit weight);
   - *sizes*: the width's size and one gain on the jaw (the lower-lip drop follows it) are set by drawing every
     frame under the mapping and re-detecting it, until the rendered ranges (p95 - p5) of opening and width equal
     the real ones (the rig's response is not linear: FaceMesh sees a small opening as larger, motions interact).

Each network gets its own table (its quiet floor and its parameters' relation to the width are its own; the
renderer picks the table by the network driving it, avatar.face.shapes.shapes_for). Only GRID clips may shape
shipped files (their licence; ../shared/data/video/README.md): the shipped tables are
`avatar eval fit-shapes ../shared/data/video/*.mpg [--model live]`, and a test reproduces both from those clips.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from avatar.engine import EngineError, create_engine
from avatar.eval import video as ruler
from avatar.face import shapes as shape_map
from avatar.face.shapes import WIDTH_FEATURES, width_features
from avatar.face.assemble import open_renderer
from avatar.face.landmarks import pinned_solution
from avatar.face.rig import HEAD_FIELDS, LOCAL_FIELDS
from avatar.live.offline import render_offline
from avatar.visemes import PARAM_NAMES

MOTIONS = ("jaw", "lip_raise", "lip_drop", "lip_spread", "lip_round")  # the rig motions whose response is measured
PROBE_WEIGHT = 1.0  # each motion is rendered alone at this weight (the response is read per unit weight)
MIN_FACES = 0.8  # a clip whose real face FaceMesh finds on fewer frames than this share is left out
AMPLITUDE_LO, AMPLITUDE_HI = 5, 95  # the range of motion the fit matches: p95 - p5, as the ruler's amplitude
DECIMALS = 4  # the shipped table's precision
JAW, ROUND, PRESS = (PARAM_NAMES.index(name) for name in ("jaw_open", "lip_round", "lip_press"))  # params columns
QUIET_JAW = 0.05  # frames whose network jaw_open is under this (and lips not pressed) are the network's quiet
QUIET_ROUND_PCT = 90  # ShapeMap.round_from: this percentile of the network's lip_round on its quiet frames, pooled
# (GRID: 0.068 median, 0.136 here). Rounding under it is the network's floor, not the lips rounding
FIT_ROUNDS = 4  # render-and-measure rounds setting the jaw gain and width size (the ranges settle within 2 %)


class FitError(ValueError):
    """Clips the fit cannot use, with a sentence a person can act on."""


@dataclass
class ClipSamples:
    """One clip's frames: the real mouth and the parameters the renderer gets there, and the rig's response."""
    name: str
    opening: np.ndarray  # (N,) real inner-lip opening, inter-ocular units
    width: np.ndarray  # (N,) real mouth width
    params: np.ndarray  # (N, 4) the network's smoothed parameters at each frame, PARAM_NAMES order
    response: dict  # motion -> (opening, width) change per unit weight on this face; "rest" -> (opening, width)
    renderer: object = None  # the renderer `avatar render` builds from the clip's first frame


# ---- measuring ----

class _Recorder:
    """A stand-in renderer for render_offline: keeps the parameters each frame is drawn with, draws nothing."""

    def __init__(self):
        self.rows = []

    def render(self, params, t: float = 0.0) -> np.ndarray:
        self.rows.append(np.array(params, np.float32))
        return np.zeros((16, 16, 3), np.uint8)


def frame_params(clip: ruler.Clip, engine, workdir: Path) -> np.ndarray:
    """(N, 4): the parameters `avatar render` draws on each of the clip's frames (its smoothing and sampling)."""
    recorder = _Recorder()
    render_offline(clip.audio, engine, recorder, workdir / "params.mp4", fps=max(1, round(clip.fps)))
    return np.array(recorder.rows, np.float64).reshape(-1, len(PARAM_NAMES))


def _still_mesh():
    import mediapipe as mp  # 3 s to import; only the measuring needs it

    return pinned_solution(mp.solutions.face_mesh.FaceMesh)(static_image_mode=True, max_num_faces=1,
                                                            refine_landmarks=True, min_detection_confidence=0.5)


def mouth_size(mesh, image: np.ndarray) -> tuple[float, float]:
    """(opening, width) of the one face in an image, eye-aligned as the ruler measures; NaN without a face."""
    result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        return float("nan"), float("nan")
    h, w = image.shape[:2]
    return ruler.opening_and_width(ruler.align(ruler.mesh_points(result, w, h)))


def rig_response(renderer, mesh) -> dict:
    """Each motion alone at PROBE_WEIGHT, re-detected: (opening, width) change per unit weight; and the rest."""
    head = np.zeros(len(HEAD_FIELDS), np.float32)
    rest = mouth_size(mesh, renderer.render_weights(np.zeros(len(LOCAL_FIELDS), np.float32), head))
    out = {"rest": rest}
    for motion in MOTIONS:
        local = np.zeros(len(LOCAL_FIELDS), np.float32)
        local[LOCAL_FIELDS.index(motion)] = PROBE_WEIGHT
        o, w = mouth_size(mesh, renderer.render_weights(local, head))
        out[motion] = ((o - rest[0]) / PROBE_WEIGHT, (w - rest[1]) / PROBE_WEIGHT)
    return out


def measure_clip(path: Path, engine, mesh) -> ClipSamples:
    clip = ruler.read_clip(path)
    real = ruler.measure_mouths(ruler.iter_frames(clip.path))
    with tempfile.TemporaryDirectory(prefix="avatar-fit-") as tmp:
        params = frame_params(clip, engine, Path(tmp))
        photo = Path(tmp) / "first_frame.png"
        cv2.imwrite(str(photo), cv2.cvtColor(clip.first_frame, cv2.COLOR_RGB2BGR))
        renderer = open_renderer(photo, liveliness={})
        renderer.shapes = shape_map.HAND_SHAPES  # the response of the rig itself, whatever table is installed
        response = rig_response(renderer, mesh)
    n = min(len(real.opening), len(params))
    return ClipSamples(Path(path).name, real.opening[:n], real.width[:n], params[:n], response, renderer)


# ---- fitting ----

def _amplitude(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, AMPLITUDE_HI) - np.percentile(x, AMPLITUDE_LO)) if len(x) else float("nan")


def _usable(c: ClipSamples) -> np.ndarray:
    return np.isfinite(c.opening) & np.isfinite(c.width) & np.isfinite(c.params).all(axis=1)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0)


def quiet_round(clips: list[ClipSamples], press_closes_from: float) -> float:
    """The network's lip_round floor: QUIET_ROUND_PCT of it on the frames where its jaw_open is under QUIET_JAW and
    its lips are not pressed, pooled over the clips (0 when there are none)."""
    rounds = []
    for c in clips:
        p = c.params[_usable(c)]
        quiet = (p[:, JAW] < QUIET_JAW) & (p[:, PRESS] < press_closes_from)
        rounds.append(p[quiet, ROUND])
    rounds = np.concatenate(rounds) if rounds else np.zeros(0)
    return float(np.percentile(rounds, QUIET_ROUND_PCT)) if len(rounds) else 0.0


def width_direction(clips: list[ClipSamples], round_from: float = 0.0) -> tuple[np.ndarray, float]:
    """Which parameters the real width follows: least squares of each clip's centred real width on its centred
    width_features, pooled over the clips -> ((len(WIDTH_FEATURES),) IOD of width per unit feature, r of the fit)."""
    xs, ys = [], []
    for c in clips:
        ok = _usable(c)
        xs.append(_centred(width_features(c.params[ok], round_from))), ys.append(_centred(c.width[ok]))
    x, y = np.vstack(xs), np.concatenate(ys)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef, float(np.corrcoef(x @ coef, y)[0, 1])


def split_width(coef: np.ndarray, clips: list[ClipSamples]) -> dict:
    """Width drive (IOD per unit width feature) -> ShapeMap fields: a parameter that widens goes to the spread
    motion, one that narrows to the rounding motion, each divided by that motion's measured width per unit weight.
    A parameter with a square too goes, both shares, to the motion its net pull over 0..1 goes to (the mean of
    c x + c2 x^2 there: c / 2 + c2 / 3)."""
    per_spread = float(np.median([c.response["lip_spread"][1] for c in clips]))
    per_round = float(np.median([-c.response["lip_round"][1] for c in clips]))
    if per_spread <= 0 or per_round <= 0:
        raise FitError("the rig's spread / round motions did not widen / narrow the re-detected mouth: "
                       f"{per_spread:.4f} / {-per_round:.4f} IOD per unit weight")
    drive = dict(zip(WIDTH_FEATURES, map(float, coef)))
    fields = {}
    for name in PARAM_NAMES:
        shares = {name: drive[name]}
        if f"{name}_sq" in drive:
            shares[f"{name}_sq"] = drive[f"{name}_sq"]
        widens = drive[name] / 2 + drive.get(f"{name}_sq", 0.0) / 3 > 0
        for feature, c in shares.items():
            fields[f"spread_per_{feature}"] = c / per_spread if widens else 0.0
            fields[f"round_per_{feature}"] = 0.0 if widens else -c / per_round + 0.0  # (+ 0.0: no "-0.0")
    return fields


def local_weights(params: np.ndarray, shapes: shape_map.ShapeMap) -> tuple[np.ndarray, np.ndarray]:
    """(N, len(LOCAL_FIELDS)) rig weights of parameter rows under a mapping (no brows, no liveliness), and the
    clipped rows they were drawn from (the sound the interior follows)."""
    sound = np.clip(np.nan_to_num(params), 0, 1).astype(np.float32)
    rows = [shape_map.rig_weights(*p, shapes=shapes) for p in sound.tolist()]
    return np.array([[r.get(k, 0.0) for k in LOCAL_FIELDS] for r in rows], np.float32), sound


def rendered_ranges(clips: list[ClipSamples], shapes: shape_map.ShapeMap) -> tuple[float, float]:
    """Every clip's frames drawn under a mapping and measured as the ruler measures (FaceMesh, video mode): the
    mean over the clips of the rendered over the real range (p95 - p5) of the opening and of the width."""
    head = np.zeros(len(HEAD_FIELDS), np.float32)
    opening, width = [], []
    for c in clips:
        c.renderer.shapes = shapes  # its interior drawn with this mapping, not the installed one
        weights, sound = local_weights(c.params, shapes)
        frames = (c.renderer.render_weights(w, head, None, p) for w, p in zip(weights, sound))
        drawn = ruler.measure_mouths(frames)
        ok = _usable(c)
        opening.append(_amplitude(drawn.opening[ok]) / _amplitude(c.opening[ok]))
        width.append(_amplitude(drawn.width[ok]) / _amplitude(c.width[ok]))
    return float(np.nanmean(opening)), float(np.nanmean(width))


def fit(clips: list[ClipSamples], base: shape_map.ShapeMap = shape_map.HAND_SHAPES,
        rounds: int = FIT_ROUNDS, progress=None) -> tuple[dict, dict]:
    """(the fitted ShapeMap fields, the evidence) from measured clips (with their renderers).

    The width's direction in the parameters is a least-squares fit; its size and the jaw's gain are then set by
    drawing every frame and re-detecting it, so the rendered ranges of opening and width equal the real ones
    (the rig's response is not linear: FaceMesh sees a small opening as larger, motions interact)."""
    clips = [c for c in clips if _usable(c).mean() >= MIN_FACES]
    if not clips:
        raise FitError("no clip had a face on enough frames to fit the mouth")
    round_from = round(quiet_round(clips, base.press_closes_from), DECIMALS)
    coef, r = width_direction(clips, round_from)
    unit = split_width(coef, clips)
    base = replace(base, round_from=round_from)  # drawn as the table will draw it
    gain, scale, history = base.jaw_gain, 1.0, []
    for _ in range(rounds):
        shapes = replace(base, jaw_gain=gain, **{k: v * scale for k, v in unit.items()})
        o, w = rendered_ranges(clips, shapes)
        history.append({"jaw_gain": gain, "width_scale": scale, "opening_range_ratio": o, "width_range_ratio": w})
        if progress:
            progress(history[-1])
        gain, scale = gain / max(o, 1e-3), scale / max(w, 1e-3)  # each range grows about in proportion
    fields = {"jaw_gain": gain, "round_from": round_from, **{k: v * scale for k, v in unit.items()}}
    fields = {k: round(float(v), DECIMALS) for k, v in fields.items()}
    evidence = {"width_r_in_fit": round(r, DECIMALS),
                "width_least_squares_iod": dict(zip(WIDTH_FEATURES, np.round(coef, DECIMALS).tolist())),
                "rounds": history, "clips": [c.name for c in clips],
                "rig_response": {c.name: {k: np.round(v, DECIMALS).tolist() for k, v in c.response.items()}
                                 for c in clips}}
    return fields, evidence


def table(fields: dict, evidence: dict, network: str) -> dict:
    return {"about": "avatar.face.shapes.ShapeMap fields fitted by `avatar eval fit-shapes` to real mouths "
                     "(GRID audio-visual corpus, Cooke, Barker, Cunningham, Shao 2006, CC BY 4.0)",
            "network": network, "fields": fields, "evidence": evidence}


# ---- command ----

def measure(paths: list[Path], engine, progress=None) -> list[ClipSamples]:
    out = []
    with _still_mesh() as mesh:
        for path in paths:
            out.append(measure_clip(path, engine, mesh))
            if progress:
                progress(out[-1])
    return out


def run(args) -> int:
    try:
        engine = create_engine(args.backend, ruler.model_path(args.model))
    except (EngineError, ValueError) as e:
        print(f"avatar eval fit-shapes: {e}", file=sys.stderr)
        return 1
    try:
        samples = measure([Path(c) for c in args.clips], engine,
                          progress=lambda c: print(f"{c.name}: {len(c.opening)} frames", file=sys.stderr))
        fields, evidence = fit(samples, progress=lambda h: print(
            "jaw gain {jaw_gain:.3f}, width scale {width_scale:.3f}: rendered / real range, opening "
            "{opening_range_ratio:.3f}, width {width_range_ratio:.3f}".format(**h), file=sys.stderr))
    except (ruler.ClipError, FitError) as e:
        print(f"avatar eval fit-shapes: {e}", file=sys.stderr)
        return 3
    text = json.dumps(table(fields, evidence, engine.model_name), indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps(fields, indent=1))
    return 0
