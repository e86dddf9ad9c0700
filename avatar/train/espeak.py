"""espeak-ng (from the `espeakng-loader` wheel) through ctypes, with the exact time of every phoneme.

espeak-ng is GPL-3.0+: it is a training-time tool only; the app never imports this module.
"""
from __future__ import annotations

import ctypes as C
import os
from dataclasses import dataclass

import numpy as np

from .phonemes import ESPEAK_ATTACH_PREVIOUS, SILENCE, STOPS, espeak_to_arpa

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4

# English accents that sound human enough, and voice variants (robotic/whisper/croak ones left out).
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "klatt6", "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty",
            "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward", "Gene", "grandma", "grandpa",
            "gustave", "ian", "iven", "iven2", "john", "linda", "max", "Michael", "michel", "miguel", "Mike",
            "norbert", "pablo", "paul", "pedro", "quincy", "Reed", "rob", "robert", "steph", "travis", "victor",
            "zac", "shelby", "sandro", "marcelo", "Lee", "Jacky", "Hugo", "Henrique", "Denis", "Diogo", "Storm")
RATE_RANGE = (120, 260)  # words per minute
PITCH_RANGE = (15, 85)  # 0..100
PITCH_SPAN_RANGE = (20, 90)  # intonation range, 0..100

# Unvoiced stops: espeak's event marks the burst; the silent closure before it belongs to the stop.
CLOSURE_SILENCE_DB = -60.0
CLOSURE_MAX_MS = 120.0
CLOSURE_STEP_MS = 2.0


class _EventId(C.Union):
    _fields_ = [("number", C.c_int), ("name", C.c_char_p), ("string", C.c_char * 8)]


class _Event(C.Structure):
    _fields_ = [("type", C.c_int), ("unique_identifier", C.c_uint), ("text_position", C.c_int),
                ("length", C.c_int), ("audio_position", C.c_int), ("sample", C.c_int),
                ("user_data", C.c_void_p), ("id", _EventId)]


_SYNTH_CALLBACK = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_short), C.c_int, C.POINTER(_Event))


@dataclass
class Utterance:
    audio: np.ndarray  # int16 mono at sample_rate
    sample_rate: int
    units: list  # [(start_ms, end_ms, arpabet)]


class Espeak:
    """One espeak-ng instance per process (the library keeps global state)."""

    _instance = None

    def __init__(self):
        import espeakng_loader  # the [train] extra: loaded with the first synthesis, not for the phone tables
        lib = C.CDLL(os.environ.get("ESPEAK_LIB", espeakng_loader.get_library_path()))
        lib.espeak_Initialize.argtypes = [C.c_int, C.c_int, C.c_char_p, C.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_Synth.argtypes = [C.c_void_p, C.c_size_t, C.c_uint, C.c_int, C.c_uint, C.c_uint,
                                     C.POINTER(C.c_uint), C.c_void_p]
        lib.espeak_SetVoiceByName.argtypes = [C.c_char_p]
        lib.espeak_SetParameter.argtypes = [C.c_int, C.c_int, C.c_int]
        data = os.environ.get("ESPEAK_DATA", espeakng_loader.get_data_path()).encode()
        self.sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data,
                                                 INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (data at {data.decode()})")
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # keep a reference: C holds only a pointer
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> "Espeak":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_synth(self, wav, n, events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                self._events.append((events[i].audio_position, events[i].id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def synth(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
              pitch_range: int = 50) -> Utterance:
        """Synthesize `text`; units are timed ARPAbet phones, stop closures included in the stop."""
        self._chunks.clear()
        self._events.clear()
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_SetParameter(PARAM_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
        self._lib.espeak_SetParameter(PARAM_RANGE, int(pitch_range), 0)
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        total_ms = len(audio) * 1000.0 / self.sample_rate
        units = events_to_units(self._events, total_ms)
        return Utterance(audio, self.sample_rate, move_stop_closures(units, audio, self.sample_rate))


def events_to_units(events, total_ms: float) -> list:
    """[(ms, mnemonic)] phoneme events -> [(start_ms, end_ms, arpabet)], consecutive silences merged."""
    spans = []
    for i, (ms, name) in enumerate(events):
        end = events[i + 1][0] if i + 1 < len(events) else total_ms
        if name in ESPEAK_ATTACH_PREVIOUS and spans:
            spans[-1][1] = end
        else:
            spans.append([ms, end, name])
    units = []
    for start, end, name in spans:
        if end <= start:
            continue
        phones = espeak_to_arpa(name)
        step = (end - start) / len(phones)  # two-phone mnemonics (``aI@``) share their span evenly
        for k, phone in enumerate(phones):
            if units and phone == SILENCE and units[-1][2] == SILENCE:
                units[-1] = (units[-1][0], start + (k + 1) * step, SILENCE)
            else:
                units.append((start + k * step, start + (k + 1) * step, phone))
    return units


def move_stop_closures(units, audio: np.ndarray, sample_rate: int) -> list:
    """Move each stop's start back over the silent closure espeak credits to the phone before it."""
    hop = int(sample_rate * CLOSURE_STEP_MS / 1000)
    n = len(audio) // hop
    if n == 0:
        return list(units)
    x = audio[: n * hop].astype(np.float32).reshape(n, hop) / 32768.0
    db = 10 * np.log10((x ** 2).mean(axis=1) + 1e-10)
    units = list(units)
    for i in range(1, len(units)):
        start, end, phone = units[i]
        prev_start, _, prev_phone = units[i - 1]
        if phone not in STOPS or prev_phone == SILENCE:
            continue
        f = first = int(start / CLOSURE_STEP_MS) - 1
        while (0 <= f < n and db[f] < CLOSURE_SILENCE_DB and (first - f) * CLOSURE_STEP_MS < CLOSURE_MAX_MS
               and f * CLOSURE_STEP_MS > prev_start + 10):
            f -= 1
        if f < first:
            new_start = (f + 1) * CLOSURE_STEP_MS
            units[i - 1] = (prev_start, new_start, prev_phone)
            units[i] = (new_start, end, phone)
    return units
