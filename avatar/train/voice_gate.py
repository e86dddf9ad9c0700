"""The voice-presence gate: a small GRU of its own that tells a voice (spoken or sung) from music and noise.

    avatar train voice-gate MODEL --data SHARDS... [--val SHARDS...] -o OUT.safetensors

Fine-tunes with music as negatives taught the lip-sync core "pitched, sustained, harmonic -> closed", and a sung
voice is all three, so they cost songs, GRID and p/b/m closures what they gained on music (model card). This keeps
the core, its heads and their numbers bit for bit and adds a separate gate (`avatar.model.VoiceGate`) trained on the
same synthetic shards (their metadata says where music plays): label 0 where instrumental music plays and no voice
is heard (none within HOLD_FRAMES: a pause inside a sung line is the core's business), 1 everywhere else, the voice
over music included. Silence and room noise without music pass: the core already closes the mouth there, and GRID's
real speakers breathe through an open mouth before a sentence (the core's call, as before). Where the gate hears
music and no voice, the outputs go to rest.

The gate sees what the core sees (the normalised log-mel, the same output delay) and is trained as the core is:
long streams, state carried across truncated-BPTT segments. Onsets weigh more: a gate that opens late is a mouth
that opens late. Each lane is recoloured (tilt, level, register, a masked band): without that the gate learnt the
training recordings and let a third of the held-out music through.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .fit import SILENCE, Stream, delayed, lane_indices, learning_rate, load_stream, shard_paths

FRAMES_PER_MS = 0.1  # 100 feature frames per second

VOICE_HIDDEN = 48  # gate GRU units: 16 k parameters (96 tried: more music passed, GRID lower)
MEMBERS = 1  # gates trained from successive seeds and run as one (merge_gates): the live network ships 2
HOLD_FRAMES = 25  # a voice counts as present 250 ms past its last phone: pauses between words stay open
ONSET_FRAMES = 8  # the first 80 ms of a voice after a silence...
ONSET_WEIGHT = 4.0  # ...weigh this much more: opening late is the visible error
# feature augmentation, per lane and segment (normalised log-mel units): held-out tracks and instruments differ from
# the ~40 recordings and the GM programs trained on in colour and register, not in what makes a voice a voice
TILT = 0.6  # a spectral tilt up to this much from the lowest band to the highest
OFFSET = 0.5  # a level offset (loudness is no cue)
BAND_SHIFT = 2  # the spectrum moved up or down by up to this many mel bands (register, formant scale)
MASK_BANDS = 6  # a band of up to this many mel bands masked to the mean, on half the lanes
BATCH = 64
SEGMENT = 100
LEARNING_RATE = 3e-3
STEPS = 3000
GRAD_CLIP = 1.0
SEED = 0


def voice_heard(visemes: np.ndarray, hold: int = HOLD_FRAMES) -> np.ndarray:
    """(N,) bool: a non-silence label lies at this frame or at most `hold` frames before it."""
    voiced = (visemes != SILENCE).astype(np.float32)
    kernel = np.ones(hold + 1, np.float32)
    return np.convolve(voiced, kernel)[: len(voiced)] > 0  # causal: frames t-hold .. t


def gate_labels(visemes: np.ndarray, music: np.ndarray, hold: int = HOLD_FRAMES) -> np.ndarray:
    """(N,) float32 targets: 0 where music plays and no voice is heard, 1 elsewhere. Silence and room noise
    without music pass: the core closes the mouth there itself, and a speaker's breath before a sentence
    (the mouth open on GRID's real faces) stays the core's call."""
    return (~(music & ~voice_heard(visemes, hold))).astype(np.float32)


def music_frames(utterances: list[dict], n_frames: int) -> np.ndarray:
    """(n_frames,) bool: frames where a shard's instrumental music plays (its metadata: start and length)."""
    mask = np.zeros(n_frames, bool)
    for u in utterances:
        m = u.get("music")
        if m:
            start = int(round(m["start_ms"] * FRAMES_PER_MS))
            mask[start:start + int(round(m["seconds"] * 1000 * FRAMES_PER_MS))] = True
    return mask


def load_gate_stream(folders) -> tuple:
    """(Stream of every shard in `folders`, as fit.load_stream joins them; (N,) bool music mask from each
    shard's metadata, cut to the frames the stream took from it)."""
    stream = load_stream(folders)
    music = np.concatenate([music_frames(json.loads(path.with_suffix(".json").read_text()), n)
                            for path, n in zip(shard_paths(folders), stream.shard_frames, strict=True)])
    return stream, music


def delayed_mask(mask: np.ndarray, lookahead: int) -> np.ndarray:
    """A per-frame mask for the outputs that describe it: frame t's value at t + lookahead (fit.delayed's shift)."""
    return np.concatenate([np.zeros(lookahead, bool), mask[:len(mask) - lookahead]]) if lookahead else mask


def onset_mask(labels: np.ndarray, frames: int = ONSET_FRAMES) -> np.ndarray:
    """(N,) bool: the first `frames` frames of each stretch of voice."""
    starts = np.flatnonzero(np.diff(np.concatenate([[0.0], labels])) > 0)
    mask = np.zeros(len(labels), bool)
    for s in starts:
        mask[s:s + frames] = True
    return mask & (labels > 0)


def gate_scores(model, stream: Stream, music: np.ndarray, max_frames: int = 400_000) -> dict:
    """On a held-out stream (labels delayed like the outputs), run in one pass from a fresh state: the share of
    voice frames the gate passes (> 0.5), of their onsets, and of music-only frames it stops."""
    probs = voice_probability(model, stream.features[:max_frames])
    la = model.dims.core_lookahead  # the gate's own logits, before a head context delays them
    voice = voice_heard(delayed(stream, la).visemes[:max_frames])
    music = delayed_mask(music, la)[:max_frames]
    on = onset_mask(voice.astype(np.float32))
    only_music = music & ~voice
    return dict(voice_passed=float((probs[voice] > 0.5).mean()), onset_passed=float((probs[on] > 0.5).mean()),
                music_stopped=float((probs[only_music] <= 0.5).mean()) if only_music.any() else float("nan"),
                quiet_passed=float((probs[~voice & ~music] > 0.5).mean()) if (~voice & ~music).any() else float("nan"))


def voice_probability(model, features: np.ndarray) -> np.ndarray:
    """(T,) the gate's voice probability for log-mel frames (T, n_mels), from a fresh state."""
    import torch

    x = model.normalise(torch.from_numpy(np.asarray(features, np.float32))[None])
    with torch.no_grad():
        logit, _ = model.voice(x, torch.zeros(1, 1, model.dims.voice_hidden))
    return torch.sigmoid(logit[0, :, 0]).numpy()


def with_gate(model, voice_hidden: int = VOICE_HIDDEN, seed: int = SEED):
    """A copy of `model` with a fresh voice gate (or its own gate kept, to train further)."""
    import torch

    from avatar.model import LipSyncNet

    if model.dims.voice_hidden:
        return model
    torch.manual_seed(seed)
    gated = LipSyncNet(dataclasses.replace(model.dims, voice_hidden=voice_hidden))
    missing, unexpected = gated.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("voice.") for k in missing), (missing, unexpected)
    return gated


