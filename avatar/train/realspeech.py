"""Real human speech with phone labels, for evaluation: Debian's asterisk prompts, force-aligned by pocketsphinx.

    apt-get install asterisk-core-sounds-en-g722 asterisk-core-sounds-en
    (568 prompts, 25.5 min, one female speaker, 16 kHz G.722, CC-BY-SA-3.0; transcripts in the second package)

pocketsphinx labels agree with exact synthesizer timing on 84 % of viseme frames, jaw_open r 0.90 on clean speech
(`avatar train label-check`, `aligner_agreement` below): a ceiling for scores, not ground truth.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from avatar.audio import HOP_LENGTH, load_audio
from . import augment, espeak, festival, flite, piper_voice
from .targets import mouth_targets, viseme_targets
from .text import load_sentences

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SAMPLE_RATE = 16000
DITHER_LSB = 2  # pocketsphinx fails to set up alignment on digital silence
ALIGN_FRAME_MS = 10
ALIGN_SHIFT_MS = 10  # pocketsphinx boundaries come ~10 ms early (measured against exact espeak timing)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"*": " star ", "#": " pound ", "%": " percent ", "&": " and ", "@": " at "}


class RealSpeechUnavailable(RuntimeError):
    """The Debian asterisk prompt packages or pocketsphinx are not installed."""


@dataclass
class Clip:
    name: str
    text: str
    audio: np.ndarray  # float32 mono, 16 kHz
    units: list  # [(start_ms, end_ms, arpabet)] from forced alignment


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + _number_words(n % 100))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize_transcript(text: str) -> str:
    """Lower-case words the aligner's dictionary knows: numbers spelled out, symbols named, punctuation gone."""
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", text)
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def read_transcripts(path: Path = ASTERISK_TRANSCRIPTS) -> dict[str, str]:
    """{prompt name: transcript} for spoken prompts (bracketed descriptions of tones are left out)."""
    out = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            text = text.strip()
            if text and not text.startswith("["):
                out[name.strip()] = text
    return out


class Aligner:
    """pocketsphinx 5 forced alignment (en-us model and dictionary inside the wheel)."""

    def __init__(self):
        from pocketsphinx import Decoder  # the [train] extra; callers turn its absence into RealSpeechUnavailable
        self.decoder = Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL")

    def known(self, words: str) -> bool:
        return all(self.decoder.lookup_word(w) is not None for w in words.split())

    def align(self, audio: np.ndarray, words: str, seed: int = 0) -> list:
        """[(start_ms, end_ms, arpabet)] for 16 kHz float audio and its normalised transcript."""
        x = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int32)
        x += np.random.default_rng(seed).integers(-DITHER_LSB, DITHER_LSB + 1, len(x))
        raw = np.clip(x, -32768, 32767).astype(np.int16).tobytes()
        d = self.decoder
        d.set_align_text(words)
        d.start_utt(); d.process_raw(raw, full_utt=True); d.end_utt()
        d.set_alignment()
        d.start_utt(); d.process_raw(raw, full_utt=True); d.end_utt()
        phones = [(p.start * ALIGN_FRAME_MS + ALIGN_SHIFT_MS, (p.start + p.duration) * ALIGN_FRAME_MS + ALIGN_SHIFT_MS,
                   p.name) for p in d.get_alignment().phones()]
        d.activate_search()
        return phones


