"""Flite (Debian `libflite1`) through ctypes, with the end time of every segment.

Why a fourth synthesizer: flite carries three CMU ARCTIC clustergen voices built from recordings of real people,
two of them speakers no other synthesizer here has: *awb* (Scottish English male), *rms* (US male), and *slt*
(US female, a different model of the speaker behind festival's HTS voice). Flite runs in-process, ~80x real
time. Its utterance's Segment relation gives each phone's end time (a stop's segment starts at its closure,
as in festival, whose phone set it shares).

    apt-get install libflite1

Flite is a training-time tool only (the app never imports this module).
"""
from __future__ import annotations

import ctypes

import numpy as np

from .espeak import Utterance
from .festival import plain_ascii, segments_to_units  # festival's phone set and unit rules

VOICES = ("awb", "rms", "slt")  # libflite_cmu_us_<name>.so.1
DURATION_STRETCH_RANGE = (0.8, 1.35)  # >1 speaks slower


class _Wave(ctypes.Structure):  # cst_wave
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class _Voice(ctypes.Structure):  # the head of cst_voice: its name and feature set
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p)]


def _load():
    lib = ctypes.CDLL("libflite.so.1", mode=ctypes.RTLD_GLOBAL)
    for dep in ("libflite_usenglish.so.1", "libflite_cmulex.so.1"):  # the voices resolve their symbols here
        ctypes.CDLL(dep, mode=ctypes.RTLD_GLOBAL)
    sigs = {"flite_init": ([], ctypes.c_int),
            "flite_synth_text": ([ctypes.c_char_p, ctypes.c_void_p], ctypes.c_void_p),
            "utt_wave": ([ctypes.c_void_p], ctypes.POINTER(_Wave)),
            "utt_relation": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p),
            "relation_head": ([ctypes.c_void_p], ctypes.c_void_p),
            "item_next": ([ctypes.c_void_p], ctypes.c_void_p),
            "item_feat_string": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_char_p),
            "item_feat_float": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_float),
            "feat_set_float": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float], None),
            "delete_utterance": ([ctypes.c_void_p], None)}
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    lib.flite_init()
    return lib


def available_voices() -> list[str]:
    """The flite voices installed here (empty when libflite is missing)."""
    out = []
    for name in VOICES:
        try:
            ctypes.CDLL(f"libflite_cmu_us_{name}.so.1")
        except OSError:
            continue
        out.append(name)
    return out


class Flite:
    """Flite in this process; `synth` returns 16 kHz audio with [(start_ms, end_ms, ARPAbet)] units."""

    def __init__(self):
        try:
            self._lib = _load()
        except OSError as e:
            raise RuntimeError("flite is not installed (apt-get install libflite1)") from e
        self._voices: dict[str, ctypes.POINTER(_Voice)] = {}
        self._libc = ctypes.CDLL(None)  # clustergen's excitation noise comes from libc rand(): seeded per utterance

    def _voice(self, name: str):
        if name not in self._voices:
            lib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1")
            register = getattr(lib, f"register_cmu_us_{name}")
            register.argtypes, register.restype = [ctypes.c_char_p], ctypes.POINTER(_Voice)
            self._voices[name] = register(None)
        return self._voices[name]

    def synth(self, text: str, voice: str = "rms", stretch: float = 1.0, seed: int = 0) -> Utterance:
        lib, v = self._lib, self._voice(voice)
        lib.feat_set_float(v.contents.features, b"duration_stretch", stretch)
        self._libc.srand(seed)
        utt = lib.flite_synth_text(plain_ascii(text).encode(), ctypes.cast(v, ctypes.c_void_p))
        if not utt:
            return Utterance(np.zeros(0, np.int16), 16000, [])
        try:
            wave = lib.utt_wave(utt).contents
            audio = np.ctypeslib.as_array(wave.samples, (wave.num_samples * wave.num_channels,))
            audio = audio[::wave.num_channels].astype(np.int16)  # a copy: the utterance owns the buffer
            segments, start = [], 0.0
            item = lib.relation_head(lib.utt_relation(utt, b"Segment"))
            while item:
                end = 1000.0 * lib.item_feat_float(item, b"end")
                segments.append((start, end, lib.item_feat_string(item, b"name").decode()))
                start, item = end, lib.item_next(item)
            return Utterance(audio, wave.sample_rate, segments_to_units(segments))
        finally:
            lib.delete_utterance(utt)