def merge_gates(models: list):
    """One network whose gate runs every model's gate side by side and averages their logits: an ensemble of gates
    trained from different seeds (the same core in all), as one GRU of len(models) x their units with
    block-diagonal weights, so that every backend runs it as it runs one gate. Its start state is settled anew."""
    import torch

    from avatar.model import LipSyncNet

    base, n = models[0], len(models)
    h = base.dims.voice_hidden
    core = {k: v for k, v in base.state_dict().items() if not k.startswith("voice.")}
    for m in models[1:]:
        theirs = m.state_dict()
        if m.dims != base.dims or any(not torch.equal(theirs[k], v) for k, v in core.items()):
            raise ValueError("the gates to merge must sit beside the same network (dimensions and weights)")
    merged = LipSyncNet(dataclasses.replace(base.dims, voice_hidden=h * n)).eval()
    missing, _ = merged.load_state_dict(core, strict=False)
    assert all(k.startswith("voice.") for k in missing), missing
    gate = merged.voice
    with torch.no_grad():
        gate.input[0].weight.copy_(torch.cat([m.voice.input[0].weight for m in models]))
        gate.input[0].bias.copy_(torch.cat([m.voice.input[0].bias for m in models]))
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            target = getattr(gate.rnn, name)
            target.zero_()
            for k, m in enumerate(models):
                source = getattr(m.voice.rnn, name)
                for part in range(3):  # PyTorch's GRU stacks its reset, update and new gates' rows
                    rows, own = slice(part * h * n + k * h, part * h * n + (k + 1) * h), slice(part * h, (part + 1) * h)
                    if name.startswith("weight"):
                        target[rows, k * h:(k + 1) * h] = source[own]
                    else:
                        target[rows] = source[own]
        gate.head.weight.copy_(torch.cat([m.voice.head.weight for m in models], 1) / n)
        gate.head.bias.copy_(sum(m.voice.head.bias for m in models) / n)
    merged.settle_voice()
    return merged


def augment(torch, x, gen):
    """(B, T, n_mels) normalised features, each lane recoloured as one room and one recording might: tilt, level,
    a shifted register, a masked band."""
    b, _, n = x.shape
    ramp = torch.linspace(-1.0, 1.0, n)
    tilt = (torch.rand(b, 1, 1, generator=gen) * 2 - 1) * TILT * ramp
    offset = (torch.rand(b, 1, 1, generator=gen) * 2 - 1) * OFFSET
    shifts = torch.randint(-BAND_SHIFT, BAND_SHIFT + 1, (b,), generator=gen)
    bands = (torch.arange(n)[None, :] - shifts[:, None]).clamp(0, n - 1)  # edge bands repeat
    x = torch.gather(x, 2, bands[:, None, :].expand(-1, x.shape[1], -1)) + tilt + offset
    start = torch.randint(0, n - MASK_BANDS, (b,), generator=gen)
    width = torch.randint(0, MASK_BANDS + 1, (b,), generator=gen) * (torch.rand(b, generator=gen) < 0.5)
    band = torch.arange(n)[None, :]
    masked = (band >= start[:, None]) & (band < (start + width)[:, None])
    return x.masked_fill(masked[:, None, :], 0.0)


