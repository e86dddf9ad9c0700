"""The mouth-parameter head fitted to real faces: GRID sentences, their mouths measured by FaceMesh.

    avatar train real-head MODEL --data SHARDS... [--clips ../shared/data/video] [--context K] [--head-from M]
                           -o OUT.safetensors

The recurrent network already knows more about a real mouth than its four mouth parameters say: a ridge readout of
its top-layer state follows the real GRID openings (held-out clips) far better than its own `jaw_open`. So this
keeps the network (input layer, GRU, viseme head) as it is and refits only `param_head` (Linear(hidden -> 4) and a
sigmoid), on two kinds of frames at once:

- **real** frames: every frame of speech in the GRID clips (pocketsphinx alignment, as `measure-targets` does),
  the targets measured on the real mouth: jaw_open = the opening normalised per speaker (1 = the speaker's
  95th-percentile opening in speech), lip_spread / lip_round from the width relative to the speaker's median
  (real_mouths.SPREAD_FULL / ROUND_FULL). Silence is not taken from the clips (GRID speakers breathe through an
  open mouth before a sentence, which no sound foretells): it stays the synthetic data's business;
- **synthetic** frames from training shards, where the new head must say what the old one said (distillation):
  silence closed, p/b/m closed, music and noise closed where the network learnt that, viseme-like shapes elsewhere;

plus a pull towards the old weights. `lip_press` is not refit (real closures are the synthetic labels' job).
With `--context K` the new head reads the top-layer states of the K frames before and after the frame it describes
too (dims.head_context; the output delay grows by K frames); it starts as the old head on the centre frame, zero
elsewhere. `--head-from M` starts from M's head instead (the same core: e.g. the network before any real-face fit,
so that the held-out figures are not fitted to the clips through the starting head).
Held-out check: leave-one-clip-out over the GRID clips (the ruler's r at lag 0, every frame, as `avatar eval
video` computes it), printed before the final fit on all of them. Only GRID numbers shape the weights (CC BY 4.0,
credited in the model card); the other clips are for measuring only.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.audio import HOP_LENGTH
from avatar.eval.video import pearson, track_times
from avatar.visemes import PARAM_NAMES, VISEME_INDEX, VISEME_POSE
from .real_mouths import DEFAULT_CLIPS, ROUND_FULL, SPREAD_FULL, MeasuredClip, _in_speech, grid_clips, measure_clip

REFIT_PARAMS = ("jaw_open", "lip_spread", "lip_round")  # lip_press keeps its head row
REAL_WEIGHT = 1.0  # mean squared error on the real speech frames
DISTILL_WEIGHT = 1.0  # mean squared error against the old head on the synthetic frames
PRIOR_WEIGHT = 1e-2  # squared distance of the head's weights from the old ones (1e-4..1e-2 tried: held-out best)
STEPS = 400
LEARNING_RATE = 0.02
SYNTHETIC_FRAMES = 120_000  # synthetic frames kept for the distillation (20 min of audio)
SYNTHETIC_BATCH = 4096  # of which each step sees this many (the real frames, ~1,000, are all used every step)
SEED = 0
SILENCE_CLOSED = False  # synthetic silence frames: the old head's output (False) or the closed label (True)
SCORES = ("opening", "width", "signed_width")  # held_out_scores' figures, in report order


@dataclass
class RealClip:
    name: str
    frame_times: np.ndarray  # (N,) s, the video's frames
    opening: np.ndarray  # (N,) the real opening (per speaker normalised: r, the held-out score, does not see it)
    width: np.ndarray  # (N,) the real width relative to the speaker's median
    hidden: np.ndarray  # (N, (2k+1) H) the network's top-layer states around each video frame (k: head context)
    targets: np.ndarray  # (N, len(REFIT_PARAMS)) measured targets (NaN outside speech)


def top_states(model, features: np.ndarray):
    """The top GRU layer's output (T, H) for log-mel frames (T, n_mels), run from a fresh (settled) state (torch,
    no grad)."""
    import torch

    x = model.normalise(torch.from_numpy(np.asarray(features, np.float32))[None])
    with torch.no_grad():
        y, _ = model.rnn(model.input(x), model.core_start())
    return y[0]


def start_row(model) -> np.ndarray:
    """(H,): what the head reads before a stream's first row (the engine's empty context: the settled core)."""
    return model.core_settled[0, -1, 0].detach().cpu().numpy()


def window_rows(states: np.ndarray, first: int, n: int, context: int, before: np.ndarray | None = None) -> np.ndarray:
    """(n, (2k+1) H): row i the states states[first + i - k .. first + i + k] side by side, oldest first, as the
    head reads them (rows before the stream's first are `before`, the engine's empty context: start_row; zero
    when not given). k = context."""
    pad = np.zeros((context, states.shape[1]), states.dtype)
    if before is not None:
        pad[:] = before
    padded = np.concatenate([pad, states])
    return np.concatenate([padded[first + j:first + j + n] for j in range(2 * context + 1)], 1)


def hidden_rows(model, audio: np.ndarray, context: int = 0) -> np.ndarray:
    """The head's input per 100 Hz feature frame of a whole 16 kHz signal: the top-layer GRU outputs around it,
    `context` frames either side (row i describes frame i: the core's look-ahead undone by padding silence at the
    end), run from a fresh state."""
    from avatar.audio import log_mel

    la = model.dims.core_lookahead
    padded = np.concatenate([audio.astype(np.float32), np.zeros((la + context) * HOP_LENGTH, np.float32)])
    states = top_states(model, log_mel(padded)).numpy().astype(np.float64)
    return window_rows(states, la, len(states) - la - context, context, start_row(model))


def expand_head(weight: np.ndarray, n_hidden: int, context: int) -> np.ndarray:
    """A head's weights (P, (2k0+1) H) read over a wider window of 2 context + 1 frames: its own taps in the
    middle, zero on the new ones (the same outputs)."""
    k0 = (weight.shape[1] // n_hidden - 1) // 2
    if context < k0:
        raise ValueError(f"the head already reads {k0} frames either side; cannot narrow it to {context}")
    out = np.zeros((weight.shape[0], 2 * context + 1, n_hidden), weight.dtype)
    out[:, context - k0:context + k0 + 1] = weight.reshape(weight.shape[0], 2 * k0 + 1, n_hidden)
    return out.reshape(weight.shape[0], -1)


def measured_targets(clip: MeasuredClip) -> np.ndarray:
    """(N, 3) jaw_open, lip_spread, lip_round measured on a clip's real mouth; NaN outside speech."""
    jaw = np.clip(clip.opening, 0.0, 1.0)
    spread = np.clip(clip.width / SPREAD_FULL, 0.0, 1.0)
    rounding = np.clip(-clip.width / ROUND_FULL, 0.0, 1.0)
    out = np.stack([jaw, spread, rounding], 1)
    speech = _in_speech(clip.frame_ms, clip.units) & np.isfinite(clip.opening)
    out[~speech] = np.nan
    return out


