"""Synthetic training streams: many synthetic voices, exact phone timing, the gaps and noise of a live mic.

A dataset is a folder of shards. Shard ``k`` is one continuous 16 kHz stream (utterances separated by silence
and noise gaps) with a viseme class and four mouth parameters per 10 ms frame. It depends only on
(seed, k, config), so a dataset is the same for a seed whatever the number of worker processes.

    avatar train gen --hours 2 --out data/lipsync-train
    avatar train gen --hours 1 --music-share 0.4 --noise-share 0.3 --out data/music  # music/noise as negatives
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multiprocessing.connection import wait

from tqdm import tqdm

# each synthesizer's own dependency (libespeak-ng, piper, festival/flite binaries) loads when it is first used
from . import augment, espeak, festival, flite, piper_voice, sung
from .music import MusicSource
from .text import load_sentences
from .targets import mouth_targets, rules_named, viseme_targets

SAMPLE_RATE = augment.SAMPLE_RATE
HOP_LENGTH = 160  # 10 ms frames
SHARD_SECONDS = 300.0
# Gaps between utterances: a live stream is mostly not speech. (probability, min s, max s)
GAP_KINDS = ((0.45, 0.08, 0.6), (0.4, 0.6, 2.5), (0.15, 2.5, 8.0))
P_DIGITAL_SILENCE = 0.1  # segments with no background at all
P_REVERB, P_EQ, P_CLIP = 0.35, 0.5, 0.03
CLIP_DRIVE_DB = (6.0, 18.0)
# music in the room (config.music_share): a stretch of music alone before the utterance, and in some cases
# music going on under the speech, quieter than it; frames without speech keep the closed 'sil' targets
MUSIC_ALONE_S = (1.0, 12.0)  # music-only stretch added to the gap
MUSIC_ALONE_DBFS = augment.GAIN_DBFS_RANGE  # music alone is as loud as speech can be: level is no cue
P_MUSIC_UNDER_SPEECH = 0.5
MUSIC_SNR_DB = (3.0, 20.0)  # speech above music playing under it
MUSIC_STOPS_BEFORE_S = (0.0, 1.0)  # music that does not go on under speech ends this long before the voice
MUSIC_FADE_S = (0.01, 0.5)
# singing (config.sung_share): an utterance sung (avatar/train/sung.py), mostly over an accompaniment, which in a
# song is louder against the voice than music in the room is against speech
P_SUNG_ACCOMPANIED = 0.8
SUNG_SNR_DB = (-3.0, 12.0)  # voice above the accompaniment under it
# room noise (config.noise_share): hum, typing, fan or traffic over a whole segment, louder than the background
ROOM_NOISE_DBFS = (-65.0, -30.0)
# espeak variants never used for training: the held-out synthetic voices of `avatar train evaluate`
EVAL_VARIANTS = ("m7", "f4", "klatt3", "Alicia", "john", "steph")


@dataclass
class GenConfig:
    seed: int = 0
    split: str = "train"  # 'train' or 'eval' (held-out sentences and espeak voices)
    piper_share: float = 0.25  # share of utterances from piper
    festival_share: float = 0.0  # share from festival's recorded-voice synthesizers (the rest from espeak)
    festival_voices: tuple | None = None  # festival voices to use (None: every installed one)
    flite_share: float = 0.0  # share from flite's clustergen voices (awb, rms, slt), drawn after festival's
    shard_seconds: float = SHARD_SECONDS
    speed_range: tuple = augment.SPEED_RANGE  # resampling speed: >1 raises pitch and formants (shorter tract)
    text_root: str | None = None  # an unpacked fortunes .deb; None: the system's fortunes or built-in text
    targets: str = "hand"  # mouth target rules (avatar/train/targets.py): "hand" or "measured" from real faces
    # both 0 by default, so configs from before they existed give the same data (no random draws are made)
    music_share: float = 0.0  # share of utterances with instrumental music before (and sometimes under) them
    noise_share: float = 0.0  # share of segments with hum, keyboard, fan or traffic noise (augment.NOISE_KINDS)
    sung_share: float = 0.0  # share of utterances sung (held vowels on a melody), mostly over music: positives


def espeak_voices(split: str) -> list[str]:
    held_out = set(EVAL_VARIANTS)
    variants = [v for v in espeak.VARIANTS if (v in held_out) == (split == "eval")]
    return [f"{a}+{v}" for a in espeak.ACCENTS for v in variants]


def _shard_rng(config: GenConfig, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, index, 0 if config.split == "train" else 1])


def _gap_seconds(rng: np.random.Generator) -> float:
    probs = np.array([k[0] for k in GAP_KINDS])
    _, lo, hi = GAP_KINDS[rng.choice(len(GAP_KINDS), p=probs / probs.sum())]
    return float(rng.uniform(lo, hi))


def _synthesize(rng, sentences, voices, config, synths, shard_index):
    text = sentences[int(rng.integers(len(sentences)))]
    pick = rng.random()
    if config.piper_share <= pick < config.piper_share + config.festival_share:
        if synths.get("festival") is None:
            synths["festival"] = festival.Festival()
            installed = festival.available_voices()
            if config.festival_voices:  # the other languages' voices only when named
                installed += festival.available_foreign_voices()
            synths["festival_voices"] = [v for v in installed if v in (config.festival_voices or installed)]
            if not synths["festival_voices"]:
                raise RuntimeError("festival_share > 0 but none of the festival voices asked for is installed "
                                   "(see avatar/train/festival.py)")
        names = synths["festival_voices"]
        settings = dict(voice=names[int(rng.integers(len(names)))],
                        stretch=rng.uniform(*festival.DURATION_STRETCH_RANGE),
                        f0_mean=rng.uniform(*festival.F0_MEAN_RANGE), f0_std=rng.uniform(*festival.F0_STD_RANGE),
                        half_tones=rng.uniform(*festival.HALF_TONE_RANGE))
        utt = synths["festival"].synth(text, **settings)
        meta = dict(source="festival", **settings)
    elif 0 <= pick - config.piper_share - config.festival_share < config.flite_share:
        if synths.get("flite") is None:
            synths["flite"] = flite.Flite()
            synths["flite_voices"] = flite.available_voices()
            if not synths["flite_voices"]:
                raise RuntimeError("flite_share > 0 but no flite voice is installed (apt-get install libflite1)")
        names = synths["flite_voices"]
        settings = dict(voice=names[int(rng.integers(len(names)))],
                        stretch=rng.uniform(*flite.DURATION_STRETCH_RANGE), seed=int(rng.integers(2**31)))
        utt = synths["flite"].synth(text, **settings)
        meta = dict(source="flite", **settings)
    elif pick < config.piper_share:
        if synths.get("piper") is None:
            synths["piper"] = piper_voice.Piper(seed=config.seed * 100003 + shard_index)
        settings = dict(length_scale=rng.uniform(*piper_voice.LENGTH_SCALE_RANGE),
                        noise_scale=rng.uniform(*piper_voice.NOISE_SCALE_RANGE),
                        noise_w=rng.uniform(*piper_voice.NOISE_W_RANGE))
        utt = synths["piper"].synth(text, **settings)
        meta = dict(source="piper", voice="en_US-joe-medium", **settings)
    else:
        settings = dict(voice=voices[int(rng.integers(len(voices)))], rate=int(rng.integers(*espeak.RATE_RANGE)),
                        pitch=int(rng.integers(*espeak.PITCH_RANGE)),
                        pitch_range=int(rng.integers(*espeak.PITCH_SPAN_RANGE)))
        utt = espeak.Espeak.get().synth(text, **settings)
        meta = dict(source="espeak", **settings)
    meta["text"] = text
    return utt, meta


def _fade_out(audio: np.ndarray, n_fade: int) -> np.ndarray:
    n_fade = min(n_fade, len(audio))
    if n_fade > 0:
        audio[len(audio) - n_fade:] *= np.linspace(1.0, 0.0, n_fade, dtype=np.float32)
    return audio


def add_music(gap: np.ndarray, speech_len: int, speech_db: float, rng: np.random.Generator,
              source, p_under: float = P_MUSIC_UNDER_SPEECH,
              snr_db: tuple = MUSIC_SNR_DB) -> tuple[np.ndarray, np.ndarray, dict]:
    """(longer gap, music to add to gap + speech, what was drawn): music alone for a few seconds before the
    utterance, then either (p_under) going on under the speech snr_db below it, or fading out before the voice."""
    gap = np.zeros(len(gap) + int(rng.uniform(*MUSIC_ALONE_S) * SAMPLE_RATE), np.float32)
    under = bool(rng.random() < p_under)
    if under:
        n_music, level = len(gap) + speech_len, speech_db - rng.uniform(*snr_db)
    else:
        n_music = max(1, len(gap) - int(rng.uniform(*MUSIC_STOPS_BEFORE_S) * SAMPLE_RATE))
        level = rng.uniform(*MUSIC_ALONE_DBFS)
    clip, info = source.segment(n_music, rng)
    if np.any(clip):
        clip = augment.set_level(clip, level)
    clip = _fade_out(clip, int(rng.uniform(*MUSIC_FADE_S) * SAMPLE_RATE))
    music = np.zeros(len(gap) + speech_len, np.float32)
    music[:n_music] = clip
    return gap, music, dict(info, level_dbfs=round(float(level), 1), under_speech=under,
                            seconds=round(n_music / SAMPLE_RATE, 2))


def generate_shard(config: GenConfig, index: int, sentences: list[str]) -> dict:
    """One stream of about `config.shard_seconds`: audio int16, visemes (T,) uint8, params (T,4) float16, meta.

    Bit-exact for (config, index) when run first in a fresh process (see `generate`); later calls in the same
    process differ by a few ms per utterance, because espeak-ng keeps state between syntheses.
    """
    rng = _shard_rng(config, index)
    voices = espeak_voices(config.split)
    synths: dict = {}
    pieces, units, metas = [], [], []
    position = 0  # samples
    while position < config.shard_seconds * SAMPLE_RATE:
        utt, meta = _synthesize(rng, sentences, voices, config, synths, index)
        if len(utt.audio) == 0:
            continue
        sung_now = config.sung_share > 0 and rng.random() < config.sung_share  # no draw when off: old data kept
        if sung_now:
            utt, drawn = sung.sing(utt, rng)
            meta.update(drawn)
        speed = float(rng.uniform(*config.speed_range))
        speech = augment.to_16k(utt.audio.astype(np.float32) / 32768.0, utt.sample_rate, speed, rng)
        if rng.random() < P_EQ:
            speech = augment.microphone_eq(speech, rng)
        if rng.random() < P_REVERB:
            speech = augment.reverb(speech, rng)
        speech_db = rng.uniform(*augment.GAIN_DBFS_RANGE)
        speech = augment.set_level(speech, speech_db)
        gap = np.zeros(int(_gap_seconds(rng) * SAMPLE_RATE), np.float32)
        extra = {}
        accompanied = sung_now and rng.random() < P_SUNG_ACCOMPANIED
        if accompanied or (not sung_now and config.music_share > 0 and rng.random() < config.music_share):
            if synths.get("music") is None:
                synths["music"] = MusicSource(config.split)  # raises MusicUnavailable when nothing is installed
            under = dict(p_under=1.0, snr_db=SUNG_SNR_DB) if accompanied else {}
            gap, music, extra["music"] = add_music(gap, len(speech), speech_db, rng, synths["music"], **under)
            extra["music"]["start_ms"] = position * 1000.0 / SAMPLE_RATE
            segment = np.concatenate([gap, speech]) + music
        else:
            segment = np.concatenate([gap, speech])
        if rng.random() >= P_DIGITAL_SILENCE:
            noise_db = min(rng.uniform(*augment.NOISE_DBFS_RANGE), speech_db - augment.MIN_SNR_DB)
            segment = segment + augment.background(len(segment), rng, noise_db)
        if config.noise_share > 0 and rng.random() < config.noise_share:
            noise_db = min(rng.uniform(*ROOM_NOISE_DBFS), speech_db - augment.MIN_SNR_DB)
            noise, extra["room_noise"] = augment.room_noise(len(segment), rng, noise_db)
            segment = segment + noise
        if rng.random() < P_CLIP:
            segment = np.clip(segment * 10 ** (rng.uniform(*CLIP_DRIVE_DB) / 20), -1.0, 1.0)
        start_ms = (position + len(gap)) * 1000.0 / SAMPLE_RATE
        units += [(start_ms + s / speed, start_ms + e / speed, p) for s, e, p in utt.units]
        metas.append(dict(meta, **extra, speed=speed, level_dbfs=speech_db, start_ms=start_ms,
                          end_ms=start_ms + len(speech) * 1000.0 / SAMPLE_RATE))
        pieces.append(segment)
        position += len(segment)
    audio = np.concatenate(pieces)
    n_frames = len(audio) // HOP_LENGTH
    audio = np.clip(np.round(audio[: n_frames * HOP_LENGTH] * 32767), -32768, 32767).astype(np.int16)
    return dict(audio=audio, visemes=viseme_targets(units, n_frames),
                params=mouth_targets(units, n_frames, rules_named(config.targets)).astype(np.float16), meta=metas,
                # the timed phones themselves, so targets can be recomputed without synthesizing again
                unit_times=np.array([(s, e) for s, e, _ in units], np.float32).reshape(-1, 2),
                unit_phones=np.array([p for _, _, p in units], "<U3"))


def shard_path(out: Path, index: int) -> Path:
    return out / f"shard-{index:05d}.npz"


def save_shard(out: Path, index: int, shard: dict) -> None:
    path = shard_path(out, index)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: v for k, v in shard.items() if k != "meta"})
    os.replace(tmp, path)  # a crash never leaves a half-written shard behind
    path.with_suffix(".json").write_text(json.dumps(shard["meta"], indent=0))


def load_shard(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _shard_process(config: GenConfig, sentences: list[str], index: int, out: str) -> None:
    """Body of one shard's own process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    save_shard(Path(out), index, generate_shard(config, index, sentences))


