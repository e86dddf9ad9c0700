"""Mouth targets measured from real talking faces: GRID sentences force-aligned, their mouths measured by FaceMesh.

    avatar train measure-targets [--clips ../shared/data/video] [-o avatar/train/measured_targets.json]

For each GRID clip (a transcript in the folder's grid_transcripts.tsv): pocketsphinx aligns the transcript to the
clip's audio (as for the asterisk set), FaceMesh measures the real mouth on every frame (the ruler of
`avatar eval video`: eye-corner similarity, opening |13-14|, width |61-291|), and each phone is read at its centre:

- opening, normalised per speaker: 1 = the speaker's 95th-percentile opening in speech (a person's mouth size is the
  renderer's business, not the network's);
- width relative to the speaker's median width in speech: wider -> lip_spread, narrower -> lip_round, in fixed
  fractions of that width (SPREAD_FULL, ROUND_FULL) so the two stay physical and comparable between speakers.

Per viseme the mean is shrunk towards the hand-set table by SHRINK_COUNT pseudo-observations (a viseme seen twice
mostly keeps the table's value; one seen thirty times is measured). Silence stays closed (a mouth at rest; GRID
speakers often breathe through an open mouth before a sentence, which no sound foretells) and p/b/m keep full
closure. Then the timing: the ramp either side of a phone boundary and the share of a neighbouring vowel's opening a
tongue consonant takes are chosen by how well the resulting target track follows the real opening (Pearson r over
all the clips' speech).

GRID (Cooke, Barker, Cunningham and Shao 2006) is published by its authors under CC BY 4.0; only its numbers go into
the table (see the model card).
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import sys

import numpy as np
from tqdm import tqdm

from avatar.eval.video import iter_frames, measure_mouths, read_clip
from avatar.visemes import PARAM_NAMES, VISEMES
from .phonemes import SILENCE, to_viseme
from .realspeech import Aligner, normalize_transcript
from .targets import HAND_RULES, MEASURED_FILE, TargetRules, frame_centers_ms, mouth_targets

GRID_TRANSCRIPTS = "grid_transcripts.tsv"
SPEECH_PERCENTILE = 95  # opening 1.0 = this percentile of the speaker's opening during speech
SPREAD_FULL = 0.10  # lip_spread 1 = a mouth 10 % wider than the speaker's median width in speech
ROUND_FULL = 0.15  # lip_round 1 = 15 % narrower
SHRINK_COUNT = 5.0  # pseudo-observations of the hand-set value behind each measured mean
MIN_PHONE_COUNT = 8  # a phone gets its own row (beside its viseme's) when seen at least this often
FIXED_VISEMES = ("sil", "PP")  # rest and bilabial closure: product rules, not measured
SPEECH_MARGIN_MS = 60.0  # timing is scored on speech and this much either side of it
RAMP_CANDIDATES_MS = (20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 120.0, 160.0)
WEAK_JAW_CANDIDATES = (0.0, 0.25, 0.5, 0.75)


@dataclass
class MeasuredClip:
    name: str
    units: list  # [(start_ms, end_ms, arpabet)] from forced alignment
    frame_ms: np.ndarray  # (N,) frame times, ms
    opening: np.ndarray  # (N,) normalised per speaker (1 = the 95th percentile in speech)
    width: np.ndarray  # (N,) relative to the median width in speech (0 = neutral, +0.05 = 5 % wider)
    n_audio_frames: int  # 100 Hz frames of the audio


def grid_clips(folder: Path) -> list[tuple[Path, str]]:
    """(clip, transcript) for every GRID clip in `folder` that its transcript table names."""
    table = folder / GRID_TRANSCRIPTS
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no GRID transcript table (the real clips live in shared/data/video)")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(folder / r["file"], r["transcript"]) for r in rows if (folder / r["file"]).is_file()]


def _in_speech(frame_ms: np.ndarray, units, margin: float = 0.0) -> np.ndarray:
    mask = np.zeros(len(frame_ms), bool)
    for start, end, phone in units:
        if phone != SILENCE:
            mask |= (frame_ms >= start - margin) & (frame_ms < end + margin)
    return mask


def measure_clip(path: Path, transcript: str, aligner, clip=None) -> MeasuredClip:
    """The aligned phones and the real mouth of one clip; `clip`: the clip already decoded (eval.video.read_clip)."""
    clip = read_clip(path) if clip is None else clip
    units = aligner.align(clip.audio, normalize_transcript(transcript))
    mouths = measure_mouths(iter_frames(clip.path))
    frame_ms = clip.frame_times * 1000.0
    speech = _in_speech(frame_ms, units) & np.isfinite(mouths.opening)
    opening = mouths.opening / np.percentile(mouths.opening[speech], SPEECH_PERCENTILE)
    width = mouths.width / np.median(mouths.width[speech]) - 1.0
    return MeasuredClip(path.name, units, frame_ms, opening, width, len(clip.audio) // 160)


def phone_samples(clips: list[MeasuredClip]) -> dict[str, list[tuple[float, float]]]:
    """(opening, relative width) at the centre of every aligned phone, by ARPAbet phone."""
    samples = defaultdict(list)
    for c in clips:
        ok = np.isfinite(c.opening)
        for start, end, phone in c.units:
            if phone == SILENCE:
                continue
            centre = (start + end) / 2
            samples[phone].append((float(np.interp(centre, c.frame_ms[ok], c.opening[ok])),
                                   float(np.interp(centre, c.frame_ms[ok], c.width[ok]))))
    return samples


def _pose(opening: float, width: float, press: float) -> tuple:
    spread = float(np.clip(width / SPREAD_FULL, 0, 1))
    rounding = float(np.clip(-width / ROUND_FULL, 0, 1))
    return float(np.clip(opening, 0, 1)), spread, rounding, press


def _shrunk(values: list[float], prior: float) -> float:
    return float((np.sum(values) + SHRINK_COUNT * prior) / (len(values) + SHRINK_COUNT))


def pose_table(samples: dict, base: TargetRules = HAND_RULES) -> tuple[dict, dict, dict]:
    """Measured poses per viseme and per frequent phone, and the counts behind them."""
    by_viseme = defaultdict(list)
    for phone, rows in samples.items():
        by_viseme[to_viseme(phone)] += rows
    visemes, counts = {}, {}
    for v in VISEMES:
        hand = base.viseme_pose[v]
        rows = by_viseme.get(v, [])
        counts[v] = len(rows)
        if v in FIXED_VISEMES or not rows:
            visemes[v] = tuple(hand)
            continue
        hand_width = SPREAD_FULL * hand[1] - ROUND_FULL * hand[2]  # the table's pose in relative-width units
        visemes[v] = _pose(_shrunk([o for o, _ in rows], hand[0]), _shrunk([w for _, w in rows], hand_width),
                           hand[3])
    phones = {}
    for phone, rows in samples.items():
        v = to_viseme(phone)
        # a phone gets its own row when seen often, or when the hand table already set it apart from its class
        # (AH, a mid vowel in the open "aa" class): then shrunk towards that row instead of the class
        if v in FIXED_VISEMES or (len(rows) < MIN_PHONE_COUNT and phone not in base.phone_pose):
            continue
        counts[phone] = len(rows)
        pj, ps, pr, pp = base.phone_pose.get(phone, visemes[v])
        phones[phone] = _pose(_shrunk([o for o, _ in rows], pj),
                              _shrunk([w for _, w in rows], SPREAD_FULL * ps - ROUND_FULL * pr), pp)
    return visemes, phones, counts


def timing_score(clips: list[MeasuredClip], rules: TargetRules) -> float:
    """Pearson r of the rules' jaw_open track against the real opening, over all clips' speech (pooled)."""
    target, real = [], []
    for c in clips:
        track = mouth_targets(c.units, c.n_audio_frames, rules)[:, 0]
        frame_track = np.interp(c.frame_ms, frame_centers_ms(c.n_audio_frames), track)
        keep = _in_speech(c.frame_ms, c.units, SPEECH_MARGIN_MS) & np.isfinite(c.opening)
        target.append(frame_track[keep])
        real.append(c.opening[keep])
    return float(np.corrcoef(np.concatenate(target), np.concatenate(real))[0, 1])


def fit_timing(clips: list[MeasuredClip], rules: TargetRules) -> tuple[TargetRules, dict]:
    scores = {}
    for ramp in RAMP_CANDIDATES_MS:
        for blend in WEAK_JAW_CANDIDATES:
            scores[(ramp, blend)] = timing_score(clips, replace(rules, ramp_ms=ramp, weak_jaw_blend=blend))
    ramp, blend = max(scores, key=scores.get)
    return replace(rules, ramp_ms=ramp, weak_jaw_blend=blend), scores


def measure_targets(folder: Path, progress: bool = False) -> dict:
    """The whole derivation: the table written to measured_targets.json, with the evidence behind it."""
    aligner = Aligner()
    clips = [measure_clip(path, text, aligner)
             for path, text in tqdm(grid_clips(folder), desc="measure real mouths", disable=not progress)]
    if not clips:
        raise FileNotFoundError(f"{folder}: none of the GRID clips named in {GRID_TRANSCRIPTS} is there")
    samples = phone_samples(clips)
    visemes, phones, counts = pose_table(samples)
    rules, scores = fit_timing(clips, TargetRules("measured", visemes, phones))
    hand_score = timing_score(clips, HAND_RULES)

    def row(pose, n):
        return {**dict(zip(PARAM_NAMES, (round(x, 3) for x in pose))), "n": n}
    return {
        "source": "GRID audio-visual corpus (Cooke, Barker, Cunningham, Shao 2006; CC BY 4.0): "
                  + ", ".join(c.name for c in clips),
        "method": "avatar/train/real_mouths.py",
        "spread_full": SPREAD_FULL, "round_full": ROUND_FULL, "shrink_count": SHRINK_COUNT,
        "visemes": {v: row(visemes[v], counts[v]) for v in VISEMES},
        "phones": {p: row(phones[p], counts[p]) for p in sorted(phones)},
        "ramp_ms": rules.ramp_ms, "weak_jaw_blend": rules.weak_jaw_blend, "weak_lip_blend": rules.weak_lip_blend,
        "timing_r": {f"ramp {r:g} ms, weak jaw {b:g}": round(s, 4) for (r, b), s in scores.items()},
        "r_measured": round(scores[(rules.ramp_ms, rules.weak_jaw_blend)], 4), "r_hand": round(hand_score, 4),
        "raw_phone_means": {p: {"opening": round(float(np.mean([o for o, _ in s])), 3),
                                "width": round(float(np.mean([w for _, w in s])), 4), "n": len(s)}
                            for p, s in sorted(samples.items())},
    }


def markdown(table: dict) -> str:
    lines = ["| viseme | n | jaw_open | lip_spread | lip_round | lip_press | hand-set jaw / spread / round |",
             "|---|---|---|---|---|---|---|"]
    for v in VISEMES:
        row, hand = table["visemes"][v], HAND_RULES.viseme_pose[v]
        lines.append(f"| {v} | {row['n']} | {row['jaw_open']:.2f} | {row['lip_spread']:.2f} | {row['lip_round']:.2f} "
                     f"| {row['lip_press']:.2f} | {hand[0]:.2f} / {hand[1]:.2f} / {hand[2]:.2f} |")
    lines += ["", "| phone | n | jaw_open | lip_spread | lip_round |", "|---|---|---|---|---|"]
    for p, row in table["phones"].items():
        lines.append(f"| {p} | {row['n']} | {row['jaw_open']:.2f} | {row['lip_spread']:.2f} | {row['lip_round']:.2f} |")
    lines += ["", f"ramp {table['ramp_ms']:g} ms, weak-consonant jaw blend {table['weak_jaw_blend']:g}: target track vs "
              f"real opening r {table['r_measured']:.3f} (hand-set rules: {table['r_hand']:.3f})"]
    return "\n".join(lines)


def run(args) -> int:
    try:
        table = measure_targets(Path(args.clips), progress=True)
    except FileNotFoundError as e:
        print(f"avatar train measure-targets: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(markdown(table))
    print(f"\n{out}")
    return 0


DEFAULT_CLIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "video"


def add_cli(sub) -> None:
    p = sub.add_parser("measure-targets", help="derive the mouth targets from real talking faces (GRID clips)")
    p.add_argument("--clips", default=str(DEFAULT_CLIPS), help="folder with the GRID clips and grid_transcripts.tsv")
    p.add_argument("-o", "--out", default=str(MEASURED_FILE), help="the table to write (JSON)")
    p.set_defaults(func=run)
