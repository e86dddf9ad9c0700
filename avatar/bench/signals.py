"""The benchmarks' (and the tests') test material: tone and vowel bursts, and a hand-set loudness network."""
from __future__ import annotations

import numpy as np

from avatar.dims import ModelDims
from avatar.visemes import VISEME_INDEX


def loudness_probe_model():
    """A LipSyncNet with hand-set weights: jaw_open ≈ 1 while the mean log-mel is above -8.5 (a 0.5-amplitude tone
    gives -7.1, digital silence -10), ≈ 0 otherwise. Memoryless (lookahead 0), so the latency benchmark measures the
    pipeline, not how long a trained network takes to make up its mind."""
    import torch  # torch (the [torch] extra, 2 s to import): only `--model probe` and the tests need it

    from avatar.model import LipSyncNet

    net = LipSyncNet(ModelDims(n_hidden=8, n_layers=1, cell="rnn", lookahead=0))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.input[0].weight[0, :] = 1.0 / net.dims.n_mels  # u0 = tanh(mean log-mel + 8.5)
        net.input[0].bias[0] = 8.5
        net.rnn.weight_ih_l0[0, 0] = 3.0  # h0 = tanh(3 u0): ±0.99
        net.param_head.weight[0, 0] = 6.0  # jaw_open = sigmoid(6 h0)
        net.param_head.bias[1:] = -6.0  # the other parameters stay near 0
        net.viseme_head.weight[VISEME_INDEX["aa"], 0] = 6.0
        net.viseme_head.weight[VISEME_INDEX["sil"], 0] = -6.0
    return net.eval()


BURST_ATTACK = 0.005  # s: the latency bursts' raised-cosine onset; an abrupt step is a click, which reads as a
# plosive release (measured: a 0 ms look-ahead network opens a frame later on it than on a 5-20 ms attack)
ONSET_LEVEL = 1e-3  # a burst starts at its first sample above this (-60 dBFS; the virtual mic's silence is 0)...
ONSET_WALKBACK = 480  # ...searched up to 30 ms before its loudness is detected
VOWEL_F0 = 120.0  # Hz: a low voice
VOWEL_FORMANTS = ((730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0))  # "aa": (centre, bandwidth) Hz


def _vowel(t: np.ndarray) -> np.ndarray:
    """A steady "aa" by additive synthesis: harmonics of VOWEL_F0 weighted by the formant resonances."""
    out = np.zeros_like(t)
    for k in range(1, int(4000 / VOWEL_F0)):
        f = k * VOWEL_F0
        gain = sum(1.0 / np.hypot(1.0, (f - fc) / (bw / 2)) for fc, bw in VOWEL_FORMANTS)
        out += gain * np.sin(2 * np.pi * f * t)
    return out / np.abs(out).max()


def tone_bursts(onsets, seconds, sr=16000, length=0.25, freq=1000.0, amplitude=0.5, vowel=False,
                attack=0.0) -> np.ndarray:
    """Silence with bursts starting at `onsets` (s): the latency and A/V-sync test signal. Each burst is a pure
    tone, or with `vowel` a synthetic "aa", which the trained lip-sync model opens the mouth for (a pure tone is
    not speech, and it rightly stays closed). `attack` > 0 gates each burst on with a raised-cosine ramp of that
    many seconds (no click at the onset: no voice starts with one)."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for onset in onsets:
        k = (t >= onset) & (t < onset + length)
        tb = t[k] - onset
        gate = 0.5 - 0.5 * np.cos(np.pi * np.clip(tb / attack, 0.0, 1.0)) if attack > 0 else 1.0
        out[k] = amplitude * gate * (_vowel(tb) if vowel else np.sin(2 * np.pi * freq * tb))
    return out.astype(np.float32)
