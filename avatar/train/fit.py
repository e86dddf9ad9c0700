"""Training the lip-sync network the way it runs live: long streams, hidden state carried between segments.

The dataset's shards are joined into one long stream and cut into `batch` lanes. Each step takes the next
`segment` frames of every lane, starting from the state the previous step ended with (detached: truncated
BPTT), exactly as streaming inference carries it from chunk to chunk. The look-ahead is an output delay:
the output at frame t is trained on the labels of frame t - lookahead.

    avatar train fit --data data/lipsync-train --val data/lipsync-eval --minutes 35 --out runs/gru.safetensors
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avatar.audio import log_mel
from avatar.dims import ModelDims
from avatar.visemes import VISEME_INDEX, VISEME_POSE

from .datagen import load_shard
from .targets import mouth_targets, rules_named

# torch, and avatar.model which imports it, load inside the functions that train (~2 s): `avatar --help` imports
# this module for its defaults.

SEGMENT = 100  # frames per truncated-BPTT segment (1 s)
BATCH = 64  # parallel lanes of the stream
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
WARMUP_STEPS = 100
GRAD_CLIP = 1.0
PARAM_WEIGHT = 10.0  # mouth-parameter MSE, next to a viseme cross-entropy of ~1
SMOOTH_WEIGHT = 20.0  # frame-to-frame velocity MSE against the target's: no jitter, no lag
SILENCE = VISEME_INDEX["sil"]
BILABIAL = VISEME_INDEX["PP"]
BILABIAL_WEIGHT = 3.0  # p/b/m closures are short but the most visible error: weigh their frames up
ONSET_FRAMES = 5  # speech frames this close after silence are "onset" frames (50 ms)
HISTORY_EVERY = 10  # steps between loss records


@dataclass
class FitConfig:
    cell: str = "gru"
    n_hidden: int = 128
    n_layers: int = 2
    lookahead: int = 2
    batch: int = BATCH
    segment: int = SEGMENT
    lr: float = LEARNING_RATE
    minutes: float | None = 35.0  # wall-clock budget; the learning rate decays over it
    steps: int | None = None  # or a fixed number of steps (identical work for comparisons)
    seed: int = 0
    threads: int = 1
    eval_every: int = 500
    device: str = "auto"
    init: str | None = None  # start from these weights (same dims) instead of random: fine-tuning
    onset_weight: float = 1.0  # >1 weighs speech onsets up: a live mouth that opens late is the visible lag
    bilabial_weight: float = BILABIAL_WEIGHT
    targets: str | None = None  # recompute the mouth targets from the shards' timed phones by these rules (None: stored)


@dataclass
class Stream:
    features: np.ndarray  # (N, n_mels) float32
    visemes: np.ndarray  # (N,) int64
    params: np.ndarray  # (N, 4) float32
    shard_frames: tuple[int, ...] = ()  # frames each joined shard gave, in order (load_stream)

    def __len__(self) -> int:
        return len(self.visemes)


def shard_features(path: Path) -> np.ndarray:
    """Log-mel features of a shard's audio, cached beside it (computing them is the slow part of loading)."""
    cache = path.with_suffix(".mel.npy")
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        return np.load(cache)
    feats = log_mel(load_shard(path)["audio"]).astype(np.float16)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, cache)  # concurrent trainings may cache the same shard: never read a half-written file
    return feats


def shard_paths(folders, max_shards: int | None = None) -> list[Path]:
    """The shards of one dataset folder (or several), in the order load_stream joins them."""
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    return [p for folder in folders for p in sorted(Path(folder).glob("shard-*[0-9].npz"))[:max_shards]]


