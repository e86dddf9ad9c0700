"""Speech made into singing: held vowels on the notes of a melody, for training positives over music.

A network trained with instrumental music as negatives learns "harmonic, sustained, pitched -> closed", and a
sung voice is all three: it stops moving on songs. Synthesized speech is turned into singing here with the WORLD
vocoder (pyworld, the [train] extra): the spectral envelope and aperiodicity are kept (the same voice and the
same phones), vowels are stretched into held notes, and the pitch follows a melody on a musical scale with
portamento between notes and vibrato on long ones. The timed phones are warped with the audio, so the mouth
targets follow the sung phones (a held "aa" keeps the mouth open for the whole note).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .espeak import Utterance
from .phonemes import ARPA_TO_VISEME
from .targets import VOWEL_VISEMES

FRAME_MS = 5.0  # WORLD analysis hop
HELD_NOTE_P = 0.7  # share of vowels held as a long note; the rest are sung at about speaking length
HELD_NOTE_MS = (250.0, 1200.0)  # how long a held vowel lasts when sung (never shorter than spoken)
SHORT_STRETCH = (1.0, 1.5)
CONSONANT_STRETCH = (0.8, 1.2)  # sung consonants keep roughly their spoken length
MAX_NOTE_MS = 1600.0  # no note is held longer than this (breath)
KEY_SHIFT_SEMITONES = (-4.0, 4.0)  # the melody's tonic around the voice's own median pitch
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9))  # major, natural minor, pentatonic
MELODY_STEP = (-2, 3)  # scale steps from one note to the next (numpy integers: high end excluded)
MELODY_SPAN_DEGREES = (-5, 8)  # the melody stays within about an octave and a half of the tonic
PORTAMENTO_MS = (20.0, 70.0)  # the glide between notes (time constant of a one-pole smoother)
VIBRATO_ONSET_MS = 180.0  # vibrato starts this long into a note
VIBRATO_HZ = (4.5, 6.5)
VIBRATO_CENTS = (15.0, 60.0)
F0_FLOOR, F0_CEIL = 60.0, 700.0


@dataclass
class SungInfo:
    tonic_hz: float
    scale: int
    stretch: float  # sung duration over spoken

    def as_dict(self) -> dict:
        return dict(sung=True, tonic_hz=round(self.tonic_hz, 1), scale=self.scale, stretch=round(self.stretch, 2))


def is_vowel(arpabet: str) -> bool:
    return ARPA_TO_VISEME.get(arpabet, "sil") in VOWEL_VISEMES and arpabet not in ("W", "Y")


def unit_stretches(units: list, rng: np.random.Generator) -> np.ndarray:
    """A duration factor per timed phone: vowels become notes (most of them held), consonants stay short."""
    out = np.empty(len(units))
    for i, (start, end, phone) in enumerate(units):
        if is_vowel(phone):
            spoken = max(end - start, 1.0)
            if rng.random() < HELD_NOTE_P:
                out[i] = max(1.0, rng.uniform(*HELD_NOTE_MS) / spoken)
            else:
                out[i] = min(rng.uniform(*SHORT_STRETCH), max(1.0, MAX_NOTE_MS / spoken))
        elif phone == "SIL":
            out[i] = 1.0
        else:
            out[i] = rng.uniform(*CONSONANT_STRETCH)
    return out


def time_map(units: list, stretches: np.ndarray, total_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Knots (old ms, new ms) of the piecewise-linear warp: each phone's span scaled by its factor, the audio
    outside the phones (leading and trailing silence) kept as it is."""
    old, new = [0.0], [0.0]
    for (start, end, _), factor in zip(units, stretches):
        start, end = max(start, old[-1]), max(end, old[-1])
        new.append(new[-1] + (start - old[-1]))
        old.append(start)
        new.append(new[-1] + (end - start) * factor)
        old.append(end)
    new.append(new[-1] + max(total_ms - old[-1], 0.0))
    old.append(max(total_ms, old[-1]))
    return np.asarray(old), np.asarray(new)


