"""Timed phones -> 100 Hz training targets: a viseme class and four coarticulated mouth parameters per frame.

A *unit* is ``(start_ms, end_ms, arpabet)``. Frame ``i`` describes the 10 ms hop of audio samples
``[i*160, (i+1)*160)`` (the newest hop in the analysis window of `avatar.audio.log_mel` frame ``i``), so its label
is the phone sounding at the hop centre, ``i*10 + 5`` ms.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.visemes import N_PARAMS, PARAM_NAMES, VISEME_INDEX, VISEME_POSE, VISEMES
from .phonemes import SILENCE, to_viseme

FRAME_MS = 10.0  # 100 frames/s
RAMP_MS = 30.0  # each side of a phone boundary: a 60 ms transition, about a real lip/jaw movement
# Lips of tongue-only consonants are free, so they lean towards the nearest vowel (coarticulation); the jaw much
# less: alveolar and velar contacts need it raised (a /s/ or /t/ holds the jaw high whatever the vowel).
WEAK_VISEMES = frozenset({"TH", "DD", "kk", "nn", "SS"})
WEAK_LIP_BLEND = 0.5  # share of the neighbouring vowel's lip spread / rounding a weak consonant takes
WEAK_JAW_BLEND = 0.25  # ...and of its jaw opening
# Phones whose mouth differs from their viseme class's pose. AH (/ʌ/ and, unstressed, schwa: the commonest vowel of
# running speech) shares the "aa" class but is a mid vowel: its jaw opens like /ɛ/'s, not like /ɑ/'s.
PHONE_POSE = {"AH": (0.55, 0.20, 0.00, 0.00)}
VOWEL_VISEMES = frozenset({"aa", "E", "ih", "oh", "ou"})
VOWEL_REACH_MS = 200.0  # how far a weak consonant looks for that vowel
# Held for their whole extent (transitions happen inside the neighbours): lips must be seen fully shut.
HELD_VISEMES = frozenset({"sil", "PP"})
# Poses measured from real talking faces by `avatar train measure-targets` (avatar/train/real_mouths.py)
MEASURED_FILE = Path(__file__).with_name("measured_targets.json")


@dataclass(frozen=True)
class TargetRules:
    """What each phone's mouth aims for and how fast it gets there: one set of rules for targets and labels."""
    name: str
    viseme_pose: dict  # viseme -> (jaw_open, lip_spread, lip_round, lip_press)
    phone_pose: dict  # ARPAbet phone -> pose, where a phone differs from its viseme class
    ramp_ms: float = RAMP_MS
    weak_jaw_blend: float = WEAK_JAW_BLEND
    weak_lip_blend: float = WEAK_LIP_BLEND

    def pose(self, phone: str) -> tuple:
        return self.phone_pose.get(phone.rstrip("012").upper()) or self.viseme_pose[to_viseme(phone)]


# The hand-set table (revised 2026-11-28): what the shipped models v3 and the live model were trained on.
HAND_RULES = TargetRules("hand", dict(VISEME_POSE), dict(PHONE_POSE))


@functools.lru_cache(maxsize=None)
def measured_rules(path: Path = MEASURED_FILE) -> TargetRules:
    """The rules `avatar train measure-targets` derived from real mouths (see the model card)."""
    table = json.loads(Path(path).read_text())

    def pose(row: dict) -> tuple:
        return tuple(float(row[k]) for k in PARAM_NAMES)
    return TargetRules("measured", {v: pose(table["visemes"][v]) for v in VISEMES},
                       {p: pose(row) for p, row in table["phones"].items()}, float(table["ramp_ms"]),
                       float(table["weak_jaw_blend"]), float(table["weak_lip_blend"]))


def rules_named(name: str) -> TargetRules:
    if name == "hand":
        return HAND_RULES
    if name == "measured":
        return measured_rules()
    raise ValueError(f"unknown target rules {name!r}: hand or measured")