def load_stream(folders, max_shards: int | None = None, targets: str | None = None) -> Stream:
    """All shards of one dataset folder (or several) joined into one stream (their frame counts in
    `Stream.shard_frames`); `targets` names the rules (avatar/train/targets.py) to recompute the mouth parameters
    by from each shard's timed phones."""
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    paths = shard_paths(folders, max_shards)
    if not paths:
        raise FileNotFoundError(f"no shards in {', '.join(map(str, folders))} (make them with `avatar train gen`)")
    feats, vis, params = [], [], []
    for p in paths:
        shard = load_shard(p)
        f = shard_features(p)
        n = min(len(f), len(shard["visemes"]))
        feats.append(f[:n].astype(np.float32))
        vis.append(shard["visemes"][:n].astype(np.int64))
        if targets is None:
            params.append(shard["params"][:n].astype(np.float32))
        else:
            units = [(float(a), float(b), str(ph)) for (a, b), ph in zip(shard["unit_times"], shard["unit_phones"])]
            params.append(mouth_targets(units, len(shard["visemes"]), rules_named(targets))[:n])
    return Stream(np.concatenate(feats), np.concatenate(vis), np.concatenate(params), tuple(len(v) for v in vis))


def delayed(stream: Stream, lookahead: int) -> Stream:
    """Targets for the outputs: output frame t describes input frame t - lookahead (silence before the start)."""
    if lookahead == 0:
        return stream
    vis = np.concatenate([np.full(lookahead, SILENCE), stream.visemes[:-lookahead]])
    rest = np.tile(np.array(VISEME_POSE["sil"], np.float32), (lookahead, 1))
    return Stream(stream.features, vis, np.concatenate([rest, stream.params[:-lookahead]]))


def learning_rate(peak: float, step: int, progress: float) -> float:
    """Linear warm-up over WARMUP_STEPS, then cosine decay to 0 at progress 1 (of the steps or the time budget)."""
    return peak * min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * progress))


def lane_indices(n: int, batch: int, segment: int, rng: np.random.Generator):
    """Endless (batch, segment) frame indices into a stream of n frames: lane b reads the stream continuously
    from its own random start, wrapping around, so consecutive batches continue each lane."""
    position = rng.integers(0, n, batch)
    while True:
        yield (position[:, None] + np.arange(segment)[None, :]) % n
        position = (position + segment) % n


def onset_frames(torch, vis):
    """(B, T) bool: speech frames within ONSET_FRAMES after a silence frame (of the same segment)."""
    silent = (vis == SILENCE).float()
    padded = torch.nn.functional.pad(silent, (ONSET_FRAMES, 0))[:, :-1]  # frame t sees frames t-5 .. t-1
    recent = torch.nn.functional.max_pool1d(padded[:, None], ONSET_FRAMES, stride=1)[:, 0]
    return (silent == 0) & (recent > 0)


def losses(torch, v_logits, p_logits, vis, params, onset_weight: float = 1.0,
           bilabial_weight: float = BILABIAL_WEIGHT):
    """(total, cross-entropy, param MSE, velocity MSE); bilabial frames weigh `bilabial_weight` times more, speech
    onsets `onset_weight` times more."""
    f = torch.nn.functional
    weight = 1.0 + (bilabial_weight - 1.0) * (vis == BILABIAL).float()
    if onset_weight != 1.0:
        weight = weight + (onset_weight - 1.0) * onset_frames(torch, vis).float()
    norm = weight.mean()
    ce = (f.cross_entropy(v_logits.transpose(1, 2), vis, reduction="none") * weight).mean() / norm
    pred = torch.sigmoid(p_logits)
    mse = (((pred - params) ** 2).mean(-1) * weight).mean() / norm
    smooth = f.mse_loss(pred[:, 1:] - pred[:, :-1], params[:, 1:] - params[:, :-1])
    return ce + PARAM_WEIGHT * mse + SMOOTH_WEIGHT * smooth, ce, mse, smooth


def evaluate_stream(model, stream: Stream, lookahead: int, device, max_frames: int = 200_000) -> dict:
    """Frame accuracy and param MAE of a whole stream run in one pass, state carried (like live use)."""
    import torch
    target = delayed(stream, lookahead)
    n = min(len(stream), max_frames)
    with torch.no_grad():
        v, p, _ = model(torch.from_numpy(stream.features[None, :n]).to(device))
    v, p = v[0].cpu().numpy(), p[0].cpu().numpy()
    return dict(viseme_acc=float((v.argmax(-1) == target.visemes[:n]).mean()),
                param_mae=float(np.abs(p - target.params[:n]).mean()))


