"""Festival speech synthesis (Debian `festival` + voice packages) with the time of every segment.

Why a third synthesizer: espeak-ng is one formant synthesizer and piper has one (male) voice. Festival's voices are
built from recordings of real people: CMU ARCTIC "slt" (US female, HTS statistical voice, 32 kHz) and the "kal" and
"ked" diphone voices (US males, concatenated recorded diphones, 16 kHz). Their spectra carry human vocal tracts,
which the real-speech evaluation rewards. Festival reports each segment's end time (`utt.save.segs`); a stop's
segment starts at its closure, so no closure correction is needed (unlike espeak).

    apt-get install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
    apt-get install festvox-ca-ona-hts festvox-suopuhe-lj   # optional: FOREIGN_VOICES below

Festival is a training-time tool only (the app never imports this module).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import unicodedata
import wave
from pathlib import Path

import numpy as np

from .espeak import Utterance
from .phonemes import ARPABET, SILENCE

VOICE_ROOT = Path("/usr/share/festival/voices")
# festival voice name -> the Scheme function that selects it
VOICES = {
    "cmu_us_slt_arctic_hts": "voice_cmu_us_slt_arctic_hts",  # female (HTS)
    "kal_diphone": "voice_kal_diphone",  # male (diphone)
    "ked_diphone": "voice_ked_diphone",  # male (diphone)
}
# Female recorded voices of other languages, used only when asked for by name (`--festival-voices`): English text
# read with their own letter-to-sound rules, so the phones are theirs, but timed exactly and sounding through a
# real woman's vocal tract, which the English voices have only once (slt).
FOREIGN_VOICES = {
    "upc_ca_ona_hts": "voice_upc_ca_ona_hts",  # Catalan female (HTS)
    "suo_fi_lj_diphone": "voice_suo_fi_lj_diphone",  # Finnish female (diphone, 22.05 kHz)
}
DURATION_STRETCH_RANGE = (0.8, 1.35)  # >1 speaks slower
# the diphone voices' intonation target (Hz); the HTS voice's F0 is part of its model: shifted in half-tones
F0_MEAN_RANGE, F0_STD_RANGE = (80.0, 150.0), (8.0, 30.0)
HALF_TONE_RANGE = (-3.0, 4.0)
SYNTH_TIMEOUT_S = 60.0

# Festival's US "radio" phone set -> ARPAbet (the other names are ARPAbet's, in lower case)
FESTIVAL_TO_ARPA = {
    "ax": ["AH"], "axr": ["ER"], "dx": ["T"], "nx": ["N"], "hv": ["HH"], "el": ["AH", "L"], "em": ["AH", "M"],
    "en": ["AH", "N"], "pau": [SILENCE], "h#": [SILENCE], "brth": [SILENCE], "#": [SILENCE],
}


# those voices' SAMPA-like phones (stress digit and length mark removed) -> the nearest ARPAbet mouth
FOREIGN_TO_ARPA = {
    "a": "AA", "e": "EH", "E": "EH", "i": "IY", "o": "AO", "O": "AO", "u": "UW", "y": "UW", "ax": "AH", "@": "AH",
    "b": "B", "d": "D", "f": "F", "g": "G", "k": "K", "l": "L", "L": "L", "m": "M", "n": "N", "p": "P", "r": "R",
    "rr": "R", "s": "S", "t": "T", "v": "V", "w": "W", "z": "Z", "j": "Y", "h": "HH", "S": "SH", "Z": "ZH",
    "J": "N", "N": "NG", "ng": "NG", "T": "TH", "dZ": "JH", "tS": "CH", "dz": "Z", "ts": "S",
}


def foreign_to_arpa(phone: str) -> list[str]:
    base = phone.rstrip("0123456789:")
    return [FOREIGN_TO_ARPA.get(base, SILENCE)]  # pau, #, ## and anything unknown: silence


def festival_to_arpa(phone: str) -> list[str]:
    if phone in FESTIVAL_TO_ARPA:
        return list(FESTIVAL_TO_ARPA[phone])
    return [phone.upper()] if phone.upper() in ARPABET else [SILENCE]


def available_voices() -> list[str]:
    """The festival voices installed here (empty when festival itself is missing)."""
    if shutil.which("festival") is None:
        return []
    return [name for name in VOICES if any(VOICE_ROOT.glob(f"*/{name}"))]


def available_foreign_voices() -> list[str]:
    if shutil.which("festival") is None:
        return []
    return [name for name in FOREIGN_VOICES if any(VOICE_ROOT.glob(f"*/{name}"))]


def parse_segs(text: str) -> list[tuple[float, float, str]]:
    """`utt.save.segs` output (a '#' line, then `end_seconds colour name` per segment) -> [(start_ms, end_ms, name)]."""
    segments, start = [], 0.0
    body = text.split("#", 1)[1] if "#" in text else text
    for line in body.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        end = float(fields[0]) * 1000.0
        segments.append((start, end, fields[2]))
        start = end
    return segments


def segments_to_units(segments, to_arpa=festival_to_arpa) -> list[tuple[float, float, str]]:
    """Festival segments -> ARPAbet units; a two-phone segment (syllabic el/em/en) is split 40/60; pauses merge."""
    units = []
    for start, end, name in segments:
        phones = to_arpa(name)
        if len(phones) == 2:
            mid = start + 0.4 * (end - start)
            pieces = [(start, mid, phones[0]), (mid, end, phones[1])]
        else:
            pieces = [(start, end, phones[0])]
        for piece in pieces:
            if units and piece[2] == SILENCE and units[-1][2] == SILENCE:
                units[-1] = (units[-1][0], piece[1], SILENCE)
            elif piece[1] > piece[0]:
                units.append(piece)
    return units


def plain_ascii(text: str) -> str:
    """Text as the synthesizers' C front ends take it: accents dropped (Zoë -> Zoe), whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").split())


