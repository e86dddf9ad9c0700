"""Offline English sentences for the synthesizers: Debian's `fortunes` data, or a small built-in set.

Get the fortunes without installing them: ``apt-get download fortunes fortunes-min && dpkg -x fortunes_*.deb DIR``
then pass ``--text DIR`` (the files are under DIR/usr/share/games/fortunes); an installed package is found too.
"""
from __future__ import annotations

import random
import re
import zlib
from pathlib import Path

FORTUNE_SUBDIR = "usr/share/games/fortunes"
SYSTEM_FORTUNES = Path("/") / FORTUNE_SUBDIR
MIN_WORDS, MAX_WORDS = 3, 30
EVAL_SHARE = 20  # one sentence in 20 (by hash) is held out for evaluation
_SPEAKABLE = re.compile(r"[A-Za-z0-9 ,.;:!?'\"()\-]+")

# Enough for tests and smoke runs; real data comes from the fortunes (~21,700 sentences).
BUILTIN_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please open the big red box, then wait quietly.",
    "She sells sea shells by the sea shore.",
    "My mother made a marvellous plum pie before bedtime.",
    "Would you like a cup of tea or a glass of water?",
    "Bob bought a bright blue bike from the man on the beach.",
    "We were walking home when the rain suddenly stopped.",
    "Five wise men ate fresh fish at the fair.",
    "Nobody knows how many apples are left in the basket.",
    "I think that these three things should be enough.",
    "Good morning, everyone, and welcome to the meeting.",
    "Peter picked a peck of pickled peppers.",
    "Look at the moon, it is so bright tonight!",
    "Could you please call me back after lunch?",
    "The old oak tree outside my window lost all of its leaves.",
    "Big bears bounce balls by the bay.",
    "Zebras and giraffes were grazing together in the zoo.",
    "Unusual ideas often sound foolish at first.",
)


def fortune_files(root: Path | None = None) -> list[Path]:
    """Fortune text files under `root` (an unpacked .deb or the fortunes folder itself) or the system's."""
    candidates = [root / FORTUNE_SUBDIR, root] if root else [SYSTEM_FORTUNES]
    for folder in candidates:
        if folder.is_dir():
            return sorted(p for p in folder.rglob("*") if p.is_file() and not p.suffix and "art" not in p.name)
    return []


def split_sentences(text: str) -> list[str]:
    """Speakable sentences of MIN_WORDS..MAX_WORDS words from fortune-formatted text."""
    out = []
    for entry in text.split("\n%\n"):
        entry = re.split(r"\s--\s", re.sub(r"\s+", " ", entry).strip())[0]  # drop attributions
        for sentence in re.split(r"(?<=[.!?])\s+", entry):
            if (_SPEAKABLE.fullmatch(sentence) and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS
                    and sum(c.isdigit() for c in sentence) < 3):
                out.append(sentence)
    return out


def is_eval_sentence(sentence: str) -> bool:
    return zlib.crc32(sentence.encode()) % EVAL_SHARE == 0


def load_sentences(root: Path | None = None, split: str = "train", seed: int = 0) -> list[str]:
    """Deduplicated, shuffled (for `seed`) sentences of one split ('train' or 'eval')."""
    found = set()
    for path in fortune_files(root):
        found.update(split_sentences(path.read_text(encoding="utf-8", errors="ignore")))
    if not found:
        if root is not None:
            raise FileNotFoundError(f"no fortune files under {root}")
        found = set(BUILTIN_SENTENCES)
        if split == "eval":  # too few to hold some out: evaluation reuses them (noted in the metadata)
            return sorted(found)
    sentences = sorted(s for s in found if is_eval_sentence(s) == (split == "eval"))
    random.Random(seed).shuffle(sentences)
    return sentences