def frame_centers_ms(n_frames: int) -> np.ndarray:
    return np.arange(n_frames) * FRAME_MS + FRAME_MS / 2


def frame_phones(units, n_frames: int) -> np.ndarray:
    """ARPAbet label of each frame (object array), silence where no unit covers the frame centre."""
    labels = np.full(n_frames, SILENCE, dtype=object)
    for start, end, phone in units:
        # frames whose centre lies in [start, end)
        f0 = max(int(np.ceil((start - FRAME_MS / 2) / FRAME_MS)), 0)
        f1 = min(int(np.ceil((end - FRAME_MS / 2) / FRAME_MS)), n_frames)
        labels[f0:f1] = phone
    return labels


def viseme_targets(units, n_frames: int) -> np.ndarray:
    """(n_frames,) uint8 viseme index per frame."""
    return np.array([VISEME_INDEX[to_viseme(p)] for p in frame_phones(units, n_frames)], dtype=np.uint8)


def phone_pose(phone: str, rules: TargetRules = HAND_RULES) -> tuple:
    """The mouth parameters one ARPAbet phone aims for (its viseme's pose unless the rules name the phone)."""
    return rules.pose(phone)


def _unit_poses(phones: list[str], visemes: list[str], centers: np.ndarray, rules: TargetRules) -> np.ndarray:
    poses = np.array([rules.pose(p) for p in phones], dtype=np.float64)
    vowels = [i for i, v in enumerate(visemes) if v in VOWEL_VISEMES]
    blend = np.array([rules.weak_jaw_blend, rules.weak_lip_blend, rules.weak_lip_blend])  # jaw, spread, round
    for i, v in enumerate(visemes):
        if v not in WEAK_VISEMES or not vowels:
            continue
        nearest = min(vowels, key=lambda j: (abs(centers[j] - centers[i]), j < i))  # ties: anticipate the next
        if abs(centers[nearest] - centers[i]) <= VOWEL_REACH_MS:
            poses[i, :3] = (1 - blend) * poses[i, :3] + blend * poses[nearest, :3]
    return poses


def mouth_targets(units, n_frames: int, rules: TargetRules = HAND_RULES) -> np.ndarray:
    """(n_frames, 4) float32 jaw_open, lip_spread, lip_round, lip_press, ramping between phone poses.

    Each phone holds its pose in the middle of its extent and ramps over RAMP_MS into its neighbours;
    silence and bilabials hold for their whole extent, so a p/b/m reaches full closure and silence is a
    closed, relaxed mouth.
    """
    units = [u for u in units if u[1] > u[0]]
    if not units:
        return np.tile(np.array(rules.viseme_pose["sil"], np.float32), (n_frames, 1))
    # where no unit speaks (before, between, after) the mouth rests, and ramps from/to rest like any neighbour
    filled, last_end = [], -1e9
    for unit in units:
        if unit[0] > last_end:
            filled.append((last_end, unit[0], SILENCE))
        filled.append(unit)
        last_end = max(last_end, unit[1])
    units = filled + [(last_end, 1e9, SILENCE)]
    visemes = [to_viseme(p) for _, _, p in units]
    centers = np.array([(s + e) / 2 for s, e, _ in units])
    poses = _unit_poses([p for _, _, p in units], visemes, centers, rules)
    key_t, key_v = [], []
    for (start, end, _), viseme, pose in zip(units, visemes, poses):
        ramp = 0.0 if viseme in HELD_VISEMES else min(rules.ramp_ms, 0.4 * (end - start))
        t0, t1 = start + ramp, end - ramp
        if key_t and t0 <= key_t[-1]:
            t0 = key_t[-1] + 1e-3  # keep key times increasing where neighbours overlap
        key_t += [t0, max(t1, t0 + 1e-3)]
        key_v += [pose, pose]
    key_v = np.array(key_v)
    t = frame_centers_ms(n_frames)
    out = np.stack([np.interp(t, key_t, key_v[:, k]) for k in range(N_PARAMS)], axis=1)
    return out.astype(np.float32)