def asterisk_clips(limit: int | None = None, sounds: Path = ASTERISK_SOUNDS,
                   transcripts: Path = ASTERISK_TRANSCRIPTS, progress: bool = False) -> tuple[list[Clip], dict]:
    """Aligned asterisk prompts (sorted by name) and counts of what was skipped and why."""
    if not transcripts.exists() or not sounds.is_dir():
        raise RealSpeechUnavailable("the asterisk prompts are not installed: apt-get install "
                                    "asterisk-core-sounds-en-g722 asterisk-core-sounds-en")
    try:
        aligner = Aligner()
    except ImportError as e:
        raise RealSpeechUnavailable("pocketsphinx is not installed: pip install pocketsphinx") from e
    names = sorted(read_transcripts(transcripts).items())
    clips, skipped = [], {"no_audio": 0, "oov": 0, "align_failed": 0}
    for name, text in tqdm(names, desc="align real speech", disable=not progress):
        if limit is not None and len(clips) >= limit:
            break
        path = sounds / f"{name}.g722"
        words = normalize_transcript(text)
        if not path.exists():
            skipped["no_audio"] += 1
            continue
        if not words or not aligner.known(words):
            skipped["oov"] += 1
            continue
        audio = load_audio(path)  # PyAV reads raw G.722 by its extension
        try:
            units = aligner.align(audio, words)
        except RuntimeError:
            skipped["align_failed"] += 1
            continue
        if not units:
            skipped["align_failed"] += 1
            continue
        clips.append(Clip(name, text, audio, units))
    return clips, skipped


# ----------------------------------------------------------------------------------------------------
# how far the labels can be trusted: the aligner against exact synthesizer timing


def _clean_voices() -> list[tuple[str, Callable[[str], object]]]:
    """(label, text -> Utterance) for one clean setting of every synthesizer voice installed here."""
    voices = []
    try:
        speaker = espeak.Espeak.get()
        voices.append(("espeak en-us+m3", lambda text: speaker.synth(text, "en-us+m3", 170, 50, 50)))
    except Exception:  # noqa: BLE001 - a missing synthesizer just leaves its row out
        pass
    try:
        piper = piper_voice.Piper(seed=0)
        voices.append(("piper joe", lambda text: piper.synth(text)))
    except Exception:  # noqa: BLE001
        pass
    if names := festival.available_voices():
        fest = festival.Festival()
        voices += [(f"festival {v}", lambda text, v=v: fest.synth(text, v)) for v in names]
    if names := flite.available_voices():
        fl = flite.Flite()
        voices += [(f"flite {v}", lambda text, v=v: fl.synth(text, v)) for v in names]
    return voices


def aligner_agreement(per_voice: int = 12, text_root: Path | None = None, progress: bool = False) -> dict:
    """pocketsphinx labels vs the exact phone times of clean synthetic speech (held-out sentences, -26 dBFS):
    {voice: dict(r=jaw_open Pearson r, viseme=frame agreement, clips=n)} plus an "all" row.

    This is how much a perfect lip-sync model could score against aligned labels of clean real speech."""
    sentences = load_sentences(text_root, "eval", 1)
    aligner, rng = Aligner(), np.random.default_rng(0)
    pooled: dict[str, list] = {}
    voices = _clean_voices()
    k = 0
    for label, synth in tqdm(voices, desc="label check", disable=not progress):
        done = 0
        while done < per_voice and k < len(sentences):
            text, k = sentences[k], k + 1
            words = normalize_transcript(text)
            if not words or not aligner.known(words):
                continue
            utt = synth(text)
            if len(utt.audio) == 0:
                continue
            audio = augment.set_level(augment.to_16k(utt.audio.astype(np.float32) / 32768, utt.sample_rate, 1.0,
                                                     rng), -26.0)
            try:
                aligned = aligner.align(audio, words)
            except RuntimeError:
                continue
            n = len(audio) // HOP_LENGTH
            for key in (label, "all"):
                rows = pooled.setdefault(key, [[], [], []])
                rows[0].append(mouth_targets(utt.units, n)[:, 0])
                rows[1].append(mouth_targets(aligned, n)[:, 0])
                rows[2].append(viseme_targets(utt.units, n) == viseme_targets(aligned, n))
            done += 1
    out = {}
    for key, (exact, labelled, same) in pooled.items():
        out[key] = dict(r=float(np.corrcoef(np.concatenate(exact), np.concatenate(labelled))[0, 1]),
                        viseme=float(np.concatenate(same).mean()), clips=len(exact))
    return out