def melody_f0(units_new: list, n_frames: int, tonic_hz: float, scale: tuple, rng: np.random.Generator) -> np.ndarray:
    """F0 (Hz) per WORLD frame: one note per vowel on the scale, held between vowels, glided and with vibrato."""
    note = np.full(n_frames, np.nan)
    degree = int(rng.integers(0, 3))
    onsets = np.zeros(n_frames)
    for start, end, phone in units_new:
        if not is_vowel(phone):
            continue
        degree = int(np.clip(degree + rng.integers(*MELODY_STEP), *MELODY_SPAN_DEGREES))
        octave, step = divmod(degree, len(scale))
        hz = tonic_hz * 2.0 ** ((12 * octave + scale[step]) / 12.0)
        a, b = int(start / FRAME_MS), max(int(start / FRAME_MS) + 1, int(end / FRAME_MS))
        note[a:b] = hz
        onsets[a:b] = (np.arange(b - a) * FRAME_MS)
    # consonants and gaps carry the previous note on (the voice glides into the next)
    valid = ~np.isnan(note)
    if not valid.any():
        return np.full(n_frames, tonic_hz)
    idx = np.where(valid, np.arange(n_frames), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(valid))
    note = np.where(np.arange(n_frames) < first, note[first], note[idx])
    log_f0 = np.log(note)
    alpha = FRAME_MS / rng.uniform(*PORTAMENTO_MS)  # one-pole glide
    smooth = np.empty_like(log_f0)
    acc = log_f0[0]
    for i, value in enumerate(log_f0):
        acc += alpha * (value - acc)
        smooth[i] = acc
    t = np.arange(n_frames) * FRAME_MS / 1000.0
    depth = rng.uniform(*VIBRATO_CENTS) / 1200.0 * np.log(2.0)
    ramp = np.clip((onsets - VIBRATO_ONSET_MS) / 150.0, 0.0, 1.0)
    vibrato = depth * ramp * np.sin(2 * np.pi * rng.uniform(*VIBRATO_HZ) * t + rng.uniform(0, 2 * np.pi))
    return np.clip(np.exp(smooth + vibrato), F0_FLOOR, F0_CEIL)


def sing(utt: Utterance, rng: np.random.Generator) -> tuple[Utterance, dict]:
    """The utterance sung: same voice and phones, vowels held on a melody. Returns it with what was drawn."""
    import pyworld  # the [train] extra: only data generation needs the vocoder

    fs = utt.sample_rate
    x = utt.audio.astype(np.float64) / 32768.0
    f0, times = pyworld.dio(x, fs, frame_period=FRAME_MS, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL)
    f0 = pyworld.stonemask(x, f0, times, fs)
    envelope = pyworld.cheaptrick(x, f0, times, fs)
    aperiodicity = pyworld.d4c(x, f0, times, fs)

    total_ms = len(x) * 1000.0 / fs
    stretches = unit_stretches(utt.units, rng)
    old_knots, new_knots = time_map(utt.units, stretches, total_ms)
    n_new = int(new_knots[-1] / FRAME_MS) + 1
    old_ms = np.interp(np.arange(n_new) * FRAME_MS, new_knots, old_knots)
    source = np.clip(np.round(old_ms / FRAME_MS).astype(int), 0, len(f0) - 1)  # nearest analysis frame
    units_new = [(float(np.interp(s, old_knots, new_knots)), float(np.interp(e, old_knots, new_knots)), p)
                 for s, e, p in utt.units]

    voiced = f0[source] > 0
    spoken = f0[f0 > 0]
    median = float(np.median(spoken)) if len(spoken) else 150.0
    tonic = median * 2.0 ** (rng.uniform(*KEY_SHIFT_SEMITONES) / 12.0)
    scale_index = int(rng.integers(len(SCALES)))
    sung_f0 = np.where(voiced, melody_f0(units_new, n_new, tonic, SCALES[scale_index], rng), 0.0)
    y = pyworld.synthesize(np.ascontiguousarray(sung_f0), np.ascontiguousarray(envelope[source]),
                           np.ascontiguousarray(aperiodicity[source]), fs, frame_period=FRAME_MS)
    peak = float(np.max(np.abs(y))) or 1.0
    audio = np.clip(np.round(y / peak * 0.9 * 32767), -32768, 32767).astype(np.int16)
    info = SungInfo(tonic_hz=tonic, scale=scale_index, stretch=new_knots[-1] / max(total_ms, 1.0))
    return Utterance(audio=audio, sample_rate=fs, units=units_new), info.as_dict()