def train_gate(model, stream: Stream, music: np.ndarray, steps: int = STEPS, lr: float = LEARNING_RATE,
               seed: int = SEED, log=print, threads: int = 1, batch: int = BATCH, segment: int = SEGMENT,
               augmented: bool = True, onset_weight: float = ONSET_WEIGHT) -> dict:
    """Train `model.voice` in place on a training stream (`fit.load_stream`; everything else is frozen: only
    the gate's parameters are given to the optimiser); the training record."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    la = model.dims.core_lookahead  # the gate's own logits, before a head context delays them
    visemes = delayed(stream, la).visemes
    labels = gate_labels(visemes, delayed_mask(music, la))
    weights = (1.0 + (onset_weight - 1.0) * onset_mask(voice_heard(visemes).astype(np.float32))).astype(np.float32)
    log(f"voice gate data: {len(stream) / 360000:.2f} h, music without a voice in {1 - labels.mean():.1%} of frames")
    features = model.normalise(torch.from_numpy(stream.features)).numpy()
    gate = model.voice.train()
    opt = torch.optim.AdamW(gate.parameters(), lr=lr, weight_decay=1e-4)
    lanes = lane_indices(len(stream), batch, segment, np.random.default_rng(seed))
    h = torch.zeros(1, batch, model.dims.voice_hidden)
    gen = torch.Generator().manual_seed(seed)
    history, t0 = [], time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(lr, step, step / steps)
        idx = next(lanes)
        x, y, w = (torch.from_numpy(a[idx]) for a in (features, labels, weights))
        logit, h = gate(augment(torch, x, gen) if augmented else x, h)
        h = h.detach()  # truncated BPTT, as the core is trained
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logit[..., 0], y, reduction="none") * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gate.parameters(), GRAD_CLIP)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            history.append(dict(step=step, seconds=round(time.time() - t0, 1), loss=round(loss.item(), 4)))
            log(f"step {step} {time.time() - t0:.0f}s loss {loss.item():.4f}")
    gate.eval()
    return dict(steps=steps, lr=lr, seed=seed, augmented=augmented, onset_weight=onset_weight,
                data_hours=round(len(stream) / 360000, 2), train_seconds=round(time.time() - t0), history=history)


def run(args) -> int:
    from avatar.model import load_model, save_model
    from .real_head import training_record

    stream, music = load_gate_stream(args.data)
    members = []
    for seed in range(args.seed, args.seed + args.members):
        model = with_gate(load_model(args.model), args.hidden, seed)
        record = train_gate(model, stream, music, args.steps, args.lr, seed, threads=args.threads,
                            onset_weight=args.onset_weight)
        model.settle_voice()  # the start state every stream begins from (model.VoiceGate.settle)
        members.append((model, record))
    model, record = members[0]
    if len(members) > 1:
        model = merge_gates([m for m, _ in members])
        record = dict(members=[r for _, r in members], merged="block-diagonal GRU, logits averaged")
    record["data"] = [Path(d).name for d in args.data]
    for folder in args.val or []:
        scores = gate_scores(model, *load_gate_stream(folder))
        record.setdefault("val", {})[Path(folder).name] = scores
        print(f"{folder}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    before = training_record(args.model)
    if "voice_gate" in before:  # trained further: the earlier gate's record stays inside the new one
        record["init"] = before["voice_gate"]
    save_model(model, args.out, extra={**before, "voice_gate": record})
    print(args.out)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("voice-gate", help="train a voice-presence gate beside the network (speech and song pass; "
                                          "music and noise go to rest); the network itself is kept")
    p.add_argument("model", help="the network to add the gate to (.safetensors)")
    p.add_argument("--data", nargs="+", required=True, help="synthetic training set folder(s), with music, noise "
                                                            "and sung speech among them")
    p.add_argument("--val", nargs="*", help="held-out set folder(s): the shares of voice (and onsets) passed, of music stopped and of quiet passed")
    p.add_argument("--hidden", type=int, default=VOICE_HIDDEN, help="gate GRU units")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--lr", type=float, default=LEARNING_RATE)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--members", type=int, default=MEMBERS,
                   help="gates to train (seeds SEED, SEED+1, ...) and run as one, their logits averaged")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--onset-weight", type=float, default=ONSET_WEIGHT,
                   help=f"weight of a voice's first {ONSET_FRAMES * 10} ms (a gate that opens late delays the mouth)")
    p.add_argument("-o", "--out", required=True, help="the gated weights (.safetensors)")
    p.set_defaults(func=run)