def fit(config: FitConfig, data, out: Path, val: Path | None = None, log=print, max_shards=None) -> dict:
    """Train; save the weights (safetensors) to `out` with the training record in their metadata."""
    import torch

    from avatar.model import LipSyncNet, load_model, save_model

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                          else "cpu" if config.device == "auto" else config.device)
    t_load = time.time()
    stream = load_stream(data, max_shards, config.targets)
    val_stream = load_stream(val, targets=config.targets) if val else None
    log(f"data: {len(stream) / 360000:.2f} h ({len(stream)} frames); loaded in {time.time() - t_load:.0f} s")
    dims = ModelDims(n_hidden=config.n_hidden, n_layers=config.n_layers, cell=config.cell, lookahead=config.lookahead)
    model = LipSyncNet(dims).to(device)
    if config.init:
        start = load_model(config.init)
        # a different look-ahead is only a different output delay: the same weights re-learn it
        if dataclasses.replace(start.dims, lookahead=dims.lookahead) != dims:
            raise ValueError(f"{config.init} has dims {start.dims}, not {dims}")
        model.load_state_dict(start.state_dict())  # its feature normalisation included
    else:
        model.feature_mean.copy_(torch.from_numpy(stream.features.mean(0)))
        model.feature_std.copy_(torch.from_numpy(stream.features.std(0) + 1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=WEIGHT_DECAY)
    lanes = lane_indices(len(stream), config.batch, config.segment, np.random.default_rng(config.seed))
    target = delayed(stream, config.lookahead)
    state = None
    history, t0, step, frames = [], time.time(), 0, 0
    budget = config.minutes * 60 if config.minutes else None
    while True:
        elapsed = time.time() - t0
        progress = step / config.steps if config.steps else elapsed / budget
        if progress >= 1.0:
            break
        lr = learning_rate(config.lr, step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = next(lanes)
        x, vis, params = (torch.from_numpy(a).to(device)
                          for a in (stream.features[idx], target.visemes[idx], target.params[idx]))
        v_logits, p_logits, state = model(x, state, logits=True)
        state = tuple(s.detach() for s in state)  # carried, not back-propagated through: truncated BPTT
        loss, ce, mse, smooth = losses(torch, v_logits, p_logits, vis, params, config.onset_weight,
                                       config.bilabial_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        step += 1
        frames += x.shape[0] * x.shape[1]
        if step % HISTORY_EVERY == 0 or step == 1:
            history.append(dict(step=step, seconds=round(time.time() - t0, 1), loss=loss.item(), ce=ce.item(),
                                mse=mse.item(), smooth=smooth.item(), lr=lr))
        if step % config.eval_every == 0:
            msg = f"step {step} {time.time() - t0:.0f}s loss {loss.item():.3f} ce {ce.item():.3f} mse {mse.item():.4f}"
            if val_stream is not None:
                model.eval()
                metrics = evaluate_stream(model, val_stream, config.lookahead, device)
                model.train()
                history[-1].update(val=metrics)
                msg += f" | val acc {metrics['viseme_acc']:.3f} mae {metrics['param_mae']:.3f}"
            log(msg)
    seconds = time.time() - t0
    model.eval()
    model.settle_core()  # the trained core's own quiet-room start state (every stream begins there)
    record = dict(config=asdict(config), dims=asdict(dims), steps=step, frames=frames, train_seconds=round(seconds),
                  data_hours=round(len(stream) / 360000, 2), device=str(device),
                  parameters=sum(p.numel() for p in model.parameters()))
    if val_stream is not None:
        record["val"] = evaluate_stream(model, val_stream, config.lookahead, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model.cpu(), out, extra=record)
    out.with_suffix(".history.json").write_text(json.dumps(dict(record, history=history), indent=1))
    log(f"saved {out}: {step} steps, {frames / 1e6:.1f} M frames in {seconds / 60:.1f} min"
        + (f", val acc {record['val']['viseme_acc']:.3f}" if val_stream is not None else ""))
    return dict(record, history=history)