def at_frames(rows: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """100 Hz rows read at the video's frame times (linear between row centres)."""
    t = track_times(len(rows))
    return np.stack([np.interp(frame_times, t, rows[:, j]) for j in range(rows.shape[1])], 1)


def real_clip(model, path: Path, transcript: str, aligner, context: int = 0) -> RealClip:
    from avatar.eval.video import read_clip

    clip = read_clip(path)  # decoded once: its audio is both aligned and run through the network
    measured = measure_clip(path, transcript, aligner, clip)
    hidden = hidden_rows(model, clip.audio, context)
    times = measured.frame_ms / 1000.0
    return RealClip(path.name, times, measured.opening, measured.width, at_frames(hidden, times),
                    measured_targets(measured))


def synthetic_frames(model, folders, weight0: np.ndarray, bias0: np.ndarray, context: int = 0,
                     n_frames: int = SYNTHETIC_FRAMES, seed: int = SEED, silence_closed: bool = SILENCE_CLOSED):
    """The head's inputs (N, (2k+1) H: top-layer states around each frame, k = context) and its targets
    (N, n_params, probabilities) on synthetic training audio: what the old head (weight0 over the same window,
    bias0) said; with `silence_closed`, the closed rest pose on every frame labelled silence (music, noise and
    pauses: the label, not the old head's guess, is kept there)."""
    from .fit import delayed, load_stream

    stream = delayed(load_stream(folders), model.dims.core_lookahead)  # labels of what each core row describes
    rng = np.random.default_rng(seed)
    segment = min(6000, len(stream))  # 1 min pieces from across the whole set, each from a fresh state
    pieces = max(min(n_frames, len(stream)) // segment, 1)
    starts = rng.choice(len(stream) - segment + 1, size=pieces, replace=False)
    xs, silent = [], []
    for s in sorted(starts):
        y = top_states(model, stream.features[s:s + segment]).numpy()
        xs.append(window_rows(y, 0, segment - context, context, start_row(model)).astype(np.float32))  # rows 0..
        silent.append(stream.visemes[s:s + segment - context] == VISEME_INDEX["sil"])
    x = np.concatenate(xs)
    targets = 1.0 / (1.0 + np.exp(-(x @ weight0.T.astype(np.float32) + bias0.astype(np.float32))))
    targets = targets.astype(np.float64)
    if silence_closed:
        targets[np.concatenate(silent)] = VISEME_POSE["sil"]
    return x, targets


def fit_head(weight0: np.ndarray, bias0: np.ndarray, real_x: np.ndarray, real_y: np.ndarray,
             syn_x: np.ndarray, syn_targets: np.ndarray, prior_weight: float = PRIOR_WEIGHT,
             distill_weight: float = DISTILL_WEIGHT, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Refit the head rows of REFIT_PARAMS: real targets on real frames, `syn_targets` (N, n_params: the old
    outputs, or the closed pose in silence) on synthetic frames."""
    import torch

    rows = [PARAM_NAMES.index(p) for p in REFIT_PARAMS]
    w = torch.tensor(weight0[rows], requires_grad=True)
    b = torch.tensor(bias0[rows], requires_grad=True)
    w0 = torch.tensor(weight0[rows])
    rx, ry = torch.tensor(real_x, dtype=w.dtype), torch.tensor(real_y)
    known = torch.isfinite(ry)
    ry = torch.nan_to_num(ry)
    sx, sy = torch.from_numpy(syn_x), torch.tensor(syn_targets[:, rows])
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam([w, b], lr=LEARNING_RATE)
    for _ in range(steps):
        opt.zero_grad()
        pick = torch.randint(len(sx), (min(SYNTHETIC_BATCH, len(sx)),), generator=gen)
        real = ((torch.sigmoid(rx @ w.T + b) - ry) ** 2)[known].mean()
        synthetic = ((torch.sigmoid(sx[pick].to(w.dtype) @ w.T + b) - sy[pick]) ** 2).mean()
        loss = REAL_WEIGHT * real + distill_weight * synthetic + prior_weight * ((w - w0) ** 2).sum()
        loss.backward()
        opt.step()
    weight, bias = weight0.copy(), bias0.copy()
    weight[rows], bias[rows] = w.detach().numpy(), b.detach().numpy()
    return weight, bias


def param_track(weight: np.ndarray, bias: np.ndarray, hidden: np.ndarray, name: str = "jaw_open") -> np.ndarray:
    z = hidden @ weight[PARAM_NAMES.index(name)] + bias[PARAM_NAMES.index(name)]
    return 1.0 / (1.0 + np.exp(-z))


def held_out_scores(weight, bias, clip: RealClip) -> dict:
    """The ruler's lag-0 figures on one clip, every frame: r(jaw_open, opening), r(lip_spread, width) and
    r(lip_spread - lip_round, width) (the signed width the renderer draws)."""
    spread = param_track(weight, bias, clip.hidden, "lip_spread")
    rounding = param_track(weight, bias, clip.hidden, "lip_round")
    return {"opening": pearson(param_track(weight, bias, clip.hidden), clip.opening),
            "width": pearson(spread, clip.width), "signed_width": pearson(spread - rounding, clip.width)}


def stacked(clips: list[RealClip]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c.hidden for c in clips]), np.concatenate([c.targets for c in clips])


def leave_one_out(clips: list[RealClip], weight0, bias0, syn_x, syn_targets, **kw) -> dict:
    """Per held-out clip, each fitted on the others: held_out_scores before and after."""
    out = {}
    for held in clips:
        rest = [c for c in clips if c is not held]
        weight, bias = fit_head(weight0, bias0, *stacked(rest), syn_x, syn_targets, **kw)
        out[held.name] = {"before": held_out_scores(weight0, bias0, held), "after": held_out_scores(weight, bias, held)}
    return out


def mean_scores(loo: dict) -> dict:
    return {when: {k: round(float(np.mean([r[when][k] for r in loo.values()])), 4) for k in SCORES}
            for when in ("before", "after")}



def training_record(path) -> dict:
    """The record `avatar train fit` stored in the weights' metadata (kept beside the real-head fit)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        extra = (f.metadata() or {}).get("extra")
    return json.loads(extra) if extra else {}


def start_head(model, head_from: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The head the fit starts from (weights (P, (2k0+1) H), bias): the model's own, or that of `head_from`, a
    network with the very same core (input layer and GRU)."""
    import torch

    from avatar.model import load_model

    source = model if head_from is None else load_model(head_from)
    if source is not model:
        ours, theirs = model.state_dict(), source.state_dict()
        core = [k for k in ours if k.startswith(("input.", "rnn.", "feature_"))]
        if any(k not in theirs or not torch.equal(ours[k], theirs[k]) for k in core):
            raise ValueError(f"{head_from}: its core (input layer, GRU, feature normalisation) is not this model's")
    return (source.param_head.weight.detach().numpy().astype(np.float64),
            source.param_head.bias.detach().numpy().astype(np.float64))


def head_dims(dims, context: int):
    """The dimensions of the network with a head reading `context` frames either side: the output delay is the
    core's own plus context (ModelDims says when that is too long)."""
    import dataclasses

    return dataclasses.replace(dims, head_context=context, lookahead=dims.core_lookahead + context)


def with_head(model, weight: np.ndarray, bias: np.ndarray, context: int):
    """The network with this mouth-parameter head, reading `context` frames either side; everything else the
    model's."""
    import torch

    from avatar.model import LipSyncNet

    out = LipSyncNet(head_dims(model.dims, context))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("param_head.")}
    out.load_state_dict(state, strict=False)
    with torch.no_grad():
        out.param_head.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        out.param_head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return out.eval()


def run(args) -> int:
    from avatar.model import load_model, save_model
    from .realspeech import Aligner

    model = load_model(args.model)
    context = model.dims.head_context if args.context is None else args.context
    try:
        head_dims(model.dims, context)  # before the fit: a look-ahead past MAX_LOOKAHEAD is refused here
        pairs = grid_clips(Path(args.clips))
        weight0, bias0 = start_head(model, args.head_from)
        weight0 = expand_head(weight0, model.dims.n_hidden, context)
    except (FileNotFoundError, ValueError) as e:
        print(f"avatar train real-head: {e}", file=sys.stderr)
        return 1
    aligner = Aligner()
    clips = [real_clip(model, path, text, aligner, context) for path, text in pairs]
    syn_x, syn_targets = synthetic_frames(model, args.data, weight0, bias0, context, silence_closed=args.silence_closed)
    kw = {"prior_weight": args.prior_weight, "distill_weight": args.distill_weight, "steps": args.steps}
    loo = leave_one_out(clips, weight0, bias0, syn_x, syn_targets, **kw)
    print("held-out GRID clip | r(jaw_open, opening) before -> after | r(lip_spread, width) | "
          "r(spread - round, width)")
    for name, r in loo.items():
        print(f"{name} | " + " | ".join(f"{r['before'][k]:.3f} -> {r['after'][k]:.3f}" for k in SCORES))
    mean = mean_scores(loo)
    print(f"mean of {len(loo)} | " + " | ".join(f"{mean['before'][k]:.3f} -> {mean['after'][k]:.3f}" for k in SCORES))
    weight, bias = fit_head(weight0, bias0, *stacked(clips), syn_x, syn_targets, **kw)
    fitted = mean_scores({c.name: {"before": held_out_scores(weight0, bias0, c), "after": held_out_scores(weight, bias, c)}
                          for c in clips})  # on the clips it was fitted to: not a held-out figure
    out = with_head(model, weight, bias, context)
    record = {**training_record(args.model), "real_head": {"init": Path(args.model).name, "clips": [c.name for c in clips],
                            "head_from": Path(args.head_from).name if args.head_from else None, "context": context,
                            "synthetic": [str(Path(d).name) for d in args.data], "refit": list(REFIT_PARAMS),
                            **kw, "silence_closed": args.silence_closed, "held_out_r0": loo, "held_out_mean": mean, "fitted_mean": fitted}}
    save_model(out, args.out, extra=record)
    print(args.out)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("real-head", help="refit the mouth-parameter head on real faces (GRID clips), "
                                         "the rest of the network kept")
    p.add_argument("model", help="the network to start from (.safetensors)")
    p.add_argument("--data", nargs="+", required=True, help="synthetic training set folder(s): what the old head "
                                                            "said there is kept (silence, closures, music)")
    p.add_argument("--clips", default=str(DEFAULT_CLIPS), help="folder with the GRID clips and grid_transcripts.tsv")
    p.add_argument("--prior-weight", type=float, default=PRIOR_WEIGHT)
    p.add_argument("--distill-weight", type=float, default=DISTILL_WEIGHT)
    p.add_argument("--steps", type=int, default=STEPS, help="optimiser steps per fit")
    p.add_argument("--silence-closed", action=argparse.BooleanOptionalAction, default=SILENCE_CLOSED,
                   help="on synthetic frames labelled silence (pauses, music, noise) fit the closed pose instead of "
                        "the old head's output")
    p.add_argument("--context", type=int, default=None, metavar="K",
                   help="frames either side of the described one the new head reads (default: the model's own); "
                        "the output delay grows by K")
    p.add_argument("--head-from", metavar="MODEL", help="start from this network's head (the same core), not the "
                                                        "model's own: e.g. the one before any real-face fit")
    p.add_argument("-o", "--out", required=True, help="the new weights (.safetensors)")
    p.set_defaults(func=run)