def scheme_string(text: str) -> str:
    """Text as a Scheme string literal festival accepts: ASCII only, quotes and backslashes escaped."""
    return '"' + plain_ascii(text.replace("\\", " ")).replace('"', "'") + '"'


class Festival:
    """One long-running `festival --pipe` process; each `synth` call writes a wav and its segments to a temp dir."""

    def __init__(self):
        if shutil.which("festival") is None:
            raise RuntimeError("festival is not installed (apt-get install festival festvox-us-slt-hts "
                               "festvox-kallpc16k festvox-kdlpc16k)")
        self._dir = Path(tempfile.mkdtemp(prefix="avatar-festival-"))
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, text=True, bufsize=1)
        return self._proc

    def synth(self, text: str, voice: str = "cmu_us_slt_arctic_hts", stretch: float = 1.0,
              f0_mean: float = 105.0, f0_std: float = 14.0, half_tones: float = 0.0) -> Utterance:
        wav, segs, done = self._dir / "utt.wav", self._dir / "utt.segs", self._dir / "done"
        for path in (wav, segs, done):
            path.unlink(missing_ok=True)
        proc = self._start()
        if voice.endswith("_hts"):  # hts_engine ignores Duration_Stretch: its own rate (-r) and pitch (-fm)
            intonation = (f"(set! hts_engine_params (append hts_engine_params (list (list \"-r\" {1 / stretch:.4f}) "
                          f"(list \"-fm\" {half_tones:.3f}))))\n")
        else:
            intonation = (f"(set! int_lr_params '((target_f0_mean {f0_mean:.1f}) (target_f0_std {f0_std:.1f}) "
                          "(model_f0_mean 170) (model_f0_std 34)))\n")
        select = VOICES.get(voice) or FOREIGN_VOICES[voice]
        proc.stdin.write(f"({select})\n{intonation}(Parameter.set 'Duration_Stretch {stretch:.4f})\n"
                         f"(set! avatar_utt (utt.synth (Utterance Text {scheme_string(text)})))\n"
                         f"(utt.save.wave avatar_utt \"{wav}\" 'riff)\n(utt.save.segs avatar_utt \"{segs}\")\n"
                         f"(set! avatar_fd (fopen \"{done}\" \"w\"))\n(format avatar_fd \"done\")\n(fclose avatar_fd)\n")
        proc.stdin.flush()
        self._wait_done(proc, done)
        if not (wav.exists() and segs.exists()):
            self.close()  # a Scheme error may have left the process in an odd state: start afresh next time
            return Utterance(np.zeros(0, np.int16), 16000, [])
        with wave.open(str(wav), "rb") as w:
            rate = w.getframerate()
            audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            if w.getnchannels() > 1:
                audio = audio.reshape(-1, w.getnchannels())[:, 0]
        to_arpa = foreign_to_arpa if voice in FOREIGN_VOICES else festival_to_arpa
        return Utterance(audio.copy(), rate, segments_to_units(parse_segs(segs.read_text()), to_arpa))

    def _wait_done(self, proc: subprocess.Popen, done: Path) -> None:
        """Festival's stdout is block-buffered in a pipe, so completion is signalled by a file it writes last."""
        deadline = time.monotonic() + SYNTH_TIMEOUT_S
        while not done.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                return
            time.sleep(0.002)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __del__(self):
        try:
            self.close()
            shutil.rmtree(self._dir, ignore_errors=True)
        except Exception:
            pass
