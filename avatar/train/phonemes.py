"""Phoneme names from the synthesizers and the aligner -> ARPAbet -> the 15 visemes of `avatar.visemes`.

Three sources name phonemes differently: espeak-ng reports its own mnemonics (``aI``, ``tS``, stress marks
``'`` ``,``), piper reports one IPA code point per token, pocketsphinx reports ARPAbet. Everything is
normalised to ARPAbet first, then mapped to a viseme, so one table decides what the mouth does.
"""
from __future__ import annotations

from avatar.visemes import VISEME_INDEX

SILENCE = "SIL"

# ---- ARPAbet -> viseme (Oculus/MPEG-4 15-class set) ----
ARPA_TO_VISEME = {
    "SIL": "sil",
    "P": "PP", "B": "PP", "M": "PP",
    "F": "FF", "V": "FF",
    "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH",
    "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn",
    "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AY": "aa", "AW": "aa",
    "EH": "E", "EY": "E",
    "IH": "ih", "IY": "ih", "Y": "ih",
    "AO": "oh", "OW": "oh", "OY": "oh",
    "UH": "ou", "UW": "ou", "W": "ou",
}
ARPABET = tuple(ARPA_TO_VISEME)  # 40 symbols incl. SIL
# Stops and affricates: espeak marks these at the release burst, not at the closure (see espeak.py).
STOPS = frozenset({"P", "B", "T", "D", "K", "G", "CH", "JH"})
BILABIALS = frozenset({"P", "B", "M"})

# ---- espeak-ng English mnemonics -> ARPAbet (a list: some mnemonics are two phones) ----
ESPEAK_TO_ARPA = {
    "@": ["AH"], "@2": ["AH"], "@5": ["AH"], "@L": ["AH", "L"], "@-": ["AH"], "3": ["ER"], "3:": ["ER"],
    "a": ["AE"], "a#": ["AH"], "aa": ["AE"], "A:": ["AA"], "A@": ["AA", "R"], "0": ["AA"], "aI": ["AY"],
    "aI2": ["AY"], "aI@": ["AY", "AH"], "aI3": ["AY", "ER"], "aU": ["AW"], "aU@": ["AW", "ER"], "E": ["EH"],
    "e@": ["EH", "R"], "eI": ["EY"], "i": ["IY"], "i:": ["IY"], "i@": ["IH", "R"], "i@3": ["IH", "R"],
    "I": ["IH"], "I2": ["IH"], "I#": ["IH"], "O:": ["AO"], "O": ["AO"], "O2": ["AO"], "O@": ["AO", "R"],
    "o@": ["AO", "R"], "OI": ["OY"], "oU": ["OW"], "u:": ["UW"], "u": ["UW"], "U": ["UH"], "U@": ["UH", "R"],
    "V": ["AH"], "VR": ["ER"], "IR": ["ER"], "ER": ["ER"],
    "p": ["P"], "b": ["B"], "t": ["T"], "d": ["D"], "k": ["K"], "g": ["G"], "f": ["F"], "v": ["V"],
    "T": ["TH"], "D": ["DH"], "s": ["S"], "z": ["Z"], "S": ["SH"], "Z": ["ZH"], "tS": ["CH"], "dZ": ["JH"],
    "h": ["HH"], "x": ["HH"], "m": ["M"], "n": ["N"], "N": ["NG"], "l": ["L"], "r": ["R"], "w": ["W"],
    "j": ["Y"], "?": ["T"],
    "_": ["SIL"], "_:": ["SIL"], "_!": ["SIL"], "_|": ["SIL"],
}
ESPEAK_STRESS = "',="
ESPEAK_ATTACH_PREVIOUS = frozenset({";"})  # palatalisation marker events: part of the phone before


def espeak_to_arpa(mnemonic: str) -> list[str]:
    """ARPAbet phones for one espeak mnemonic; unknown suffix modifiers (``t#``, ``l/2``, ``n-``) are dropped."""
    name = mnemonic.lstrip(ESPEAK_STRESS)
    while name and name not in ESPEAK_TO_ARPA:
        name = name[:-1]
    return list(ESPEAK_TO_ARPA[name]) if name else [SILENCE]


# ---- piper (espeak IPA, one token per code point) -> ARPAbet ----
IPA_TO_ARPA = {
    "ə": "AH", "ɐ": "AH", "ʌ": "AH", "ɜ": "ER", "ɚ": "ER", "æ": "AE", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO",
    "ɛ": "EH", "e": "EH", "ɪ": "IH", "ᵻ": "IH", "i": "IY", "ʊ": "UH", "u": "UW", "o": "OW", "a": "AA",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "ɡ": "G", "g": "G", "f": "F", "v": "V", "θ": "TH",
    "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "m": "M", "n": "N", "ŋ": "NG", "l": "L",
    "ɫ": "L", "ɹ": "R", "r": "R", "w": "W", "j": "Y", "ɾ": "T", "ʔ": "T", "x": "HH",
}
IPA_PAIRS = {("e", "ɪ"): "EY", ("a", "ɪ"): "AY", ("a", "ʊ"): "AW", ("o", "ʊ"): "OW", ("ɔ", "ɪ"): "OY",
             ("t", "ʃ"): "CH", ("d", "ʒ"): "JH"}
IPA_STRESS = frozenset("ˈˌ")
IPA_ATTACH_PREVIOUS = frozenset({"ː", "ʲ", "\u0329", "\u0303", "\u02de"})  # length, syllabic, nasal, rhotic marks
IPA_WORD_BREAK = " "
IPA_PAUSE = frozenset({",", ".", "?", "!", ";", ":", "^", "$", "_", "-", "…", "—"})


def to_viseme(arpa: str) -> str:
    """Viseme name of one ARPAbet phone (stress digits ignored, unknown phones count as silence)."""
    return ARPA_TO_VISEME.get(arpa.rstrip("012").upper(), "sil")


def to_viseme_index(arpa: str) -> int:
    return VISEME_INDEX[to_viseme(arpa)]