class ShardsFailed(RuntimeError):
    """Some shards could not be made (their process died); the others are written."""


def generate(config: GenConfig, out: Path, hours: float, procs: int = 2, progress: bool = True,
             _target=_shard_process) -> list[Path]:
    """Write ceil(hours*3600 / shard_seconds) shards to `out` with `procs` processes; existing shards are kept.

    Raises ShardsFailed naming the shards whose process died (a synthesizer crash), after making all the others."""
    out.mkdir(parents=True, exist_ok=True)
    sentences = load_sentences(Path(config.text_root) if config.text_root else None, config.split, config.seed)
    n_shards = max(1, int(np.ceil(hours * 3600 / config.shard_seconds)))
    (out / "dataset.json").write_text(json.dumps(dict(dataclasses.asdict(config), n_shards=n_shards,
                                                      n_sentences=len(sentences)), indent=1))
    todo = [i for i in range(n_shards) if not shard_path(out, i).exists()]
    bar = tqdm(total=n_shards * config.shard_seconds, unit="s", unit_scale=True, desc=f"gen {config.split} audio",
               disable=not progress, initial=(n_shards - len(todo)) * config.shard_seconds)
    # One fresh process per shard: espeak-ng carries synthesis state (pitch phase) from one utterance to the
    # next inside a process, so a shard is reproducible only when it is the first thing its process makes. Plain
    # processes rather than a Pool: a worker that dies (libespeak-ng once hit a general protection fault here)
    # would leave Pool.imap waiting forever; a process's exit code names exactly the shard that failed.
    ctx = multiprocessing.get_context("spawn")  # espeak and onnxruntime do not survive fork well
    running: dict[int, multiprocessing.process.BaseProcess] = {}
    failed: dict[int, int | None] = {}
    try:
        while todo or running:
            while todo and len(running) < max(1, procs):
                index = todo.pop(0)
                running[index] = ctx.Process(target=_target, args=(config, sentences, index, str(out)),
                                             daemon=True)
                running[index].start()
            wait([p.sentinel for p in running.values()])
            for index, proc in list(running.items()):
                if proc.is_alive():
                    continue
                proc.join()
                del running[index]
                if proc.exitcode == 0 and shard_path(out, index).exists():
                    bar.update(config.shard_seconds)
                else:
                    failed[index] = proc.exitcode
    finally:
        for proc in running.values():  # interrupted: no orphan synthesizers
            proc.terminate()
        bar.close()
    if failed:
        how = ", ".join(f"shard {i} (exit code {code}{' = signal ' + str(-code) if code and code < 0 else ''})"
                        for i, code in sorted(failed.items()))
        raise ShardsFailed(f"{len(failed)} of {n_shards} shards could not be made: {how}; their processes died "
                           "(a synthesizer crash, or the error printed above). The other shards are written. Run "
                           "the same command again to retry them; if a shard fails again, its draw of text and "
                           "voices crashes the synthesizer: leave it out or use another --seed.")
    return [shard_path(out, i) for i in range(n_shards)]
